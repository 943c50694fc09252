"""Packing SFT examples: every example packed once, reproducibly; no attention across examples; same loss as unpacked."""

from __future__ import annotations

import random

import pytest

from lmforge.training.packing import IGNORE_INDEX, collate_packed, pack_examples, packing_stats


def _examples(lengths, seed=0, vocab=300):
    rng = random.Random(seed)
    out = []
    for n in lengths:
        ids = [rng.randrange(5, vocab) for _ in range(n)]
        prompt = rng.randrange(1, n)  # labels only after the "prompt", like assistant-only masking
        out.append((ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


def test_every_example_is_packed_exactly_once_and_rows_fit():
    rng = random.Random(1)
    lengths = [rng.randrange(1, 65) for _ in range(500)]
    rows = pack_examples(lengths, 64, seed=0)

    assert sorted(i for row in rows for i in row) == list(range(500))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    # best-fit decreasing is near the lower bound on rows
    assert len(rows) <= 1.1 * sum(lengths) / 64 + 1
    stats = packing_stats(lengths, rows, 64)
    assert stats["packing_efficiency"] == pytest.approx(sum(lengths) / (len(rows) * 64))
    assert stats["packing_efficiency"] > 0.9 and stats["packed_examples"] == 500


def test_packing_is_reproducible_by_seed():
    lengths = [10, 20, 30, 10, 20, 30, 5, 5, 40, 60] * 5
    assert pack_examples(lengths, 64, seed=3) == pack_examples(lengths, 64, seed=3)
    assert pack_examples(lengths, 64, seed=3) != pack_examples(lengths, 64, seed=4)


def test_too_long_example_is_named():
    with pytest.raises(ValueError, match="'conv-7' has 70 tokens"):
        pack_examples([10, 70], 64, ids=["conv-1", "conv-7"])


def test_collate_restarts_positions_and_masks_each_first_token():
    examples = _examples([3, 4])
    batch = collate_packed([examples], 10, pad_id=0)

    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 1, 2]]
    assert "attention_mask" not in batch  # transformers builds the block-diagonal mask from position_ids
    assert batch["use_cache"] is False  # ... but only without a KV cache
    labels = batch["labels"][0].tolist()
    assert labels[0] == labels[3] == IGNORE_INDEX and labels[7:] == [IGNORE_INDEX] * 3
    assert batch["input_ids"][0, :3].tolist() == examples[0][0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_attention_across_packed_examples(tiny_model_dir, attn):
    """Each example's logits in a packed row equal its logits alone, and changing one example leaves the others'."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    examples = _examples([7, 12, 5, 9])
    seq_len = 40  # 33 real tokens + 7 padding
    with torch.no_grad():
        packed = model(**{k: v for k, v in collate_packed([examples], seq_len, 0).items() if k != "labels"}).logits
        changed_examples = [examples[0], _examples([12], seed=9)[0], *examples[2:]]
        changed = model(**{k: v for k, v in collate_packed([changed_examples], seq_len, 0).items()
                           if k != "labels"}).logits
        at = 0
        for j, (ids, _) in enumerate(examples):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            assert torch.allclose(packed[0, at:at + len(ids)], alone, atol=1e-5), f"example {j}"
            if j != 1:
                assert torch.allclose(changed[0, at:at + len(ids)], packed[0, at:at + len(ids)], atol=1e-5)
            else:
                assert not torch.allclose(changed[0, at:at + len(ids)], packed[0, at:at + len(ids)], atol=1e-3)
            at += len(ids)


def test_packed_loss_equals_unpacked_loss(tiny_model_dir):
    """Token-weighted mean loss: a packed batch of examples == the padded batch of the same examples."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.training.data import collate_examples

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    examples = _examples([7, 12, 5, 9, 20, 3, 16], seed=2)
    lengths = [len(ids) for ids, _ in examples]
    rows = pack_examples(lengths, 32, seed=0)
    assert len(rows) < len(examples)  # some rows hold several examples
    with torch.no_grad():
        unpacked = model(**collate_examples(examples, pad_id=0)).loss
        packed = model(**collate_packed([[examples[i] for i in row] for row in rows], 32, pad_id=0)).loss
    assert float(packed) == pytest.approx(float(unpacked), abs=1e-5)
