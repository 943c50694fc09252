"""The DeepSpeed training loop shared by pretraining and SFT; runs inside every launched rank.

All parallelism lives here and in ``launch.py``: the model is plain single-device transformers code.
Rank 0 logs per-step metrics (loss, lr, grad norm; tokens/s, MFU, memory under ``<stage>.step.``:
``throughput.py``) to the MLflow run of the Kedro stage that launched the job and writes
``result.json`` (losses, throughput, checkpoint path) for the node to return. Periodic checkpoints
and automatic resume: ``checkpoints.py``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.training.config import FaultInjection, JobSpec
from lmforge.training.run_lock import lock_run_dir
from lmforge.training.step_sync import agree_finite, init_process_group, mean_over_ranks, to_device
from lmforge.training.throughput import MODEL_STEP_METRICS

logger = logging.getLogger("lmforge.training")


def setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="[lmforge] %(message)s", force=True)


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed through DeepSpeed (gloo on CPU, NCCL on GPU: this rank's GPU made current)."""
    import torch.distributed as dist

    init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    setup_logging(rank)
    return rank, world


def finish_job(run_dir: str | Path, rank: int) -> None:
    """End of a worker: every rank meets, rank 0 marks the job complete, the process group is closed.

    The marker tells the launcher the outputs are whole even if a process then fails at exit (a gloo
    peer closing while the interpreter shuts down); destroying the group first makes that rarer.
    """
    import torch.distributed as dist

    from lmforge.training.launch import COMPLETE_MARKER

    dist.barrier()
    if rank == 0:
        Path(run_dir, COMPLETE_MARKER).write_text("every rank passed the final barrier\n")
    dist.destroy_process_group()


def lr_lambda(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: Any, spec: JobSpec) -> tuple[Any, Any]:
    """AdamW with decay on matrices only, and the warmup + cosine schedule."""
    import torch

    args = spec.train
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # No empty group (LoRA trains matrices only): ZeRO drops it and the scheduler's group count no longer matches.
    groups = [g for g in groups if g["params"]]
    from lmforge.training.deepspeed_config import offloads_optimizer

    if offloads_optimizer(spec.deepspeed):  # ZeRO-Offload runs the step on the CPU with DeepSpeed's C++ Adam
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=args.lr, betas=args.betas, eps=1e-8, adamw_mode=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=args.betas, eps=1e-8)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup=args.warmup_steps, total=args.max_steps, min_ratio=args.min_lr_ratio)
    )
    return optimizer, schedule


