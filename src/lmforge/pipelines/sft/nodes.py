"""Nodes of the sft pipeline."""

from __future__ import annotations

from typing import Any


def build_conversations(clean_documents: dict[str, Any], params: dict[str, Any]) -> tuple[list, list, list, dict]:
    """The training mix (``sft.sources``), the held-out corpus pairs, quarantined records and stats.

    The default mix: instruction pairs from the corpus (train split, by document) plus the identity
    conversations; the realised mix is in ``stats["mix"]``.
    """
    from lmforge.config import build_dataclass
    from lmforge.data.documents import Document
    from lmforge.data.identity import IdentityConfig, build_identity_conversations
    from lmforge.data.instructions import InstructionConfig, build_instruction_pairs
    from lmforge.data.process import iter_records
    from lmforge.data.sft_mix import build_mix, parse_sources

    data_cfg = build_dataclass(InstructionConfig, params.get("data") or {}, path="sft.data")
    identity_cfg = build_dataclass(IdentityConfig, params.get("identity") or {}, path="sft.identity")
    specs = parse_sources(params.get("sources"))
    docs = (Document.from_dict(r) for r in iter_records(clean_documents))
    splits, stats = build_instruction_pairs(docs, data_cfg)
    identity = build_identity_conversations(identity_cfg)
    train, quarantine, mix = build_mix(specs, {"corpus_instructions": splits["train"], "identity": identity},
                                       seed=params.get("mix_seed", 0), default_weights={"identity": identity_cfg.repeat})
    return train, splits["validation"], quarantine, {**stats, "identity_conversations": len(identity),
                                                     "train_conversations": len(train), "mix": mix}


def tokenize_conversations(conversations: list[dict], tokenizer: str, stats: dict,
                           params: dict[str, Any]) -> tuple[list[dict], dict]:
    """Render with the tokenizer's chat template; labels only on assistant turns; long ones truncated."""
    from lmforge.tokenizer.artifact import load_tokenizer
    from lmforge.training.sft import resolve_sft_tokenizer
    from lmforge.training.sft_data import build_sft_examples

    tok, template = load_tokenizer(resolve_sft_tokenizer(tokenizer, params))  # sft.base_model may bring its own
    examples, example_stats = build_sft_examples(conversations, tok, template, max_length=params.get("max_length", 512),
                                                 train_on_prompt=params.get("train_on_prompt", False))
    return examples, {**stats, **example_stats}


def finetune_model(examples: list[dict], validation_conversations: list[dict], pretrain_checkpoint: str,
                   tokenizer: str, deepspeed_templates: dict[str, Any], data_stats: dict,
                   params: dict[str, Any]) -> tuple[str, dict, list[dict]]:
    """Fine-tune ``sft.base_model`` (default: the pretrain checkpoint); validation loss on held-out conversations.

    With ``sft.base_model`` set, ``pretrain_checkpoint`` is only a path that need not exist (catalog
    ``missing_ok``; ``hooks.OPTIONAL_INPUTS``): the stage runs before, or without, pretraining.
    """
    from lmforge.training.jobs import run_sft
    from lmforge.training.sft import tokenize_held_out

    validation = tokenize_held_out(validation_conversations, tokenizer, params)
    checkpoint, metrics, curve = run_sft(examples, pretrain_checkpoint, tokenizer, deepspeed_templates, params,
                                         validation_examples=validation)
    return checkpoint, {**metrics, "data": data_stats}, curve
