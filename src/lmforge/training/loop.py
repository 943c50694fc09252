"""The DeepSpeed training loop shared by pretraining and SFT; runs inside every launched rank.

All parallelism lives here and in ``launch.py``: the model is plain single-device transformers code.
Rank 0 logs per-step metrics to the MLflow run of the Kedro stage that launched the job and writes
``result.json`` (losses, throughput, checkpoint path) for the node to return.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.training.config import JobSpec

logger = logging.getLogger("lmforge.training")


def setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="[lmforge] %(message)s", force=True)


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed through DeepSpeed (gloo on CPU, NCCL on GPU)."""
    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    setup_logging(rank)
    return rank, world


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
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=args.betas, eps=1e-8,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup=args.warmup_steps, total=args.max_steps, min_ratio=args.min_lr_ratio)
    )
    return optimizer, schedule


def train(spec: JobSpec, model: Any, next_batch: Callable[[int, int], dict[str, Any]], *, rank: int,
          world_size: int) -> dict[str, Any]:
    """Run ``spec.train.max_steps`` optimizer steps; ``next_batch(step, micro)`` gives this rank's batch."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from lmforge.tracking import StepLogger

    args = spec.train
    n_params = sum(p.numel() for p in model.parameters())
    optimizer, schedule = build_optimizer(model, spec)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                           config=spec.deepspeed)
    step_logger = StepLogger() if rank == 0 else None
    prefix = spec.metric_prefix
    if step_logger and step_logger.enabled:
        step_logger.log_params({f"{prefix}.world_size": world_size, f"{prefix}.model_params": n_params})
    history: list[dict[str, float]] = []
    total_tokens = 0
    started = time.perf_counter()
    engine.train()
    for step in range(args.max_steps):
        t0 = time.perf_counter()
        loss_sum = torch.zeros(2)  # (sum of micro-batch losses, tokens)
        for micro in range(args.gradient_accumulation_steps):
            batch = next_batch(step, micro)
            out = engine(**batch)
            engine.backward(out.loss)
            engine.step()
            loss_sum[0] += out.loss.detach().float()
            loss_sum[1] += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        dist.all_reduce(loss_sum)
        loss = float(loss_sum[0]) / (args.gradient_accumulation_steps * world_size)
        tokens = int(loss_sum[1])
        if not math.isfinite(loss):
            raise FloatingPointError(f"{prefix}: loss is {loss} at step {step}; lower the learning rate "
                                     f"(train.lr={args.lr}) or check the data")
        total_tokens += tokens
        dt = time.perf_counter() - t0
        grad_norm = engine.get_global_grad_norm()
        record = {"step": step, "loss": loss, "lr": schedule.get_last_lr()[0],
                  "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                  "tokens_per_s": tokens / dt, "step_time_s": dt}
        history.append(record)
        if rank == 0 and step % args.log_every == 0:
            if step_logger:
                step_logger.log({f"{prefix}.{k}": v for k, v in record.items() if k != "step" and v == v}, step)
            if step % max(1, args.max_steps // 20) == 0 or step == args.max_steps - 1:
                logger.info("%s step %d/%d loss %.4f lr %.2e %.0f tok/s", prefix, step + 1, args.max_steps,
                            loss, record["lr"], record["tokens_per_s"])
    elapsed = time.perf_counter() - started
    export_model(engine, spec, rank)
    k = max(1, min(5, len(history) // 4))
    result = {
        "checkpoint": spec.output_dir,
        "steps": len(history),
        "initial_loss": sum(r["loss"] for r in history[:k]) / k,
        "final_loss": sum(r["loss"] for r in history[-k:]) / k,
        "tokens": total_tokens,
        "train_time_s": elapsed,
        "tokens_per_s": total_tokens / elapsed,
        "tokens_per_s_per_process": total_tokens / elapsed / world_size,
        "world_size": world_size,
        "zero_stage": spec.deepspeed.get("zero_optimization", {}).get("stage", 0),
        "model_params": n_params,
        "history": [{"step": r["step"], "loss": r["loss"], "lr": r["lr"]} for r in history],
    }
    if rank == 0:
        if step_logger:
            step_logger.flush()
        Path(spec.run_dir, "result.json").write_text(json.dumps(result, indent=2))
        logger.info("%s done: loss %.4f -> %.4f in %.0f s (%.0f tok/s)", prefix, result["initial_loss"],
                    result["final_loss"], elapsed, result["tokens_per_s"])
    dist.barrier()
    return result


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
