"""Nodes of the packaging pipeline.

The node builds the stage's one `PackagingConfig` (``params:packaging`` + the quality gate,
``params:gate``), logs it to MLflow, and hands it whole to `lmforge.packaging.release.release_model`
with what the library must not know by itself: the chain's stage list (``pipeline_registry.CHAIN``)
and the paths of the DVC outputs the model card and the registered version record, read from the
catalog by dataset name.
"""

from __future__ import annotations

from typing import Any

CARD_ARTIFACTS = {"documents": "clean_documents", "token_shards": "token_shards", "sft_train": "sft_train_conversations",
                  "tokenizer": "tokenizer", "pretrain_checkpoint": "pretrain_checkpoint",
                  "sft_checkpoint": "sft_checkpoint", "align_checkpoint": "align_checkpoint", "align_pairs": "align_pairs"}
"""Model card lineage: ``<name>.dvc_md5`` -> the catalog dataset whose ``dvc.lock`` hash it shows."""

LINEAGE_ARTIFACTS = {"data": "clean_documents", "tokenizer": "tokenizer", "checkpoint": "sft_checkpoint",
                     "align_checkpoint": "align_checkpoint", "align_pairs": "align_pairs"}
"""Registered model version tags: ``dvc.<name>`` -> the catalog dataset whose ``dvc.lock`` hash it holds."""


def package_chat_model(sft_checkpoint: str, align_checkpoint: str, tokenizer: str, data_processing_metrics: dict,
                       tokenizer_metrics: dict, pretrain_metrics: dict, sft_metrics: dict, align_metrics: dict,
                       evaluation_metrics: dict, template_audit_sft: dict[str, Any], quantized_models: str,
                       sft_validation_conversations: list[dict], params: dict[str, Any],
                       gate: dict[str, Any] | None, pretrain_params: dict[str, Any], sft_params: dict[str, Any],
                       align_params: dict[str, Any]) -> tuple[str, dict, dict, str, dict]:
    """A Hugging Face directory (weights, the checkpoint's tokenizer and chat template, model card) that passed
    the quality gate, verified by loading it, by the logits round trip and by the template audit (its serving
    prompt against sft's), its GGUF files (``quantized_models``, from evaluation) shipped beside it and checked on
    llama.cpp against it (``packaging.engine``; held-out chat prompts from ``sft_validation_conversations``), and
    registered in the MLflow Model Registry; also the serving path's template audit and the engine's.

    The model is the aligned one when align ran, else the SFT one (``lmforge.align.chat_model.resolve_chat_model``)."""
    from lmforge.align.chat_model import resolve_chat_model
    from lmforge.align.config import AlignConfig
    from lmforge.config import build_dataclass, config_to_dict
    from lmforge.packaging.config import build_packaging_config
    from lmforge.packaging.release import release_model
    from lmforge.pipeline_registry import CHAIN
    from lmforge.pipelines.catalog_paths import catalog_path
    from lmforge.tracking import git_state, log_config
    from lmforge.training.pretrain_config import PretrainConfig
    from lmforge.training.sft_config import SftConfig

    config = build_packaging_config(params, gate)
    log_config(config, "packaging")
    metrics = {"data_processing": data_processing_metrics, "tokenizer": tokenizer_metrics,
               "pretrain": pretrain_metrics, "sft": sft_metrics, "align": align_metrics, "evaluation": evaluation_metrics}
    model_dir, packaged = resolve_chat_model(align_checkpoint, sft_checkpoint)
    return release_model(model_dir, tokenizer, metrics, config, git_commit=git_state(".")["git.commit"],
                         stages=CHAIN,
                         card_artifacts={name: catalog_path(ds) for name, ds in CARD_ARTIFACTS.items()},
                         lineage_artifacts={name: catalog_path(ds) for name, ds in LINEAGE_ARTIFACTS.items()},
                         evaluation_file=catalog_path("evaluation_metrics"), template_audit=template_audit_sft,
                         packaged=packaged, gguf_dir=quantized_models, held_out=sft_validation_conversations,
                         # the training stages' own typed configs, resolved (defaults included) for the card
                         hyperparameters={
                             "pretrain": config_to_dict(build_dataclass(PretrainConfig, pretrain_params, path="pretrain")),
                             "sft": config_to_dict(build_dataclass(SftConfig, sft_params, path="sft")),
                             "align": config_to_dict(build_dataclass(AlignConfig, align_params, path="align"))})
