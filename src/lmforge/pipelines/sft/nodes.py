"""Nodes of the sft pipeline.

``build_sft_config`` turns ``params:sft`` into the typed ``SftConfig`` once (typos rejected by their
dotted path); the other nodes take that object (the ``sft_config`` memory dataset), not the dict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.training.sft_config import SftConfig


def build_sft_config(params: dict[str, Any]) -> SftConfig:
    """``params:sft`` as an ``SftConfig``: every default filled in, unknown keys an error."""
    from lmforge.config import build_dataclass
    from lmforge.training.sft_config import SftConfig

    return build_dataclass(SftConfig, params, path="sft")


def build_conversations(clean_documents: dict[str, Any], source_cache: str, config: SftConfig) -> tuple[list, list, list, dict]:
    """The training mix (``sft.sources``), the held-out conversations of every category, quarantined
    records and stats.

    The default mix: real translation, dialogue and FAQ conversations from the source cache
    (``data_processing.source_cache``, where ``make corpus`` put them), instruction pairs from the corpus (train split, by document) and the
    identity conversations; the realised mix is in ``stats["mix"]``.
    """
    from lmforge.data.documents import Document, iter_records
    from lmforge.data.identity import build_identity_conversations
    from lmforge.data.instructions import build_instruction_pairs
    from lmforge.data.sft_mix import build_mix
    from lmforge.data.sft_sources import build_chat_sources

    names = [spec.name for spec in config.sources]
    chat_train, chat_validation, quarantine, chat_stats = build_chat_sources(names, config.chat, source_cache)
    docs = (Document.from_dict(r) for r in iter_records(clean_documents))
    splits, stats = build_instruction_pairs(docs, config.data)
    identity = build_identity_conversations(config.identity)
    train, mix_quarantine, mix = build_mix(config.sources, {"corpus_instructions": splits["train"],
                                                            "identity": identity, **chat_train},
                                           seed=config.mix_seed, default_weights={"identity": config.identity.repeat})
    validation = [{**c, "source": "corpus_instructions"} for c in splits["validation"]] + chat_validation
    return train, validation, quarantine + mix_quarantine, {
        **stats, "identity_conversations": len(identity), "train_conversations": len(train),
        "validation_conversations": len(validation), "chat_sources": chat_stats, "mix": mix}


def tokenize_conversations(conversations: list[dict], pretrain_checkpoint: str, tokenizer: str, stats: dict,
                           config: SftConfig) -> tuple[list[dict], dict, dict]:
    """Render with the model's chat template; labels only on assistant turns; long ones truncated.

    Also returns the template audit of the training side (``lmforge.tokenizer.template_audit``).
    """
    from lmforge.tokenizer.template_audit import training_audit
    from lmforge.training.sft import load_sft_tokenizer, tokenize_sft_conversations

    chat = load_sft_tokenizer(pretrain_checkpoint, tokenizer, config)
    examples, example_stats = tokenize_sft_conversations(conversations, chat, config)
    return examples, {**stats, **example_stats}, training_audit(chat, "sft")


def finetune_model(examples: list[dict], validation_conversations: list[dict], pretrain_checkpoint: str,
                   tokenizer: str, deepspeed_templates: dict[str, Any], data_stats: dict,
                   config: SftConfig) -> tuple[str, dict, list[dict]]:
    """Fine-tune ``sft.base_model`` (default: the pretrain checkpoint); validation loss on held-out conversations.

    With ``sft.base_model`` set, ``pretrain_checkpoint`` is only a path that need not exist (catalog
    ``missing_ok``; ``hooks.OPTIONAL_INPUTS``): the stage runs before, or without, pretraining.
    """
    from lmforge.training.jobs import run_sft
    from lmforge.training.sft import load_sft_tokenizer, tokenize_held_out

    chat = load_sft_tokenizer(pretrain_checkpoint, tokenizer, config)
    validation = tokenize_held_out(validation_conversations, chat, config)
    checkpoint, metrics, curve = run_sft(examples, pretrain_checkpoint, tokenizer, deepspeed_templates, config,
                                         validation_examples=validation, chat=chat)
    return checkpoint, {**metrics, "data": data_stats}, curve
