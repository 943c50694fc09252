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
    from lmforge.tokenizer.chat_template import tokenize_conversation

    tok, template = load_tokenizer(tokenizer)
    max_length = params.get("max_length", 512)
    examples, too_long, trained = [], 0, 0
    for conv in conversations:
        ids, labels = tokenize_conversation(list(conv["messages"]), tok, template,
                                            train_on_prompt=params.get("train_on_prompt", False))
        if len(ids) > max_length:
            too_long += 1
            continue
        trained += sum(1 for x in labels if x != -100)
        examples.append({"id": conv["id"], "input_ids": ids, "labels": labels})
    total = sum(len(e["input_ids"]) for e in examples)
    return examples, {**stats, "examples": len(examples), "dropped_too_long": too_long,
                      "trained_token_fraction": trained / max(total, 1)}


def finetune_model(examples: list[dict], pretrain_checkpoint: str, tokenizer: str,
                   deepspeed_templates: dict[str, Any], data_stats: dict,
                   params: dict[str, Any]) -> tuple[str, dict, list[dict]]:
    from lmforge.training.jobs import run_sft

    checkpoint, metrics, curve = run_sft(examples, pretrain_checkpoint, tokenizer, deepspeed_templates, params)
    return checkpoint, {**metrics, "data": data_stats}, curve
