"""Perplexity evaluators against a per-token loop on a tiny random Llama."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmforge.evaluation.perplexity import evaluate_lm_perplexity, evaluate_masked_perplexity


def manual_token_losses(model, input_ids, labels=None):
    """Per-token losses of one unpadded sequence, one position at a time (no batching, no masks)."""
    labels = list(input_ids) if labels is None else list(labels)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(input_ids)])).logits[0]  # (T, V)
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return [-float(log_probs[t, labels[t + 1]]) for t in range(len(labels) - 1) if labels[t + 1] != -100]


def make_blocks(n=5, length=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 300, size=(n, length)).astype(np.uint16)


def test_lm_perplexity_matches_per_token_loop(tiny_model):
    blocks = make_blocks()
    losses = [loss for block in blocks for loss in manual_token_losses(tiny_model, block.tolist())]
    expected = sum(losses) / len(losses)

    metrics = evaluate_lm_perplexity(tiny_model, blocks, batch_size=2)  # last batch has 1 block

    assert metrics["tokens"] == 5 * 11
    assert metrics["loss"] == pytest.approx(expected, abs=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert metrics["bits_per_token"] == pytest.approx(expected / math.log(2), abs=1e-5)


def test_lm_perplexity_does_not_depend_on_batch_size(tiny_model):
    blocks = make_blocks(n=7)
    one = evaluate_lm_perplexity(tiny_model, blocks, batch_size=1)
    many = evaluate_lm_perplexity(tiny_model, blocks, batch_size=3)
    assert many["loss"] == pytest.approx(one["loss"], abs=1e-6)


def test_lm_perplexity_reads_memmap_and_lists_and_max_blocks(tiny_model, tmp_path):
    blocks = make_blocks(n=6, length=8).astype(np.uint32)
    path = tmp_path / "blocks.bin"
    blocks.tofile(path)
    mapped = np.memmap(path, dtype=np.uint32, mode="r", shape=blocks.shape)

    from_memmap = evaluate_lm_perplexity(tiny_model, mapped, max_blocks=3)
    from_lists = evaluate_lm_perplexity(tiny_model, blocks[:3].tolist())

    assert from_memmap["tokens"] == 3 * 7
    assert from_memmap == pytest.approx(from_lists)


def test_lm_perplexity_rejects_ragged_and_empty_input(tiny_model):
    with pytest.raises(ValueError, match="same length"):
        evaluate_lm_perplexity(tiny_model, [[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="no blocks"):
        evaluate_lm_perplexity(tiny_model, np.zeros((0, 8), dtype=np.uint16))


def test_evaluators_restore_training_mode(tiny_model):
    tiny_model.train()
    evaluate_lm_perplexity(tiny_model, make_blocks(n=1))
    evaluate_masked_perplexity(tiny_model, [([1, 2, 3], [-100, 2, 3])], pad_id=2)
    assert tiny_model.training


SFT_EXAMPLES = [
    # (input_ids, labels): prompt positions masked with -100, different lengths
    ([0, 3, 10, 11, 12, 4, 3, 20, 21, 22, 4], [-100] * 6 + [3, 20, 21, 22, 4]),
    ([0, 3, 30, 4, 3, 40, 41, 4], [-100] * 4 + [3, 40, 41, 4]),
    ([0, 3, 50, 51, 52, 53, 54, 55, 4, 3, 60, 4], [-100] * 9 + [3, 60, 4]),
    ([0, 3, 70, 4, 3, 80, 4], [-100, -100, -100, -100, 3, 80, -100]),
]


def test_masked_perplexity_matches_per_token_loop(tiny_model):
    losses = [loss for ids, labels in SFT_EXAMPLES for loss in manual_token_losses(tiny_model, ids, labels)]
    metrics = evaluate_masked_perplexity(tiny_model, SFT_EXAMPLES, batch_size=8, pad_id=2)
    assert metrics["tokens"] == len(losses) == 5 + 4 + 3 + 2
    assert metrics["loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))


def test_masked_perplexity_padding_and_batching_do_not_change_result(tiny_model):
    one_at_a_time = evaluate_masked_perplexity(tiny_model, SFT_EXAMPLES, batch_size=1, pad_id=2)
    padded = evaluate_masked_perplexity(tiny_model, SFT_EXAMPLES, batch_size=3, pad_id=2)
    other_pad = evaluate_masked_perplexity(tiny_model, SFT_EXAMPLES, batch_size=4, pad_id=123)
    assert padded["tokens"] == one_at_a_time["tokens"]
    assert padded["loss"] == pytest.approx(one_at_a_time["loss"], abs=1e-5)
    assert other_pad["loss"] == pytest.approx(one_at_a_time["loss"], abs=1e-5)


def test_masked_positions_do_not_influence_the_loss(tiny_model):
    ids, labels = SFT_EXAMPLES[3]  # last position is masked
    base = evaluate_masked_perplexity(tiny_model, [(ids, labels)], pad_id=2)

    changed_input = ids[:-1] + [99]  # token under a masked label: nothing later is scored
    same = evaluate_masked_perplexity(tiny_model, [(changed_input, labels)], pad_id=2)
    assert same["loss"] == pytest.approx(base["loss"], abs=1e-6)

    unmasked = labels[:-1] + [ids[-1]]  # scoring it does change the result
    more = evaluate_masked_perplexity(tiny_model, [(ids, unmasked)], pad_id=2)
    assert more["tokens"] == base["tokens"] + 1
    assert more["loss"] != pytest.approx(base["loss"], abs=1e-6)


def test_masked_perplexity_rejects_bad_examples(tiny_model):
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_masked_perplexity(tiny_model, [([1, 2, 3], [1, 2])], pad_id=2)
    with pytest.raises(ValueError, match="masked"):
        evaluate_masked_perplexity(tiny_model, [([1, 2, 3], [-100, -100, -100])], pad_id=2)
    with pytest.raises(ValueError, match="no examples"):
        evaluate_masked_perplexity(tiny_model, [], pad_id=2)


def test_bits_per_byte_is_total_bits_over_target_bytes(tiny_model):
    blocks = make_blocks(n=3, length=10)
    vocab = tiny_model.config.vocab_size
    token_bytes = (np.arange(vocab) % 4).astype(np.int64)  # 0..3 bytes per id, some tokens carry none
    plain = evaluate_lm_perplexity(tiny_model, blocks, batch_size=2)
    metrics = evaluate_lm_perplexity(tiny_model, blocks, batch_size=2, token_bytes=token_bytes)

    expected_bytes = int(token_bytes[blocks[:, 1:].astype(np.int64)].sum())  # targets only: not position 0
    assert "bits_per_byte" not in plain and metrics["loss"] == pytest.approx(plain["loss"])
    assert metrics["bytes"] == expected_bytes
    total_bits = metrics["loss"] * metrics["tokens"] / math.log(2)
    assert metrics["bits_per_byte"] == pytest.approx(total_bits / expected_bytes, rel=1e-9)


def test_masked_bits_per_byte_counts_only_scored_labels(tiny_model):
    token_bytes = np.full(tiny_model.config.vocab_size, 2, dtype=np.int64)
    examples = [([1, 5, 6, 7], [-100, -100, 6, 7]), ([1, 8, 9], [-100, 8, 9])]
    metrics = evaluate_masked_perplexity(tiny_model, examples, pad_id=2, token_bytes=token_bytes)
    assert metrics["tokens"] == 4 and metrics["bytes"] == 8  # 2 + 2 scored labels, 2 bytes each
    assert metrics["bits_per_byte"] == pytest.approx(metrics["bits_per_token"] / 2)
    with pytest.raises(ValueError, match="token_bytes"):
        evaluate_masked_perplexity(tiny_model, examples, pad_id=2, token_bytes=token_bytes[:5])


def test_token_byte_lengths_add_up_to_the_text_bytes(chain_tokenizer_dir):
    from lmforge.evaluation.perplexity import token_byte_lengths
    from lmforge.tokenizer.artifact import load_tokenizer

    tok, _ = load_tokenizer(chain_tokenizer_dir)
    lengths = token_byte_lengths(tok)
    assert len(lengths) == tok.vocab_size
    assert all(lengths[i] == 0 for i in tok.special_ids)
    for text in ["def add(a, b):\n    return a + b\n", "    # 中文注释：计算平均值\n\tx = 'é'\n", "  \n\n  end"]:
        ids = tok.encode(text, parse_special=False)
        assert tok.decode(ids) == text
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    im_end = tok.token_to_id("<|im_end|>")
    assert lengths[im_end] == 0  # chat structure carries no text bytes
