"""Nodes of the evaluation pipeline."""

from __future__ import annotations

from typing import Any


def evaluate_models(pretrain_checkpoint: str, sft_checkpoint: str, tokenizer: str, token_shards: str,
                    sft_validation_conversations: list[dict], params: dict[str, Any],
                    identity: dict[str, Any]) -> tuple[dict, dict]:
    from lmforge.evaluation.suite import EvaluationConfig
    from lmforge.evaluation.suite import evaluate_models as run

    return run({"base": pretrain_checkpoint, "sft": sft_checkpoint}, tokenizer, token_shards,
               sft_validation_conversations, EvaluationConfig.from_dict(params), identity=identity)
