"""Nodes of the pretrain pipeline: launch the multi-process DeepSpeed job and return its results."""

from __future__ import annotations

from typing import Any


def pretrain_model(token_shards: str, tokenizer: str, deepspeed_templates: dict[str, Any],
                   params: dict[str, Any]) -> tuple[str, dict, list[dict]]:
    from lmforge.training.jobs import run_pretraining

    return run_pretraining(token_shards, tokenizer, deepspeed_templates, params)