def train(spec: JobSpec, model: Any, next_batch: Callable[[int, int], dict[str, Any]], *, rank: int,
          world_size: int, epoch_size: int | None = None) -> dict[str, Any]:
    """Run ``spec.train.max_steps`` optimizer steps; ``next_batch(step, micro)`` gives this rank's batch.

    Resumes from the newest complete checkpoint of the same job in ``<run_dir>/checkpoints`` (see
    ``checkpoints.py``), saves one every ``train.checkpoint_every`` steps and deletes them once the
    model is exported. ``epoch_size`` (sequences in one pass over the data) gives ``time_per_epoch_s``.
    """
    import deepspeed
    import torch
    import torch.distributed as dist

    from lmforge.step_logging import UNSENT_METRICS, StepLogger
    from lmforge.training.deepspeed_config import needs_gradient_allreduce, offloads_optimizer
    from lmforge.training.throughput import (
        GpuUtilization,
        Throughput,
        flops_per_token,
        measure_cpu_gemm_peak,
        peak_memory_mb,
        step_metrics_for_mlflow,
    )

    args = spec.train
    n_params = sum(p.numel() for p in model.parameters())
    flops_fixed = flops_per_token(model, 0)  # before ZeRO-3 partitions the parameters
    flops_per_position = flops_per_token(model, 1) - flops_fixed
    if args.activation_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer, schedule = build_optimizer(model, spec)
    model.universal_checkpoint_info = {"universal_checkpoint_version": 0.4}  # saved checkpoints can change world size
    lock_run_dir(spec.run_dir, rank)  # before find_resume_source, which may delete stale checkpoints
    ckpt_root = Path(spec.run_dir, "checkpoints")
    source = find_resume_source(spec, ckpt_root, rank=rank, world_size=world_size)
    ds_config = spec.deepspeed
    if source and source["universal"]:
        ds_config = {**ds_config, "checkpoint": {**ds_config.get("checkpoint", {}), "load_universal": True}}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=ds_config)
    engine.enable_backward_allreduce &= needs_gradient_allreduce(ds_config, world_size)  # one process, ZeRO-0: no-op
    logger.info("%s: %d process(es), ZeRO stage %d, optimizer %s%s", spec.metric_prefix, world_size,
                ds_config.get("zero_optimization", {}).get("stage", 0), type(optimizer).__name__,
                " (offloaded to the CPU)" if offloads_optimizer(ds_config) else "")
    state, restart_count = resume_or_start(engine, spec, ckpt_root, source, rank=rank)
    state.update(args.bandwidth_probe.measure(world_size=world_size, prefix=spec.metric_prefix, device=engine.device))
    if state.get("cpu_peak") is None and not torch.cuda.is_available():
        peak = torch.tensor([measure_cpu_gemm_peak()], dtype=torch.float64)  # every rank at once: they share the cores
        dist.all_reduce(peak)
        state["cpu_peak"] = float(peak) / world_size
    meter = Throughput(args.precision, world_size=world_size, cpu_peak=state.get("cpu_peak"))
    gpu = GpuUtilization()
    if rank == 0 and torch.cuda.is_available() and not gpu.available:
        logger.warning("%s: no per-step GPU utilisation: %s", spec.metric_prefix, gpu.reason)
    step_logger = StepLogger(unsent_path=Path(spec.run_dir, UNSENT_METRICS)) if rank == 0 else None
    prefix = spec.metric_prefix
    if step_logger and step_logger.enabled:
        step_logger.log_params({f"{prefix}.world_size": world_size, f"{prefix}.model_params": n_params,
                                f"{prefix}.vocab_size": getattr(model.config, "vocab_size", None),
                                f"{prefix}.restart_count": restart_count, f"{prefix}.device": meter.device})
        # the measured peak FLOP/s is a metric (<prefix>.peak_flops_per_device in the stage's metrics), not a
        # parameter: as a parameter it would differ between two runs of the same configuration
    history: list[dict[str, float]] = state["history"]
    started = time.perf_counter() - state["train_time_s"]  # the clock goes on across restarts
    checkpoint_time = state["checkpoint_time_s"]
    engine.train()
    for step in range(state["step"], args.max_steps):
        torch.manual_seed(args.seed * 1_000_003 + step * 1009 + rank)  # any dropout: a function of the step
        t0 = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=engine.device)  # (sum of losses, tokens, model FLOPs)
        extra_sums: dict[str, Any] = {}  # the model's own per-step metrics (align: rewards, margin, accuracy)
        skip = False
        for micro in range(args.gradient_accumulation_steps):
            batch = to_device(next_batch(step, micro), engine.device)
            out = engine(**batch)
            for name, value in (getattr(out, "metrics", None) or {}).items():
                extra_sums[name] = extra_sums.get(name, 0.0) + value.detach().double().cpu()
            loss = fault_injected_loss(out.loss, step, args.fault_injection)
            if args.nan_policy == "skip" and not agree_finite(loss):
                # Every rank backpropagates zeros (the collectives stay matched) and the update is dropped.
                skip = True
                loss = sum((p * 0.0).sum() for p in engine.module.parameters() if p.requires_grad)
            if skip and micro == args.gradient_accumulation_steps - 1:
                for group in optimizer.param_groups:  # the scheduler sets the next step's lr again
                    group["lr"] = 0.0
            engine.backward(loss)
            engine.step()
            tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            sums[0] += loss.detach().double()
            sums[1] += tokens
            sums[2] += tokens * (flops_fixed + flops_per_position * batch["input_ids"].shape[1])
        dist.all_reduce(sums)
        loss = float(sums[0]) / (args.gradient_accumulation_steps * world_size)
        extras = mean_over_ranks(extra_sums, args.gradient_accumulation_steps * world_size)
        tokens, flops = int(sums[1]), float(sums[2])
        if skip:
            state["skipped_steps"] += 1
            logger.warning("%s: non-finite loss at step %d: update skipped (train.nan_policy=skip, %d so far)",
                           prefix, step, state["skipped_steps"])
        elif not math.isfinite(loss):
            raise FloatingPointError(f"{prefix}: loss is {loss} at step {step}; lower the learning rate "
                                     f"(train.lr={args.lr}) or check the data (or set train.nan_policy: skip)")
        state["tokens"] += tokens
        state["flops"] += flops
        dt = time.perf_counter() - t0
        if not skip:
            grad_norm = engine.get_global_grad_norm()
            memory_name, memory = peak_memory_mb()
            record = {"step": step, "loss": loss, "lr": schedule.get_last_lr()[0],
                      "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                      **extras, **meter.step_metrics(tokens, flops, dt), memory_name: memory, **gpu.sample()}
            history.append(record)
            if rank == 0 and step % args.log_every == 0:
                if step_logger:
                    step_logger.log(step_metrics_for_mlflow(record, prefix), step + spec.log_step_offset)
                if step % max(1, args.max_steps // 20) == 0 or step == args.max_steps - 1:
                    logger.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s %s %.3f", prefix, step + 1,
                                args.max_steps, loss, record["lr"], record["tokens_per_s"], meter.mfu_name,
                                record.get(meter.mfu_name, float("nan")))
        done = step + 1
        if args.checkpoint_every and done % args.checkpoint_every == 0 and done < args.max_steps and spec.fingerprint:
            t_save = time.perf_counter()
            state.update(step=done, train_time_s=time.perf_counter() - started, checkpoint_time_s=checkpoint_time)
            save_checkpoint(engine, spec, ckpt_root, state, rank=rank, world_size=world_size)
            checkpoint_time += time.perf_counter() - t_save
            kill_after_checkpoint(done, rank, args.fault_injection)
    elapsed = time.perf_counter() - started
    export_model(engine, spec, rank)
    result = summarize(spec, history, state, elapsed=elapsed, checkpoint_time=checkpoint_time, world_size=world_size,
                       n_params=n_params, meter=meter, restart_count=restart_count, epoch_size=epoch_size)
    if rank == 0:
        if step_logger:
            step_logger.close()  # what the store did not take stays in <run_dir>/unsent_metrics.jsonl
        Path(spec.run_dir, "result.json").write_text(json.dumps(result, indent=2))
        shutil.rmtree(ckpt_root, ignore_errors=True)  # finished: the next run of the stage trains afresh
        logger.info("%s done: loss %.4f -> %.4f in %.0f s (%.0f tok/s, %s %.3f, %d restart(s))", prefix,
                    result["initial_loss"], result["final_loss"], elapsed, result["tokens_per_s"], meter.mfu_name,
                    result.get(meter.mfu_name, float("nan")), restart_count)
    dist.barrier()
    return result


def summarize(spec: JobSpec, history: list[dict], state: dict, *, elapsed: float, checkpoint_time: float,
              world_size: int, n_params: int, meter: Any, restart_count: int,
              epoch_size: int | None) -> dict[str, Any]:
    """The result dict the node returns (it becomes data/08_reporting/<stage>.json)."""
    args = spec.train
    if not history:
        raise FloatingPointError(f"{spec.metric_prefix}: every step had a non-finite loss")
    k = max(1, min(5, len(history) // 4))
    samples = args.max_steps * args.micro_batch_size * args.gradient_accumulation_steps * world_size
    memory_name = next(name for name in ("gpu_max_allocated_mb", "peak_rss_mb") if name in history[-1])
    result = {
        "checkpoint": spec.output_dir,
        "steps": len(history),
        "initial_loss": sum(r["loss"] for r in history[:k]) / k,
        "final_loss": sum(r["loss"] for r in history[-k:]) / k,
        "tokens": state["tokens"],
        "train_time_s": elapsed,
        "checkpoint_time_s": checkpoint_time,
        "tokens_per_s": state["tokens"] / elapsed,
        "tokens_per_s_per_process": state["tokens"] / elapsed / world_size,
        "world_size": world_size, "zero_stage": spec.deepspeed.get("zero_optimization", {}).get("stage", 0),
        "model_params": n_params,
        "flops": state["flops"],
        "device": meter.device,
        "peak_flops_per_device": meter.peak,
        memory_name: max(r[memory_name] for r in history),
        "restart_count": restart_count, "skipped_steps": state["skipped_steps"],
        "network": state.get("network", {}),  # the all-reduce bus bandwidth at start (training/bandwidth.py)
        "history": [{"step": r["step"], "loss": r["loss"], "lr": r["lr"], **{k: r[k] for k in MODEL_STEP_METRICS if k in r}}
                    for r in history],
    }
    if meter.peak:
        result[meter.mfu_name] = state["flops"] / elapsed / (meter.peak * world_size)
    if epoch_size:
        result["epochs"] = samples / epoch_size
        result["time_per_epoch_s"] = elapsed / result["epochs"]
    return result


def fault_injected_loss(loss: Any, step: int, faults: FaultInjection) -> Any:
    """The loss, made NaN at the steps ``train.fault_injection.nan_at_steps`` names (empty in real runs)."""
    if step in faults.nan_at_steps:
        return loss * float("nan")
    return loss


def find_resume_source(spec: JobSpec, ckpt_root: Path, *, rank: int, world_size: int) -> dict[str, Any] | None:
    """Pick the newest verified checkpoint of this job (rank 0) and tell every rank how to load it.

    Returns None (start fresh; stale checkpoints deleted) or {"tag", "load_dir", "load_tag",
    "universal", "saved_world_size"}. A checkpoint saved by another number of processes is resumed
    when its global batch equals this job's (``checkpoints.rebatch`` arranged that at launch); with
    ZeRO 1-3 rank 0 first converts it to DeepSpeed's universal format, which any world size loads.
    """
    import torch.distributed as dist

    from lmforge.training import checkpoints

    decision: list[dict[str, Any] | None] = [None]
    if rank == 0 and ckpt_root.exists():
        batch = checkpoints.global_batch(spec.train, world_size)
        tag, unusable = (checkpoints.find_resume_checkpoint(ckpt_root, spec.fingerprint, batch)
                         if spec.fingerprint else (None, []))
        for bad in unusable:
            shutil.rmtree(ckpt_root / bad, ignore_errors=True)
        if tag is None:
            logger.warning("%s: no checkpoint of this job in %s: starting fresh (stale checkpoints deleted)",
                           spec.metric_prefix, ckpt_root)
            shutil.rmtree(ckpt_root, ignore_errors=True)
        else:
            saved_world = checkpoints.saved_world_size(ckpt_root / tag)
            stage = spec.deepspeed.get("zero_optimization", {}).get("stage", 0)
            universal = saved_world != world_size and stage > 0  # ZeRO-0 keeps the whole optimizer in one file
            load_dir, load_tag = ckpt_root, tag
            if universal:
                logger.warning("%s: checkpoint %s was saved by %d process(es), this job has %d: converting it to "
                               "DeepSpeed's universal format", spec.metric_prefix, tag, saved_world, world_size)
                t0 = time.perf_counter()
                checkpoints.convert_to_universal(ckpt_root / tag)
                logger.info("%s: universal checkpoint ready in %.1f s", spec.metric_prefix, time.perf_counter() - t0)
                load_dir, load_tag = ckpt_root / tag, checkpoints.UNIVERSAL
            decision = [{"tag": tag, "load_dir": str(load_dir), "load_tag": load_tag, "universal": universal,
                         "saved_world_size": saved_world}]
    dist.broadcast_object_list(decision, src=0)
    return decision[0]


def resume_or_start(engine: Any, spec: JobSpec, ckpt_root: Path, source: dict[str, Any] | None, *,
                    rank: int) -> tuple[dict[str, Any], int]:
    """Load ``source`` (from ``find_resume_source``) into the engine; return (loop state, restart count)."""
    import torch.distributed as dist

    from lmforge.training import checkpoints

    fresh = {"step": 0, "history": [], "tokens": 0, "flops": 0.0, "train_time_s": 0.0, "checkpoint_time_s": 0.0,
             "skipped_steps": 0, "cpu_peak": None}
    if source is None:
        return fresh, 0
    _, client_state = engine.load_checkpoint(source["load_dir"], source["load_tag"], load_optimizer_states=True,
                                             load_lr_scheduler_states=True)
    state = {**fresh, **(client_state or {}).get("lmforge", {})}
    if source["saved_world_size"] != dist.get_world_size():
        state["cpu_peak"] = None  # measured per process: the processes now share the cores differently
    restart_count = 0
    if rank == 0:
        restart_count = checkpoints.read_restart_count(ckpt_root) + 1
        checkpoints.write_restart_count(ckpt_root, restart_count)
        logger.warning("%s: resuming from %s at step %d (restart %d, saved by %d process(es), now %d)",
                       spec.metric_prefix, ckpt_root / source["tag"], state["step"], restart_count,
                       source["saved_world_size"], dist.get_world_size())
    dist.barrier()
    return state, restart_count


def save_checkpoint(engine: Any, spec: JobSpec, ckpt_root: Path, state: dict[str, Any], *, rank: int,
                    world_size: int) -> None:
    """DeepSpeed checkpoint from every rank, then (rank 0) our manifest, ``latest`` and keep-last-N."""
    import torch.distributed as dist

    from lmforge.training import checkpoints

    tag = checkpoints.tag_for_step(state["step"])
    with checkpoints.saving(ckpt_root, tag):  # a full disk: the partial tag removed, one line saying what to do
        engine.save_checkpoint(str(ckpt_root), tag=tag, client_state={"lmforge": state}, save_latest=False)
        dist.barrier()  # every rank's files are on disk before the manifest says so
        if rank == 0:
            batch = checkpoints.global_batch(spec.train, world_size)
            checkpoints.write_manifest(ckpt_root, tag, step=state["step"], fingerprint=spec.fingerprint,
                                       world_size=world_size, global_batch=batch, verify=spec.train.checkpoint_verify)
            checkpoints.prune_checkpoints(ckpt_root, spec.train.keep_checkpoints)
            logger.info("%s: checkpoint %s saved", spec.metric_prefix, ckpt_root / tag)
    dist.barrier()


def kill_after_checkpoint(step: int, rank: int, faults: FaultInjection) -> None:
    """SIGKILL the whole job once the checkpoint of ``train.fault_injection.kill_after_checkpoint_step`` exists.

    torchrun puts every worker in its own session, so rank 0 gathers the workers' process groups and
    kills them and the launcher's group at once: what a lost machine looks like to the next run.
    """
    import signal

    import torch.distributed as dist

    if faults.kill_after_checkpoint_step != step:
        return
    groups: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(groups, os.getpgid(0))
    if rank == 0:
        for group in {os.getpgid(os.getppid()), *groups} - {os.getpgid(0)}:
            os.killpg(group, signal.SIGKILL)
        os.killpg(os.getpgid(0), signal.SIGKILL)
    time.sleep(60)  # the other ranks wait for their SIGKILL


def export_model(engine: Any, spec: JobSpec, rank: int) -> None:
    """Write the trained weights as a Hugging Face directory (rank 0), gathering ZeRO-3 shards first."""
    import torch.distributed as dist

    state = None
    if spec.deepspeed.get("zero_optimization", {}).get("stage", 0) == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
    if rank == 0:
        os.makedirs(spec.output_dir, exist_ok=True)
        engine.module.save_pretrained(spec.output_dir, state_dict=state, safe_serialization=True)
    dist.barrier()
