"""Nodes of the pretrain pipeline: launch the multi-process DeepSpeed job and return its results."""

from __future__ import annotations

from typing import Any


def pretrain_model(token_shards: str, tokenizer: str, deepspeed_templates: dict[str, Any],
                   params: dict[str, Any]) -> tuple[str, dict, list[dict]]:
    """Build ``PretrainConfig`` from ``params:pretrain`` (typos rejected) and run the pretraining job."""
    from lmforge.config import build_dataclass
    from lmforge.training.jobs import run_pretraining
    from lmforge.training.pretrain_config import PretrainConfig

    config = build_dataclass(PretrainConfig, params, path="pretrain")
    return run_pretraining(token_shards, tokenizer, deepspeed_templates, config)
