"""The small all-reduces of a training step that every rank must make alike (``loop.train``)."""

from __future__ import annotations

from typing import Any


def agree_finite(loss: Any) -> bool:
    """True when the loss is finite on every rank (one tiny all-reduce)."""
    import torch
    import torch.distributed as dist

    bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0])
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
    stacked = torch.stack([torch.as_tensor(sums[n], dtype=torch.float64) for n in names])
    dist.all_reduce(stacked)
    return {n: float(v) / count for n, v in zip(names, stacked, strict=True)}
