"""The process group's device, and the small all-reduces of a training step that every rank must make alike.

Under NCCL (GPUs) every tensor a collective takes must be on this rank's GPU, and the object collectives
(``broadcast_object_list``: the run lock, the resume decision) use the current CUDA device, so
``init_process_group`` makes ``cuda:<LOCAL_RANK>`` current right after DeepSpeed starts the group and
``collective_device`` is where the step's all-reduces put their tensors; under gloo (CPU) both are the CPU.
"""

from __future__ import annotations

import os
from typing import Any


def init_process_group() -> None:
    """``deepspeed.init_distributed()`` (gloo on CPU, NCCL on GPU), then this rank's GPU made current (NCCL)."""
    import deepspeed

    deepspeed.init_distributed()
    collective_device()


def collective_device() -> Any:
    """``cuda:<LOCAL_RANK>`` (made the current device) when the process group is NCCL, else the CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A batch's tensors on ``device`` (the engine's: a GPU's under NCCL; the workers build batches on the CPU);
    other values (``use_cache: False`` of a packed batch) as they are."""
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def agree_finite(loss: Any) -> bool:
    """True when the loss is finite on every rank (one tiny all-reduce)."""
    import torch
    import torch.distributed as dist

    bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0], device=collective_device())
    dist.all_reduce(bad)
    return float(bad) == 0.0


def mean_over_ranks(sums: dict[str, Any], count: int) -> dict[str, float]:
    """Per-step model metrics summed over micro-batches, averaged over every micro-batch of every rank.

    One all-reduce of the stacked values; the names are sorted so every rank stacks them alike.
    """
    import torch
    import torch.distributed as dist

    if not sums:
        return {}
    names = sorted(sums)
    stacked = torch.stack([torch.as_tensor(sums[n], dtype=torch.float64) for n in names]).to(collective_device())
    dist.all_reduce(stacked)
    return {n: float(v) / count for n, v in zip(names, stacked, strict=True)}
