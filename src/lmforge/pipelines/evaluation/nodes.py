"""Nodes of the evaluation pipeline: each builds the stage's typed config once and passes it down whole."""

from __future__ import annotations

from typing import Any

from lmforge.config import build_dataclass
from lmforge.evaluation.config import EvaluationConfig
from lmforge.locks import owned_tempdir


def _config(params: dict[str, Any]) -> EvaluationConfig:
    return build_dataclass(EvaluationConfig, params, path="evaluation")


def evaluate_models(pretrain_checkpoint: str, sft_checkpoint: str, align_checkpoint: str, tokenizer: str,
                    token_shards: str, pretrain_token_shards: str, clean_documents: dict[str, Any],
                    sft_validation_conversations: list[dict], template_audit_sft: dict[str, Any], params: dict[str, Any],
                    sft_params: dict[str, Any], shard_params: dict[str, Any]) -> tuple[dict, dict, dict]:
    """Base (``sft.base_model``, else the pretrain checkpoint), SFT and, when align ran, the aligned model
    (``lmforge.align.chat_model.resolve_chat_model``), each in its own tokenizer's ids; also the template audit
    of evaluation's prompts, checked against sft's."""
    from lmforge.align.chat_model import resolve_chat_model
    from lmforge.evaluation.suite import evaluate_models as run
    from lmforge.tracking import log_config
    from lmforge.training.sft_config import SftConfig

    config = _config(params)
    log_config(config, "evaluation")
    sft = build_dataclass(SftConfig, sft_params, path="sft")
    sources = _heldout_sources(tokenizer, token_shards, pretrain_token_shards, clean_documents, shard_params)
    models = {"base": sft.base_model or pretrain_checkpoint, "sft": sft_checkpoint}
    chat_model, which = resolve_chat_model(align_checkpoint, sft_checkpoint)
    if which == "aligned":
        models["aligned"] = chat_model
    return run(models, sources,
               sft_validation_conversations, config, {"name": sft.identity.name, "developer": sft.identity.developer},
               chat_template=sft.chat_template, trust_remote_code=sft.trust_remote_code,
               template_audit=template_audit_sft)


def quantize_chat_model(sft_checkpoint: str, align_checkpoint: str, tokenizer: str, token_shards: str,
                        pretrain_token_shards: str, clean_documents: dict[str, Any], params: dict[str, Any],
                        sft_params: dict[str, Any], shard_params: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """The chat model (aligned, else SFT) as GGUF files (a staging folder for ``quantized_models``) and each
    format's held-out bits per byte against full precision (``lmforge.evaluation.quantization``)."""

    from lmforge.align.chat_model import resolve_chat_model
    from lmforge.evaluation.quantization import quantize_and_score
    from lmforge.training.sft_config import SftConfig

    sft = build_dataclass(SftConfig, sft_params, path="sft")
    model_dir, which = resolve_chat_model(align_checkpoint, sft_checkpoint)
    out_dir = str(owned_tempdir("lmforge-eval-gguf-"))
    metrics = quantize_and_score(model_dir, _heldout_sources(tokenizer, token_shards, pretrain_token_shards,
                                                             clean_documents, shard_params),
                                 _config(params), out_dir, which=which, trust_remote_code=sft.trust_remote_code)
    return out_dir, metrics


def _heldout_sources(tokenizer: str, token_shards: str, pretrain_token_shards: str, clean_documents: dict[str, Any],
                     shard_params: dict[str, Any]) -> Any:
    """Where every held-out score of the stage comes from: the tokenizer stage's shards and validation split."""
    from lmforge.data.documents import iter_records
    from lmforge.data.splits import assign_split, iter_split_texts
    from lmforge.evaluation.heldout import HeldoutSources
    from lmforge.tokenizer.config import TokenShardArgs

    shards = build_dataclass(TokenShardArgs, shard_params, path="tokenizer.shards")
    return HeldoutSources(
        stage_tokenizer=tokenizer, token_shards=token_shards, other_shards=[pretrain_token_shards],
        seq_len=shards.seq_len,
        validation_texts=lambda: iter_split_texts(iter_records(clean_documents), "validation",
                                                  shards.validation_fraction, shards.split_seed),
        validation_documents=lambda: (r for r in iter_records(clean_documents)  # the tokenizer stage's split
                                      if assign_split(r["id"], shards.validation_fraction, shards.split_seed)
                                      == "validation"))


def gather_operations(pretrain_metrics: dict[str, Any], sft_metrics: dict[str, Any], align_metrics: dict[str, Any],
                      params: dict[str, Any]) -> dict[str, Any]:
    """Operations metrics of the earlier stages' MLflow runs (this stage's own run is left out)."""
    from lmforge.evaluation.operations import gather_operations as gather
    from lmforge.pipeline_registry import stages_before

    settings = _config(params).operations
    if not settings.enabled:
        return {"metrics": {}, "not_measured": {"ops": "evaluation.operations.enabled is false"}}
    return gather({"pretrain": pretrain_metrics, "sft": sft_metrics, "align": align_metrics}, experiment=settings.experiment,
                  stages=stages_before("evaluation"))


def build_report(model_metrics: dict[str, float], quantization_metrics: dict[str, float], generations: dict[str, Any],
                 operations: dict[str, Any], pretrain_loss_curve: list[dict], sft_loss_curve: list[dict],
                 align_loss_curve: list[dict], align_metrics: dict[str, Any],
                 params: dict[str, Any]) -> tuple[dict, list[dict], str]:
    """evaluation.json (model + quantization + ops metrics + verdicts), the seed-metric table and the HTML report
    (with samples, the quantized packages and, when align ran, the align stage's own metrics and loss curve)."""
    from lmforge.evaluation.report import build_evaluation_report

    report = _config(params).report
    curves = {"pretrain": pretrain_loss_curve, "sft": sft_loss_curve, "align": align_loss_curve}
    return build_evaluation_report({**model_metrics, **quantization_metrics}, operations, curves, generations=generations,
                                   serving_load=report.serving_load, serving_feedback=report.serving_feedback,
                                   align_metrics=align_metrics)
