"""Flat metric names of the base-vs-SFT summary (an interface MLflow compares runs by)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmforge.evaluation.report import flatten_metrics, summarize_evaluation


def metrics(loss, tokens):
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_token": loss / math.log(2),
        "tokens": float(tokens),
    }


def test_summary_has_stable_flat_keys_and_comparisons():
    base = {"heldout": metrics(2.0, 100), "sft_pairs": metrics(3.0, 50)}
    sft = {"heldout": metrics(2.1, 100), "sft_pairs": metrics(1.5, 50)}

    summary = summarize_evaluation(base, sft)

    expected_keys = {
        f"{model}.{split}.{name}"
        for model in ("base", "sft")
        for split in ("heldout", "sft_pairs")
        for name in ("loss", "perplexity", "bits_per_token", "tokens")
    } | {
        "heldout.perplexity_ratio",
        "heldout.loss_delta",
        "sft_pairs.perplexity_ratio",
        "sft_pairs.loss_delta",
    }
    assert set(summary) == expected_keys
    assert all(isinstance(value, float) for value in summary.values())
    assert summary["base.heldout.perplexity"] == pytest.approx(math.exp(2.0))
    assert summary["sft_pairs.perplexity_ratio"] == pytest.approx(math.exp(1.5) / math.exp(3.0))
    assert summary["sft_pairs.loss_delta"] == pytest.approx(-1.5)
    assert summary["heldout.loss_delta"] == pytest.approx(0.1)


def test_splits_in_one_model_only_get_no_comparison():
    summary = summarize_evaluation({"heldout": metrics(2.0, 10)}, {"sft_pairs": metrics(1.0, 10)})
    assert "base.heldout.loss" in summary and "sft.sft_pairs.loss" in summary
    assert not any(key.endswith(("perplexity_ratio", "loss_delta")) for key in summary)


def test_flatten_converts_scalars_and_drops_non_numbers():
    flat = flatten_metrics(
        {"a": {"b": np.float32(1.5), "c": 2}, "samples": ["text"], "name": "x", "ok": True},
        prefix="sft",
    )
    assert flat == {"sft.a.b": 1.5, "sft.a.c": 2.0}
