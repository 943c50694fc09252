"""Turn a stage's parameters into a training job, run it, and return what the stage reports.

``run_pretraining`` (a preset from scratch, or ``run_continued_pretraining`` of a local Hugging Face
model) and ``run_sft`` are what the Kedro nodes call, with the stage's typed config
(``training/pretrain_config.py``, ``training/sft_config.py``): they resolve the DeepSpeed JSON, log the fully resolved stage config
(flat params) and that JSON (an artifact) to the active MLflow run, launch the multi-process job and
return ``(checkpoint_dir, metrics, loss_curve)``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge import tracking
from lmforge.align.loss_args import LossArgs
from lmforge.training.checkpoints import fingerprint_job, global_batch, rebatch, saved_global_batch
from lmforge.training.config import DeepSpeedArgs, JobData, JobModel, JobSpec, LaunchArgs
from lmforge.training.deepspeed_config import build_deepspeed_config
from lmforge.training.launch import check_run_dir_free, launch_job, resolve_nproc

if TYPE_CHECKING:  # annotations only: running pretraining never imports the SFT data modules
    from lmforge.align.config import AlignConfig
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.training.pretrain_config import PretrainConfig
    from lmforge.training.sft_config import SftConfig

logger = logging.getLogger(__name__)


def resolve_templates(templates: Mapping[str, Any]) -> dict[str, dict]:
    """DeepSpeed templates from a Kedro PartitionedDataset (values may be load callables)."""
    return {name: (value() if callable(value) else value) for name, value in templates.items()}


def _tokenizer_info(tokenizer_dir: str) -> dict[str, Any]:
    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

    tok = SentencePieceTokenizer.from_file(Path(tokenizer_dir) / "tokenizer.model")
    return {"vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
            "sha256": tok.sha256}


def _run(kind: str, config: PretrainConfig | SftConfig | AlignConfig, templates: Mapping[str, Any], *, model: JobModel,
         init_from: str | None, data: JobData, tokenizer_sha256: str | None,
         write_data: Callable[[Path], dict[str, str]] | None = None, preference: LossArgs | None = None,
         log_step_offset: int = 0) -> tuple[str, dict[str, Any], list[dict]]:
    """Resolve the DeepSpeed config, write the job into ``config.run_dir`` and launch it.

    A run directory whose job finished with the same fingerprint and whose export is still there (an align
    round before the last, when the stage is rerun after a kill) is reused: its result is returned as is.
    """
    train = config.train
    ds_config = build_deepspeed_config(resolve_templates(templates), train, config.deepspeed)
    if train.nan_policy == "skip" and ds_config["zero_optimization"].get("stage", 0) == 3:
        raise ValueError(f"{kind}.train.nan_policy 'skip' needs ZeRO stage 0-2 (ZeRO-3 partitions the "
                         "parameters the skipped step backpropagates zeros through); use 'stop'")
    run_dir = Path(config.run_dir).resolve()
    output_dir = run_dir / "export"
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_dir_free(run_dir, kind)  # an orphaned trainer still writing there: stop before writing data into it
    if write_data:
        data = replace(data, **write_data(run_dir))
    spec = JobSpec(kind=kind, model=model, init_from=init_from, data=data, train=train, deepspeed=ds_config,
                   output_dir=str(output_dir), run_dir=str(run_dir), metric_prefix=kind,
                   tokenizer_sha256=tokenizer_sha256, preference=preference, log_step_offset=log_step_offset)
    spec.fingerprint = fingerprint_job(spec)
    tracking.log_config(config, kind)
    result = completed_result(spec)
    if result is not None:
        logger.info("%s: %s already holds this job's finished output (same fingerprint): reused, not retrained",
                    kind, output_dir)
    else:
        shutil.rmtree(output_dir, ignore_errors=True)
        keep_checkpoint_batch(spec, config.launch, templates, config.deepspeed)
        tracking.log_dict(spec.deepspeed, f"deepspeed/{kind}.json")
        result = launch_job(spec, config.launch, env=tracking.child_env())
    curve = result.pop("history")
    metrics = {k: v for k, v in result.items() if k != "checkpoint"}
    metrics["loss_decreased"] = result["final_loss"] < result["initial_loss"]
    return result["checkpoint"], metrics, curve


def completed_result(spec: JobSpec) -> dict[str, Any] | None:
    """The result of a finished job of ``spec``'s fingerprint in its run directory, None when there is none."""
    import json

    from lmforge.training.launch import COMPLETE_MARKER

    run_dir = Path(spec.run_dir)
    job, result = run_dir / "job.json", run_dir / "result.json"
    if not ((run_dir / COMPLETE_MARKER).is_file() and result.is_file() and job.is_file()
            and Path(spec.output_dir, "config.json").is_file()):
        return None
    if json.loads(job.read_text()).get("fingerprint") != spec.fingerprint:
        return None
    return json.loads(result.read_text())


