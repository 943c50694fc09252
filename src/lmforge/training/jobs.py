"""Turn a stage's parameters into a training job, run it, and return what the stage reports.

``run_pretraining`` and ``run_sft`` are what the Kedro nodes call: they resolve the typed configs
and the DeepSpeed JSON, log that JSON to the active MLflow run, launch the multi-process job and
return ``(checkpoint_dir, metrics, loss_curve)``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge import tracking
from lmforge.training.checkpoints import fingerprint_job, global_batch, rebatch, saved_global_batch
from lmforge.training.config import (
    JobSpec,
    parse_deepspeed_args,
    parse_launch_args,
    parse_train_args,
)
from lmforge.training.deepspeed_config import build_deepspeed_config
from lmforge.training.launch import launch_job, resolve_nproc

logger = logging.getLogger(__name__)


def resolve_templates(templates: Mapping[str, Any]) -> dict[str, dict]:
    """DeepSpeed templates from a Kedro PartitionedDataset (values may be load callables)."""
    return {name: (value() if callable(value) else value) for name, value in templates.items()}


def _tokenizer_info(tokenizer_dir: str) -> dict[str, Any]:
    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

    tok = SentencePieceTokenizer.from_file(Path(tokenizer_dir) / "tokenizer.model")
    return {"vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
            "sha256": tok.sha256}


def _run(kind: str, params: Mapping[str, Any], templates: Mapping[str, Any], *, model: dict, init_from: str | None,
         data: dict, tokenizer_sha256: str | None,
         prepare: Callable[[Path], None] | None = None) -> tuple[str, dict[str, Any], list[dict]]:
    allowed = {"model", "train", "deepspeed", "launch", "run_dir", "data", "identity", "max_length",
               "train_on_prompt", "sources", "mix_seed"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in parameters_{kind}.yml")
    train = parse_train_args(params.get("train"), f"{kind}.train")
    ds_args = parse_deepspeed_args(params.get("deepspeed"), f"{kind}.deepspeed")
    launch = parse_launch_args(params.get("launch"), f"{kind}.launch")
    ds_config = build_deepspeed_config(resolve_templates(templates), train, ds_args)
    if train.nan_policy == "skip" and ds_config["zero_optimization"].get("stage", 0) == 3:
        raise ValueError(f"{kind}.train.nan_policy 'skip' needs ZeRO stage 0-2 (ZeRO-3 partitions the "
                         "parameters the skipped step backpropagates zeros through); use 'stop'")
    run_dir = Path(params.get("run_dir") or f"data/06_models/{kind}_run").resolve()
    output_dir = run_dir / "export"
    shutil.rmtree(output_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if prepare:
        data = {**data, **prepare(run_dir)}
    spec = JobSpec(kind=kind, model=model, init_from=init_from, data=data, train=train, deepspeed=ds_config,
                   output_dir=str(output_dir), run_dir=str(run_dir), metric_prefix=kind,
                   tokenizer_sha256=tokenizer_sha256)
    spec.fingerprint = fingerprint_job(spec)
    keep_checkpoint_batch(spec, launch, templates, ds_args)
    tracking.log_dict(spec.deepspeed, f"deepspeed/{kind}.json")
    result = launch_job(spec, launch, env=tracking.child_env())
    curve = result.pop("history")
    metrics = {k: v for k, v in result.items() if k != "checkpoint"}
    metrics["loss_decreased"] = result["final_loss"] < result["initial_loss"]
    return result["checkpoint"], metrics, curve


def keep_checkpoint_batch(spec: JobSpec, launch: Any, templates: Mapping[str, Any], ds_args: Any) -> None:
    """Resuming with another number of processes: keep the checkpoint's global batch (edits ``spec``).

    The fingerprint leaves the batch split out, so a checkpoint of this job saved by N processes is
    found here; gradient accumulation is recomputed so micro batch x accumulation x M processes equals
    its global batch, or a ``ValueError`` says what to set.
    """
    found = saved_global_batch(Path(spec.run_dir, "checkpoints"), spec.fingerprint)
    world = launch.nnodes * resolve_nproc(launch)
    if not found or found[0] == global_batch(spec.train, world):
        return
    target, saved_world = found
    where = f"{spec.kind}.train"
    train = rebatch(spec.train, target, world, where=where)
    logger.warning("%s: resuming a checkpoint of %d process(es) with %d: %s.gradient_accumulation_steps %d -> %d "
                   "keeps its global batch of %d sequences (delete %s/checkpoints to train afresh instead)",
                   spec.kind, saved_world, world, where, spec.train.gradient_accumulation_steps,
                   train.gradient_accumulation_steps, target, spec.run_dir)
    spec.train = train
    spec.deepspeed = build_deepspeed_config(resolve_templates(templates), train, ds_args)


def run_pretraining(token_shards: str, tokenizer_dir: str, templates: Mapping[str, Any],
                    params: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[dict]]:
    """Pretrain the configured preset on the token shards; returns (checkpoint, metrics, loss curve)."""
    info = _tokenizer_info(tokenizer_dir)
    model_cfg = dict(params.get("model") or {"preset": "tiny"})
    model = {"preset": model_cfg.pop("preset"), "overrides": model_cfg.pop("overrides", {}) or {},
             "attn_implementation": model_cfg.pop("attn_implementation", "sdpa"),
             "vocab_size": info["vocab_size"], "bos_id": info["bos_id"], "eos_id": info["eos_id"],
             "pad_id": info["pad_id"]}
    if model_cfg:
        raise ValueError(f"unknown key(s) {sorted(model_cfg)} in pretrain.model (preset, overrides, "
                         "attn_implementation)")
    checkpoint, metrics, curve = _run("pretrain", params, templates, model=model, init_from=None,
                                      data={"token_shards": token_shards}, tokenizer_sha256=info["sha256"])
    return checkpoint, {**metrics, "preset": model["preset"]}, curve


def run_sft(examples: Sequence[Mapping[str, Any]], base_model_dir: str, tokenizer_dir: str,
            templates: Mapping[str, Any], params: Mapping[str, Any],
            validation_examples: Sequence[Mapping[str, Any]] | None = None) -> tuple[str, dict[str, Any], list[dict]]:
    """Fine-tune the base model on tokenized examples; returns (checkpoint, metrics, loss curve).

    ``base_model_dir`` is the pretrain checkpoint, used unless ``sft.base_model`` names another HF
    directory; packing, full/LoRA fine-tuning and the tokenizer rule: ``lmforge.training.sft``.
    ``validation_examples`` (tokenized held-out conversations) give the validation loss.
    """
    from dataclasses import asdict

    from lmforge.training.sft import (
        MAX_VALIDATION_EXAMPLES,
        SFT_KEYS,
        check_vocab_fits,
        parse_sft_args,
        resolve_sft_sources,
    )
    from lmforge.training.sft import write_examples as write_jsonl

    if not examples:
        raise ValueError("no SFT examples to train on: check sft.data and sft.max_length")
    sft = parse_sft_args(params)
    base_model_dir, tokenizer_dir = resolve_sft_sources(base_model_dir, tokenizer_dir, sft)
    info = _tokenizer_info(tokenizer_dir)
    check_vocab_fits(base_model_dir, info["vocab_size"])

    def write_examples(run_dir: Path) -> dict[str, str]:
        out = {"examples": write_jsonl(run_dir / "train_examples.jsonl", examples)}
        if validation_examples:
            out["validation_examples"] = write_jsonl(run_dir / "validation_examples.jsonl",
                                                     validation_examples[:MAX_VALIDATION_EXAMPLES])
        return out

    model_cfg = dict(params.get("model") or {})
    model = {"attn_implementation": model_cfg.pop("attn_implementation", "sdpa"), "finetuning": sft.finetuning}
    if sft.finetuning == "lora":
        model["lora"] = asdict(sft.lora)
    if model_cfg:
        raise ValueError(f"unknown key(s) {sorted(model_cfg)} in sft.model (attn_implementation)")
    data = {"pad_id": info["pad_id"], "packing": sft.packing, "packing_length": int(params.get("max_length", 512))}
    return _run("sft", {k: v for k, v in params.items() if k not in SFT_KEYS}, templates, model=model,
                init_from=base_model_dir, data=data, tokenizer_sha256=info["sha256"], prepare=write_examples)
