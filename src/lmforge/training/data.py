"""Deterministic, position-addressable data order for multi-process training.

The sample seen by (step, micro-step, rank, slot) is a pure function of those numbers, the seed and
the dataset size: no iterator state to save, so a resumed run sees exactly the batches an
uninterrupted run would have, and the set of samples in one optimizer step does not depend on how
the global batch is split across ranks.

Global sample number ``g`` -> epoch ``g // n`` -> position in that epoch's seeded permutation.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=4)
def _permutation(n_items: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_items)


def sample_indices(step: int, micro: int, rank: int, *, world_size: int, micro_batch_size: int,
                   accumulation: int, n_items: int, seed: int) -> np.ndarray:
    """Dataset indices of one rank's micro-batch (shape ``[micro_batch_size]``)."""
    if n_items < 1:
        raise ValueError("cannot sample from an empty dataset")
    global_batch = micro_batch_size * accumulation * world_size
    first = step * global_batch + (micro * world_size + rank) * micro_batch_size
    out = np.empty(micro_batch_size, dtype=np.int64)
    for j in range(micro_batch_size):
        g = first + j
        out[j] = _permutation(n_items, seed, g // n_items)[g % n_items]
    return out


def collate_examples(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad (input_ids, labels) pairs into tensors; padding is masked out of attention and loss."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
