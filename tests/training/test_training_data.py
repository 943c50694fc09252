"""Data order (``sample_indices``) and SFT batch collation (``collate_examples``)."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.training.data import collate_examples, sample_indices


def step_indices(step: int, *, world_size: int, micro_batch_size: int, accumulation: int, n_items: int,
                 seed: int = 0) -> list[int]:
    """Every index one optimizer step consumes, over all ranks and micro-steps."""
    out: list[int] = []
    for micro in range(accumulation):
        for rank in range(world_size):
            out += sample_indices(step, micro, rank, world_size=world_size, micro_batch_size=micro_batch_size,
                                  accumulation=accumulation, n_items=n_items, seed=seed).tolist()
    return out


def test_sample_indices_is_deterministic_and_seeded():
    kwargs = dict(world_size=2, micro_batch_size=4, accumulation=2, n_items=100)

    first = sample_indices(3, 1, 1, seed=5, **kwargs)
    again = sample_indices(3, 1, 1, seed=5, **kwargs)
    other_seed = [sample_indices(s, 0, 0, seed=6, **kwargs).tolist() for s in range(4)]

    assert first.shape == (4,)
    np.testing.assert_array_equal(first, again)
    assert other_seed != [sample_indices(s, 0, 0, seed=5, **kwargs).tolist() for s in range(4)]


@pytest.mark.parametrize("world_size,micro_batch_size,accumulation", [(2, 4, 1), (2, 2, 2), (4, 1, 2)])
def test_one_step_sees_the_same_samples_for_any_split_of_the_global_batch(world_size, micro_batch_size,
                                                                          accumulation):
    n_items = 37
    for step in range(6):  # crosses epoch boundaries (8 * 6 > 37)
        single = step_indices(step, world_size=1, micro_batch_size=8, accumulation=1, n_items=n_items)
        split = step_indices(step, world_size=world_size, micro_batch_size=micro_batch_size,
                             accumulation=accumulation, n_items=n_items)

        assert sorted(split) == sorted(single)


def test_ranks_get_disjoint_samples_within_an_epoch():
    kwargs = dict(world_size=2, micro_batch_size=4, accumulation=1, n_items=100, seed=0)

    rank0 = set(sample_indices(0, 0, 0, **kwargs).tolist())
    rank1 = set(sample_indices(0, 0, 1, **kwargs).tolist())

    assert len(rank0) == len(rank1) == 4
    assert not rank0 & rank1


def test_each_epoch_is_a_permutation_and_epochs_differ():
    n_items = 30
    seen = []
    for step in range(30):  # 3 samples per step x 30 steps = 3 epochs
        seen += step_indices(step, world_size=1, micro_batch_size=3, accumulation=1, n_items=n_items)

    epochs = [seen[i:i + n_items] for i in range(0, len(seen), n_items)]

    assert len(epochs) == 3
    for epoch in epochs:
        assert sorted(epoch) == list(range(n_items))
    assert epochs[0] != epochs[1]


def test_sample_indices_rejects_an_empty_dataset():
    with pytest.raises(ValueError, match="empty"):
        sample_indices(0, 0, 0, world_size=1, micro_batch_size=2, accumulation=1, n_items=0, seed=0)


def test_collate_pads_right_and_masks_padding_in_labels_and_attention():
    import torch

    examples = [([5, 6, 7], [-100, 6, 7]), ([8, 9], [8, 9])]

    batch = collate_examples(examples, pad_id=3)

    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 3]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, 9, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert all(t.dtype == torch.long for t in batch.values())
