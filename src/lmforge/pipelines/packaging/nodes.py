"""Nodes of the packaging pipeline."""

from __future__ import annotations

from typing import Any


def package_chat_model(sft_checkpoint: str, tokenizer: str, data_processing_metrics: dict, tokenizer_metrics: dict,
                       pretrain_metrics: dict, sft_metrics: dict, evaluation_metrics: dict,
                       params: dict[str, Any], gate: dict[str, Any] | None, pretrain_params: dict[str, Any],
                       sft_params: dict[str, Any]) -> tuple[str, dict]:
    """A Hugging Face directory (weights, tokenizer, chat template, model card) that passed the quality gate,
    verified by loading it and by the logits round trip, and registered in the MLflow Model Registry."""
    from lmforge.packaging.release import release_model
    from lmforge.tracking import git_state

    metrics = {"data_processing": data_processing_metrics, "tokenizer": tokenizer_metrics,
               "pretrain": pretrain_metrics, "sft": sft_metrics, "evaluation": evaluation_metrics}
    return release_model(sft_checkpoint, tokenizer, metrics, params, gate, git_commit=git_state(".")["git.commit"],
                         hyperparameters={"pretrain": pretrain_params, "sft": sft_params})