def keep_checkpoint_batch(spec: JobSpec, launch: LaunchArgs, templates: Mapping[str, Any],
                          ds_args: DeepSpeedArgs) -> None:
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


def run_pretraining(token_shards: str, tokenizer_dir: str | None, templates: Mapping[str, Any],
                    config: PretrainConfig) -> tuple[str, dict[str, Any], list[dict]]:
    """Pretrain the configured preset on the token shards; returns (checkpoint, metrics, loss curve).

    With ``pretrain.base_model`` set it continues pretraining that model instead: ``token_shards`` are
    the ones made with its own tokenizer and ``tokenizer_dir`` is not used (``run_continued_pretraining``).
    """
    if config.base_model:
        return run_continued_pretraining(token_shards, templates, config)
    info = _tokenizer_info(tokenizer_dir)
    model = JobModel(attn_implementation=config.model.attn_implementation, preset=config.model.preset,
                     overrides=dict(config.model.overrides), vocab_size=info["vocab_size"], bos_id=info["bos_id"],
                     eos_id=info["eos_id"], pad_id=info["pad_id"])
    checkpoint, metrics, curve = _run("pretrain", config, templates, model=model, init_from=None,
                                      data=JobData(token_shards=token_shards), tokenizer_sha256=info["sha256"])
    return checkpoint, {**metrics, "preset": config.model.preset}, curve


def run_continued_pretraining(token_shards: str, templates: Mapping[str, Any],
                              config: PretrainConfig) -> tuple[str, dict[str, Any], list[dict]]:
    """Train ``pretrain.base_model`` further on ``token_shards`` (made with its own tokenizer).

    Checked before anything runs and finished in this process after the job (the checkpoint gets the
    base model's tokenizer, template and generation config): ``lmforge.training.continued``. The
    metrics say ``continued: true`` and ``base_model``; the initial loss is the base model's own.
    """
    from lmforge.model.base_model import resolve_attn_implementation
    from lmforge.training.continued import WHERE, check_continued_start, finish_continued_checkpoint

    base_model = str(Path(config.base_model).resolve())
    index = check_continued_start(base_model, token_shards, trust_remote_code=config.trust_remote_code)
    attn = resolve_attn_implementation(base_model, config.model.attn_implementation, where=WHERE)  # BLOOM: no SDPA
    model = JobModel(attn_implementation=attn, trust_remote_code=config.trust_remote_code)
    logger.info("pretrain: continuing from %s (lr %.2e, %d warmup steps: pretrain.continued)", base_model,
                config.train.lr, config.train.warmup_steps)
    checkpoint, metrics, curve = _run("pretrain", config, templates, model=model, init_from=base_model,
                                      data=JobData(token_shards=token_shards),
                                      tokenizer_sha256=index["tokenizer_sha256"])
    saved = finish_continued_checkpoint(checkpoint, base_model, trust_remote_code=config.trust_remote_code)
    return checkpoint, {**metrics, "base_model": base_model, "continued": True, **saved}, curve


