"""Nodes of the evaluation pipeline: each builds the stage's typed config once and passes it down whole."""

from __future__ import annotations

from typing import Any

from lmforge.config import build_dataclass
from lmforge.evaluation.config import EvaluationConfig


def _config(params: dict[str, Any]) -> EvaluationConfig:
    return build_dataclass(EvaluationConfig, params, path="evaluation")


def evaluate_models(pretrain_checkpoint: str, sft_checkpoint: str, tokenizer: str, token_shards: str,
                    sft_validation_conversations: list[dict], params: dict[str, Any],
                    identity: dict[str, Any]) -> tuple[dict, dict]:
    from lmforge.evaluation.suite import evaluate_models as run
    from lmforge.tracking import log_config

    config = _config(params)
    log_config(config, "evaluation")
    return run({"base": pretrain_checkpoint, "sft": sft_checkpoint}, tokenizer, token_shards,
               sft_validation_conversations, config, identity=identity)


def gather_operations(pretrain_metrics: dict[str, Any], sft_metrics: dict[str, Any],
                      params: dict[str, Any]) -> dict[str, Any]:
    """Operations metrics of the earlier stages' MLflow runs (this stage's own run is left out)."""
    from lmforge.evaluation.operations import gather_operations as gather
    from lmforge.pipeline_registry import stages_before

    settings = _config(params).operations
    if not settings.enabled:
        return {"metrics": {}, "not_measured": {"ops": "evaluation.operations.enabled is false"}}
    return gather({"pretrain": pretrain_metrics, "sft": sft_metrics}, experiment=settings.experiment,
                  stages=stages_before("evaluation"))


def build_report(model_metrics: dict[str, float], generations: dict[str, Any], operations: dict[str, Any],
                 pretrain_loss_curve: list[dict], sft_loss_curve: list[dict],
                 params: dict[str, Any]) -> tuple[dict, list[dict], str]:
    """evaluation.json (model + ops metrics + verdicts), the seed-metric table and the HTML report (with samples)."""
    from lmforge.evaluation.report import build_evaluation_report

    report = _config(params).report
    return build_evaluation_report(model_metrics, operations, {"pretrain": pretrain_loss_curve, "sft": sft_loss_curve},
                                   generations=generations, serving_load=report.serving_load,
                                   serving_feedback=report.serving_feedback)
