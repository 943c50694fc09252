"""Nodes of the sft pipeline."""

from __future__ import annotations

from typing import Any


def build_conversations(clean_documents: dict[str, Any], params: dict[str, Any]) -> tuple[list, list, dict]:
    """Instruction pairs from the corpus (split by document) plus the identity conversations (train)."""
    from lmforge.data.documents import Document
    from lmforge.data.identity import IdentityConfig, build_identity_conversations
    from lmforge.data.instructions import InstructionConfig, build_instruction_pairs
    from lmforge.data.process import iter_records

    docs = (Document.from_dict(r) for r in iter_records(clean_documents))
    splits, stats = build_instruction_pairs(docs, InstructionConfig(**params.get("data", {})))
    identity_cfg = IdentityConfig(**params.get("identity", {}))
    identity = build_identity_conversations(identity_cfg)
    train = splits["train"] + identity * identity_cfg.repeat
    return train, splits["validation"], {**stats, "identity_conversations": len(identity),
                                         "train_conversations": len(train)}


def tokenize_conversations(conversations: list[dict], tokenizer: str, stats: dict,
                           params: dict[str, Any]) -> tuple[list[dict], dict]:
    """Render with the tokenizer's chat template; labels only on assistant turns."""
    from lmforge.tokenizer.artifact import load_tokenizer
    from lmforge.training.sft_data import build_sft_examples

    tok, template = load_tokenizer(tokenizer)
    examples, example_stats = build_sft_examples(conversations, tok, template, max_length=params.get("max_length", 512),
                                                 train_on_prompt=params.get("train_on_prompt", False))
    return examples, {**stats, **example_stats}


def finetune_model(examples: list[dict], pretrain_checkpoint: str, tokenizer: str,
                   deepspeed_templates: dict[str, Any], data_stats: dict,
                   params: dict[str, Any]) -> tuple[str, dict, list[dict]]:
    from lmforge.training.jobs import run_sft

    checkpoint, metrics, curve = run_sft(examples, pretrain_checkpoint, tokenizer, deepspeed_templates, params)
    return checkpoint, {**metrics, "data": data_stats}, curve