def run_sft(examples: Sequence[Mapping[str, Any]], base_model_dir: str, tokenizer_dir: str,
            templates: Mapping[str, Any], config: SftConfig,
            validation_examples: Sequence[Mapping[str, Any]] | None = None,
            chat: ChatTokenizer | None = None) -> tuple[str, dict[str, Any], list[dict]]:
    """Fine-tune the base model on tokenized examples; returns (checkpoint, metrics, loss curve).

    ``base_model_dir`` is the pretrain checkpoint, used unless ``sft.base_model`` names another HF
    directory; packing, full/LoRA fine-tuning and the tokenizer rule: ``lmforge.training.sft``.
    ``validation_examples`` (tokenized held-out conversations) give the validation loss. ``chat`` is
    the ``ChatTokenizer`` the examples were made with, when the caller has it (else loaded here). The
    checkpoint carries the tokenizer, its template and the stop ids (``finish_sft_checkpoint``).
    """
    from lmforge.model.base_model import check_vocab_fits, resolve_attn_implementation
    from lmforge.training.sft import (
        MAX_VALIDATION_EXAMPLES,
        finish_sft_checkpoint,
        load_sft_tokenizer,
        resolve_sft_sources,
    )
    from lmforge.training.sft import write_examples as write_jsonl

    if not examples:
        raise ValueError("no SFT examples to train on: check sft.data and sft.max_length")
    chat = chat or load_sft_tokenizer(base_model_dir, tokenizer_dir, config)
    base_model_dir, _ = resolve_sft_sources(base_model_dir, tokenizer_dir, config)
    check_vocab_fits(base_model_dir, chat.vocab_size, where="sft.base_model (null: the pretrain checkpoint)")

    def write_examples(run_dir: Path) -> dict[str, str]:
        out = {"examples": write_jsonl(run_dir / "train_examples.jsonl", examples)}
        if validation_examples:
            out["validation_examples"] = write_jsonl(run_dir / "validation_examples.jsonl",
                                                     validation_examples[:MAX_VALIDATION_EXAMPLES])
        return out

    attn = resolve_attn_implementation(base_model_dir, config.model.attn_implementation, where="sft.base_model")
    model = JobModel(attn_implementation=attn, lora=config.lora if config.finetuning == "lora" else None,
                     trust_remote_code=config.trust_remote_code)
    data = JobData(pad_id=chat.pad_id, packing=config.packing, packing_length=config.max_length)
    checkpoint, metrics, curve = _run("sft", config, templates, model=model, init_from=base_model_dir, data=data,
                                      tokenizer_sha256=chat.sha256, write_data=write_examples)
    finish_sft_checkpoint(checkpoint, chat)
    return checkpoint, {**metrics, "base_model": base_model_dir, "chat_template_sha256": chat.template_sha256,
                        "end_of_turn": chat.end_of_turn}, curve


def run_align(examples: Sequence[Mapping[str, Any]], heldout: Sequence[Mapping[str, Any]], init_from: str,
              chat: ChatTokenizer, templates: Mapping[str, Any], config: AlignConfig, *,
              log_step_offset: int = 0, trust_remote_code: bool = False) -> tuple[str, dict[str, Any], list[dict]]:
    """Train ``init_from`` on tokenized preference pairs (one round); returns (checkpoint, metrics, curve).

    ``examples`` and ``heldout`` are ``lmforge.align.data.tokenize_pairs`` examples; the job runs in
    ``config.run_dir`` (``lmforge.training.align``). The checkpoint carries the tokenizer, its template and
    the stop ids, like SFT's (``finish_sft_checkpoint``).
    """
    import json

    from lmforge.model.base_model import resolve_attn_implementation
    from lmforge.training.sft import finish_sft_checkpoint

    if not examples:
        raise ValueError("no preference pairs to train on: check align.sources, align.identity_pairs and "
                         "align.on_policy (and the quarantine: data/04_feature/align_quarantine.jsonl)")

    def write_pairs(run_dir: Path) -> dict[str, str]:
        out = {}
        for name, rows, field in (("train_pairs.jsonl", examples, "examples"),
                                  ("heldout_pairs.jsonl", heldout, "validation_examples")):
            if rows:
                with open(run_dir / name, "w", encoding="utf-8") as fh:
                    fh.writelines(json.dumps(dict(row)) + "\n" for row in rows)
                out[field] = str(run_dir / name)
        return out

    attn = resolve_attn_implementation(init_from, config.model.attn_implementation, where="align")
    model = JobModel(attn_implementation=attn, lora=config.lora if config.finetuning == "lora" else None,
                     trust_remote_code=trust_remote_code)
    checkpoint, metrics, curve = _run("align", config, templates, model=model, init_from=init_from,
                                      data=JobData(pad_id=chat.pad_id), tokenizer_sha256=chat.sha256,
                                      write_data=write_pairs, preference=config.loss,
                                      log_step_offset=log_step_offset)
    finish_sft_checkpoint(checkpoint, chat)
    return checkpoint, metrics, curve
