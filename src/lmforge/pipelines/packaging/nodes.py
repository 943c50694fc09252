"""Nodes of the packaging pipeline."""

from __future__ import annotations

from typing import Any


def package_chat_model(sft_checkpoint: str, tokenizer: str, data_processing_metrics: dict, tokenizer_metrics: dict,
                       pretrain_metrics: dict, sft_metrics: dict, evaluation_metrics: dict,
                       params: dict[str, Any]) -> tuple[str, dict]:
    """A Hugging Face directory (weights, tokenizer, chat template, model card), verified by loading it."""
    from lmforge.packaging.release import build_release
    from lmforge.tracking import git_state

    metrics = {"data_processing": data_processing_metrics, "tokenizer": tokenizer_metrics,
               "pretrain": pretrain_metrics, "sft": sft_metrics, "evaluation": evaluation_metrics}
    return build_release(sft_checkpoint, tokenizer, metrics, params, git_commit=git_state(".")["git.commit"])
