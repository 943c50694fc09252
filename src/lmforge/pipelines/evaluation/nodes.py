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


def gather_operations(pretrain_metrics: dict[str, Any], sft_metrics: dict[str, Any],
                      params: dict[str, Any]) -> dict[str, Any]:
    """Operations metrics of the earlier stages' MLflow runs (this stage's own run is left out)."""
    from lmforge.evaluation.operations import gather_operations as gather
    from lmforge.pipeline_registry import stages_before

    settings = params.get("operations") or {}
    if not settings.get("enabled", True):
        return {"metrics": {}, "not_measured": {"ops": "evaluation.operations.enabled is false"}}
    return gather({"pretrain": pretrain_metrics, "sft": sft_metrics}, experiment=settings.get("experiment", "lmforge"),
                  stages=stages_before("evaluation"))


def build_report(model_metrics: dict[str, float], operations: dict[str, Any], pretrain_loss_curve: list[dict],
                 sft_loss_curve: list[dict], params: dict[str, Any]) -> tuple[dict, list[dict], str]:
    """evaluation.json (model + ops metrics), the seed-metric table and the HTML report."""
    from lmforge.evaluation.report import build_evaluation_report

    report = params.get("report") or {}
    return build_evaluation_report(model_metrics, operations, {"pretrain": pretrain_loss_curve, "sft": sft_loss_curve},
                                   serving_load=report.get("serving_load"),
                                   serving_feedback=report.get("serving_feedback"))
