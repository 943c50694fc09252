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


def test_per_language_results_get_flat_keys_and_sft_minus_base_deltas():
    def model(zh_bpb, chrf, recall_zh):
        heldout = {**metrics(2.0, 100), "by_language": {"zh": {"bits_per_byte": zh_bpb, "bytes": 900.0},
                                                         "code": {"bits_per_byte": 1.5, "bytes": 400.0}}}
        return {"heldout": heldout,
                "translation": {"pairs": 2.0, "skipped_long_prompt": 0.0,
                                "en_zh": {"chrf": chrf, "bleu": chrf / 2, "pairs": 2.0}},
                "identity": {"recall": 0.5, "by_language.zh.recall": recall_zh}}

    summary = summarize_evaluation(model(3.0, 10.0, 0.0), model(2.5, 30.0, 0.75))
    assert summary["sft.heldout.by_language.zh.bits_per_byte"] == 2.5
    assert summary["base.translation.en_zh.chrf"] == 10.0 and summary["sft.translation.en_zh.bleu"] == 15.0
    assert summary["sft.identity.by_language.zh.recall"] == 0.75
    assert summary["heldout.by_language.zh.bits_per_byte_delta"] == pytest.approx(-0.5)
    assert summary["heldout.by_language.code.bits_per_byte_delta"] == 0.0
    assert summary["translation.en_zh.chrf_delta"] == 20.0 and summary["translation.en_zh.bleu_delta"] == 10.0
    assert summary["heldout.perplexity_ratio"] == 1.0  # the existing comparisons are unchanged
    assert not any(k.startswith("translation.pairs") for k in summary)  # counts are no group


def test_an_aligned_model_gets_every_per_model_key_and_its_comparisons_with_sft_and_base():
    base = {"heldout": metrics(2.0, 100), "sft_pairs": metrics(3.0, 50)}
    sft = {"heldout": metrics(2.1, 100), "sft_pairs": metrics(1.5, 50)}
    aligned = {"heldout": metrics(2.2, 100), "sft_pairs": metrics(1.2, 50)}

    two, three = summarize_evaluation(base, sft), summarize_evaluation(base, sft, aligned)

    assert {k: three[k] for k in two} == two  # the two-model keys unchanged
    per_model = {k.removeprefix("sft.") for k in two if k.startswith("sft.")}
    assert {k.removeprefix("aligned.") for k in three if k.startswith("aligned.")} == per_model
    assert three["aligned_vs_sft.sft_pairs.loss_delta"] == pytest.approx(1.2 - 1.5)
    assert three["aligned_vs_sft.heldout.perplexity_ratio"] == pytest.approx(math.exp(2.2) / math.exp(2.1))
    assert three["aligned_vs_base.sft_pairs.perplexity_ratio"] == pytest.approx(math.exp(1.2) / math.exp(3.0))
    assert set(three) - set(two) == {f"aligned.{k}" for k in per_model} | {
        f"aligned_vs_{ref}.{split}.{name}" for ref in ("sft", "base") for split in ("heldout", "sft_pairs")
        for name in ("perplexity_ratio", "loss_delta")}
    assert not any(k.startswith("aligned") for k in two)  # align off: exactly today's keys
