"""Quantized GGUF packages scored like every model of the stage: the f32 file scores the full-precision package's
bits per byte (the loader path is exact), fewer bits cost more, per-language keys, budgets, the disabled path."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmforge.config import build_dataclass
from lmforge.evaluation.config import EvaluationConfig
from lmforge.evaluation.heldout import HeldoutSources
from lmforge.evaluation.html_tables import QUANTIZATION_REFERENCE, quantization_html
from lmforge.evaluation.quantization import (
    MANIFEST,
    REFERENCE,
    load_gguf_model,
    quantization_metrics,
    quantize_and_score,
    score_formats,
)

GROUPS = ("en", "zh", "ja", "code")


def _config(**quantization) -> EvaluationConfig:
    return build_dataclass(EvaluationConfig, {
        "batch_size": 16, "max_heldout_blocks": 4, "by_language": {"max_chars": 200, "seq_len": 64},
        "quantization": quantization, "report": {"serving_load": None, "serving_feedback": None}}, path="evaluation")


@pytest.fixture(scope="module")
def sources(chain_tokenizer_dir, chain_token_shards, chain_documents) -> HeldoutSources:
    records = [r for shard in chain_documents.values() for r in shard]
    return HeldoutSources(stage_tokenizer=chain_tokenizer_dir, token_shards=chain_token_shards, seq_len=64,
                          validation_texts=lambda: (r["text"] for r in records),
                          validation_documents=lambda: iter(records))


@pytest.fixture(scope="module")
def scored(engine_package, sources) -> tuple[dict, dict]:
    """Every GGUF format of the engine's package scored on the chain's held-out text, and the flat metrics."""
    hf_dir, gguf = engine_package
    config = _config()
    scores = score_formats(hf_dir, {fmt: f.path for fmt, f in gguf.items()}, sources, config)
    return scores, quantization_metrics(scores, {fmt: f.bytes for fmt, f in gguf.items()},
                                        config.quantization.budgets_pct)


def test_the_f32_gguf_scores_exactly_the_full_precision_package(scored):
    """transformers dequantizes what the GGUF file stores: for f32 that is the package's own weights, so every number
    must be the package's (a wrong tensor name, Q/K permutation or untied head would move it by whole bits)."""
    scores, metrics = scored
    assert metrics["quantization.f32.bpb"] == pytest.approx(metrics["quantization.reference.bpb"], rel=1e-6, abs=0)
    assert abs(metrics["quantization.f32.bpb_delta_pct"]) < 1e-4
    assert scores["f32"]["tokens"] == scores["reference"]["tokens"] > 0  # the same held-out tokens
    for group in GROUPS:
        assert metrics[f"quantization.f32.by_language.{group}.bpb"] == pytest.approx(
            metrics[f"quantization.reference.by_language.{group}.bpb"], rel=1e-6, abs=0)


def test_fewer_bits_cost_more_and_every_language_is_scored(scored, engine_package):
    """Per format and language: bytes, bpb and its change. The weights' rounding error grows as bits shrink, so the
    logits move further from full precision f32 < f16 < q8_0 < q4_k_m (on any model, random or trained), and the
    bits-per-byte change of q8_0 is small. |change q4_k_m| > |change q8_0| holds when the rounding error, not the
    sign of a first-order effect, dominates: on this random model a q4_k_m change could in principle cancel by
    chance (seeded: it does not), which would fail the test without a bug."""
    scores, metrics = scored
    hf_dir, gguf = engine_package
    formats = [f for f in ("f32", "f16", "q8_0", "q4_k_m") if f in gguf]
    for fmt in formats:
        for key in ("bytes", "bpb", "bpb_delta_pct"):
            assert math.isfinite(metrics[f"quantization.{fmt}.{key}"])
        for group in GROUPS:
            assert math.isfinite(metrics[f"quantization.{fmt}.by_language.{group}.bpb_delta_pct"])
    sizes = [metrics[f"quantization.{fmt}.bytes"] for fmt in formats]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 3 * sizes[-1]
    assert abs(metrics["quantization.q8_0.bpb_delta_pct"]) < 0.5
    assert metrics["quantization.q8_0.within_budget"] == 1.0 and metrics["quantization.q8_0.budget_pct"] == 1.0
    if "q4_k_m" in gguf:
        assert abs(metrics["quantization.q4_k_m.bpb_delta_pct"]) > abs(metrics["quantization.q8_0.bpb_delta_pct"])

    from transformers import AutoModelForCausalLM

    ids = torch.arange(1, 65).unsqueeze(0)  # (1, 64)
    with torch.inference_mode():
        reference = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)(input_ids=ids).logits
        errors = [float((load_gguf_model(gguf[fmt].path)(input_ids=ids).logits - reference).abs().max())
                  for fmt in formats]
    assert errors[0] < 1e-4 and all(a < b for a, b in zip(errors, errors[1:], strict=False))


def test_metrics_deltas_and_budgets_from_scores():
    def s(bpb, **groups):
        return {"bits_per_byte": bpb, "by_language": {g: {"bits_per_byte": v} for g, v in groups.items()}}

    scores = {"reference": s(2.0, en=1.0, zh=4.0), "q8_0": s(2.01, en=1.02, zh=4.0), "q4_k_m": s(2.2, en=1.0)}
    metrics = quantization_metrics(scores, {"reference": 400, "q8_0": 100, "q4_k_m": 60}, {"q8_0": 1.0, "q4_k_m": 5.0})
    assert metrics["quantization.q8_0.bpb_delta_pct"] == pytest.approx(0.5)
    assert metrics["quantization.q8_0.by_language.en.bpb_delta_pct"] == pytest.approx(2.0)  # over budget, total not
    assert metrics["quantization.q8_0.within_budget"] == 1.0
    assert metrics["quantization.q4_k_m.bpb_delta_pct"] == pytest.approx(10.0)
    assert metrics["quantization.q4_k_m.within_budget"] == 0.0
    assert "quantization.q4_k_m.by_language.zh.bpb" not in metrics  # a group the format was not scored on: absent
    assert metrics["quantization.reference.bytes"] == 400.0 and "quantization.reference.bpb_delta_pct" not in metrics
    page = quantization_html(metrics)
    assert page.count("<td class='measured'>pass</td>") == 1 and page.count("<td class='not'>fail</td>") == 1
    assert "+10.000%" in page and "1.0200 (+2.000%)" in page
    assert "No quantized packages" in quantization_html({"sft.heldout.bits_per_byte": 2.0})
    assert QUANTIZATION_REFERENCE == REFERENCE  # the report's copy of the name (no import: it would close a cycle)


def test_disabled_writes_only_the_manifest(tmp_path, sources):
    out = tmp_path / "gguf"
    assert quantize_and_score("absent-model", sources, _config(enabled=False), out) == {}
    assert [p.name for p in out.iterdir()] == [MANIFEST]
    assert json.loads((out / MANIFEST).read_text()) == {"enabled": False, "formats": {}}
