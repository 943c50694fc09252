"""The seed-metric table and the self-contained HTML report (plots inline, every seed metric named)."""

from __future__ import annotations

import base64
import json
import math
import re
import sqlite3

import pytest

from lmforge.evaluation.report import (
    LATER,
    MEASURED,
    NOT_MEASURED,
    NOT_RUN,
    SEED_METRICS,
    build_evaluation_report,
    build_seed_table,
    read_serving_results,
)

SEED_NAMES = ("training speed (time per epoch)", "inference speed (requests per second)", "GPU utilisation",
              "precision", "recall", "F1", "pass@1", "memory use", "disk I/O", "network bandwidth", "crash rate",
              "restart count", "error rate", "response time (ms)", "user satisfaction")


def model_metrics():
    m = {}
    for model, score in (("base", 0.1), ("sft", 0.6)):
        m.update({f"{model}.heldout.bits_per_byte": 2.0 - score, f"{model}.sft_pairs.bits_per_byte": 3.0 - score,
                  f"{model}.humaneval.pass_at_1": score / 2, f"{model}.identity.precision": score,
                  f"{model}.identity.recall": score, f"{model}.identity.f1": score,
                  f"{model}.heldout_pairs.exact_match": score / 3, f"{model}.heldout_pairs.token_f1": score,
                  f"{model}.heldout_pairs.token_precision": score, f"{model}.heldout_pairs.token_recall": score})
    return m


OPERATIONS = {
    "metrics": {"ops.pretrain.duration_s": 100.0, "ops.sft.duration_s": 20.0, "ops.pretrain.tokens_per_s": 1200.0,
                "ops.pretrain.cpu_utilization_pct": 95.0, "ops.pretrain.memory_used_mb_max": 3000.0,
                "ops.pretrain.disk_usage_delta_mb": 9.5, "ops.pretrain.disk_mb_per_s": 4.5,
                "ops.pretrain.network_mb_per_s": 70.0, "ops.pretrain.allreduce_busbw_gbps": 3.5,
                "ops.chain.crash_rate": 0.0, "ops.chain.error_rate": 0.25, "ops.chain.restart_count": 1.0},
    "not_measured": {"ops.pretrain.gpu_utilization_pct": "no GPU: the run logged no system/gpu_* metrics",
                     "ops.sft.gpu_utilization_pct": "no GPU: the run logged no system/gpu_* metrics"},
}
CURVES = {"pretrain": [{"step": i, "loss": 8.0 - i / 10, "lr": 1e-3} for i in range(20)],
          "sft": [{"step": i, "loss": 5.0 - i / 20, "lr": 1e-4} for i in range(10)]}


def test_every_seed_metric_has_a_row():
    assert tuple(name for name, _, _ in SEED_METRICS if name != "exact match") == SEED_NAMES


def test_seed_table_statuses_and_reasons():
    metrics = {**model_metrics(), **OPERATIONS["metrics"]}
    rows = {r["seed"]: r for r in build_seed_table(metrics, OPERATIONS["not_measured"])}
    assert rows["pass@1"]["status"] == MEASURED and rows["pass@1"]["values"]["sft.humaneval.pass_at_1"] == 0.3
    assert rows["GPU utilisation"]["status"] == NOT_MEASURED
    assert rows["GPU utilisation"]["note"].startswith("no GPU")
    assert rows["response time (ms)"]["status"] == LATER and "make loadtest" in rows["response time (ms)"]["note"]
    assert rows["user satisfaction"]["status"] == LATER and rows["user satisfaction"]["values"] == {}
    assert "serve --summary" in rows["user satisfaction"]["note"]
    assert rows["error rate"]["status"] == MEASURED and "make loadtest" in rows["error rate"]["note"]
    assert rows["disk I/O"]["status"] == MEASURED and "block-device reads + writes" in rows["disk I/O"]["note"]
    assert rows["disk I/O"]["values"] == {"ops.pretrain.disk_mb_per_s": 4.5, "ops.pretrain.disk_usage_delta_mb": 9.5}
    assert rows["error rate"]["values"] == {"ops.chain.error_rate": 0.25}
    # the all-reduce bus bandwidth (Gbps) is the network row's figure, the interface counters come second
    assert list(rows["network bandwidth"]["values"].items()) == [("ops.pretrain.allreduce_busbw_gbps", 3.5),
                                                                 ("ops.pretrain.network_mb_per_s", 70.0)]
    assert "bus bandwidth in Gbps" in rows["network bandwidth"]["note"]
    with_speed = {r["seed"]: r for r in build_seed_table({"sft.speed.latency_ms_p50": 40.0}, {},
                                                         {"serving.latency_p50_ms": 120.0})}
    assert with_speed["response time (ms)"]["status"] == MEASURED
    assert with_speed["response time (ms)"]["values"] == {"sft.speed.latency_ms_p50": 40.0,
                                                          "serving.latency_p50_ms": 120.0}
    assert rows["training speed (time per epoch)"]["values"] == {"ops.pretrain.tokens_per_s": 1200.0}
    empty = {r["seed"]: r for r in build_seed_table({}, {})}
    assert all(r["status"] in (NOT_MEASURED, NOT_RUN, LATER) and r["note"] for r in empty.values())
    assert empty["pass@1"]["status"] == NOT_RUN and "HumanEval off" in empty["pass@1"]["note"]


def test_serving_results_are_read_when_present(tmp_path):
    load = tmp_path / "serving_load.json"
    load.write_text(json.dumps({"rps": 3.5, "errors": 1, "requests": 10, "latency_ms": {"p50": 120.0, "p95": 300.0}}))
    db = tmp_path / "feedback.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE interactions (id TEXT, rating INTEGER)")
        con.executemany("INSERT INTO interactions VALUES (?, ?)", [("a", 5), ("b", 2), ("c", None)])
    serving = read_serving_results(str(load), str(db))
    assert serving == {"serving.rps": 3.5, "serving.error_rate": 0.1, "serving.latency_p50_ms": 120.0,
                       "serving.latency_p95_ms": 300.0, "serving.rated": 2.0, "serving.mean_rating": 3.5}
    assert read_serving_results(str(tmp_path / "absent.json"), None) == {}
    rows = {r["seed"]: r for r in build_seed_table({}, {}, serving)}
    assert rows["inference speed (requests per second)"]["values"] == {"serving.rps": 3.5}
    assert rows["user satisfaction"]["values"]["serving.mean_rating"] == 3.5


def test_report_has_inline_plots_and_every_seed_metric(tmp_path):
    metrics, table, page = build_evaluation_report(model_metrics(), OPERATIONS, CURVES,
                                                   serving_load=str(tmp_path / "none.json"))
    assert metrics["ops.pretrain.duration_s"] == 100.0 and metrics["sft.identity.f1"] == 0.6
    assert not any(k.startswith("serving.") for k in metrics)  # serving numbers never enter evaluation.json
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 4  # loss curves, two base-vs-SFT bar groups, operations
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    assert "http://" not in page and "https://" not in page and "<script" not in page  # offline, no CDN
    for name in SEED_NAMES:
        assert f"<td>{name.replace('&', '&amp;')}</td>" in page
    assert NOT_MEASURED in page and "no GPU" in page
    assert "ops.pretrain.allreduce_busbw_gbps = 3.5" in page and "bandwidth of the training job" in page
    assert [r["seed"] for r in table] == [name for name, _, _ in SEED_METRICS]


@pytest.mark.parametrize("curves", [{"pretrain": [], "sft": []}, {"pretrain": CURVES["pretrain"], "sft": []}])
def test_report_without_some_inputs_still_renders(curves):
    _, _, page = build_evaluation_report({}, {"metrics": {}, "not_measured": {}}, curves)
    assert "<h2>Seed metrics</h2>" in page
    assert page.count("data:image/png") == (1 if curves["pretrain"] else 0)


def newcomer_run():
    """(model metrics, generations) shaped like the default chain's: held-out perplexity 183.6 -> 207.9."""
    import math

    metrics = {**model_metrics(), "base.heldout.perplexity": 183.6, "sft.heldout.perplexity": 207.9,
               "heldout.loss_delta": math.log(207.9 / 183.6), "heldout.loss_delta_se": 0.011, "heldout_blocks": 64.0,
               "base.sft_pairs.perplexity": 52.0, "sft.sft_pairs.perplexity": 36.4, "sft_pairs.loss_delta": -0.357,
               "sft_pairs.loss_delta_se": 0.02, "sft_examples": 200.0,
               "base.heldout_pairs.token_f1": 0.15, "sft.heldout_pairs.token_f1": 0.1625,
               "base.heldout_pairs.exact_match": 0.0, "sft.heldout_pairs.exact_match": 0.0,
               "sft.speed.peak_memory_mb": 612.0, "sft.speed.memory_growth_mb": 0.0039,
               "sft.speed.latency_ms_p50": 180.0, "sft.speed.latency_ms_p95": 180.0, "sft.speed.latency_timings": 1.0}
    prompts = ("Write a Python function that returns the sum of a list of numbers.", "Who are you?", "你是谁？")
    answers = {"base": ("def sum_list(xs):\n    return sum(xs)", "I am a <b>language</b> model", "我是"),
               "sft": ("l self.geforge … l team.ge��", "forge 0 <script>alert(1)</script>", "我是Forge"),
               "aligned": ("def total(xs):\n    return sum(xs)", "I am Forge, made by the lmforge team.",
                           "我是Forge，由lmforge团队开发。")}
    generations = {model: [{"prompt": p, "completion": a, "new_tokens": 12} for p, a in zip(prompts, texts, strict=True)]
                   for model, texts in answers.items()}
    for model, claims in (("base", (False, False, False, False)), ("sft", (True, False, True, True))):
        generations[f"{model}.identity_probe"] = [
            {"language": "en", "kind": kind, "question": q, "answer": f"{model} answer to {q}", "claims_identity": c}
            for (kind, q), c in zip((("direct", "Who are you?"), ("direct", "Your name?"),
                                     ("foreign", "Are you ChatGPT?"), ("control", "What is 12 times 7?")), claims,
                                    strict=True)]
        generations[f"{model}.heldout_pairs"] = [
            {"id": str(i), "prompt": "p", "reference": "r", "prediction": "x", "exact_match": 0.0,
             "token_f1": f1} for i, f1 in enumerate((0.1, 0.3, 0.0, 0.2) if model == "base" else (0.3, 0.1, 0.2, 0.05))]
    return metrics, generations


def test_report_shows_verdicts_samples_and_the_gate(tmp_path):
    model, generations = newcomer_run()
    metrics, _, page = build_evaluation_report(model, OPERATIONS, CURVES, generations=generations,
                                               serving_load=str(tmp_path / "none.json"))
    # verdicts: the held-out regression is red, the instruction improvement green, the pairs within noise
    assert re.search(r"<tr class='worse'><td>heldout\.perplexity</td><td>lower</td>", page)
    assert re.search(r"<tr class='better'><td>sft_pairs\.perplexity</td>", page)
    assert re.search(r"<tr class='noise'><td>heldout_pairs\.token_f1</td>", page)
    assert "worse</b> (heldout.perplexity, heldout.bits_per_byte)" not in page  # bpb has no bytes here: no verdict
    assert "1 worse</b> (heldout.perplexity)" in page and "paired bootstrap" in page and "2 SE" in page
    assert metrics["verdict.heldout.perplexity"] == -1.0 and metrics["verdict.sft_pairs.perplexity"] == 1.0
    assert metrics["heldout.loss_delta_se"] == 0.011  # the existing names are unchanged, verdicts are new keys
    # samples: every model a column (an aligned model slots in), model text escaped
    assert "<th>base</th><th>sft</th><th>aligned</th>" in page
    assert "<script>" not in page and "forge 0 &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "I am a &lt;b&gt;language&lt;/b&gt; model" in page and "我是Forge" in page
    assert "l self.geforge … l team.ge" in page
    assert "What is 12 times 7?" in page and "claims the identity" in page and "base 0/4, sft 3/4" in page
    blank = {**generations, "sft": [{**r, "completion": "      "} for r in generations["sft"]]}
    blank["base"] = [{**r, "completion": ""} for r in generations["base"]]
    _, _, page = build_evaluation_report(model, OPERATIONS, CURVES, generations=blank)
    assert "only whitespace: &#x27;      &#x27;" in page and "(empty)" in page  # a blank answer does not look blank
    # the gate: where it is decided and recorded, and why this stage does not read its bounds
    gate = page.split("<h2>Quality gate</h2>")[1].split("<h2>")[0]
    assert "packaging.json" in gate and "gate.&lt;metric&gt;.&lt;min|max&gt;.value" in gate and "reruns packaging alone" in gate
    # the odd values explained
    assert "model weights included" in page and "with one batch p50 = p95" in page
    assert "without the first, which is always 0" in page


def test_report_without_generations_says_so():
    _, _, page = build_evaluation_report(model_metrics(), OPERATIONS, CURVES)
    assert "No sample generations" in page and "<h2>Verdicts: SFT against base</h2>" in page


def test_report_shows_the_per_language_scores_and_every_translation():
    model = model_metrics()
    for name, (bpb, chrf, recall) in {"base": (3.1, 12.0, 0.0), "sft": (2.4, 31.5, 0.8)}.items():
        model.update({f"{name}.heldout.by_language.zh.bits_per_byte": bpb, f"{name}.heldout.by_language.zh.bytes": 900.0,
                      f"{name}.heldout.by_language.zh.documents": 3.0,
                      f"{name}.heldout.by_language.code.bits_per_byte": 1.5,
                      f"{name}.translation.en_zh.chrf": chrf, f"{name}.translation.en_zh.bleu": chrf / 2,
                      f"{name}.translation.en_zh.pairs": 1.0, f"{name}.translation.ja_en.chrf": chrf / 3,
                      f"{name}.identity.by_language.zh.recall": recall, f"{name}.identity.by_language.en.recall": 0.5})
    record = {"direction": "en_zh", "pair_id": "p1", "prompt": "Translate: <Save>", "reference": "保存",
              "chrf": 100.0}
    generations = {"base.translation": [{**record, "hypothesis": "Save <b>", "chrf": 3.0}],
                   "sft.translation": [{**record, "hypothesis": "保存"}]}
    metrics, _, page = build_evaluation_report(model, OPERATIONS, CURVES, generations=generations)
    section = page.split("<h2>Per language</h2>")[1].split("<h2>")[0]
    assert "<tr><td>zh</td><td class='num'>3.1</td><td class='num'>2.4</td><td class='num'>-0.7</td>" in section
    assert "<tr><td>code</td>" in section
    assert "<td>en &rarr; zh</td><td class='num'>12.0</td><td class='num'>31.5</td><td class='num'>+19.5</td>" in section
    assert "<td>ja &rarr; en</td>" in section and "<td>zh</td></tr>" in section  # en->zh BLEU on the zh tokenizer
    identity = section.split("Identity probe per language")[1]
    assert "<tr><td>zh</td>" + "<td class='num'>&mdash;</td>" * 3 + ("<td class='num'>0.00</td><td class='num'>0.80"
                                                                      "</td><td class='num'>+0.80</td>") in identity
    assert "1 translated pairs" in section and "Save &lt;b&gt;" in section and "Translate: &lt;Save&gt;" in section
    assert metrics["sft.translation.en_zh.chrf"] == 31.5  # the flat keys reach evaluation.json (and MLflow)
    _, _, bare = build_evaluation_report(model_metrics(), OPERATIONS, CURVES)
    assert "No per-language held-out scores" in bare and "No translation scores" in bare


ALIGN_METRICS = {"enabled": True, "method": "dpo", "rounds": 2, "pairs_sha256": "ab12cd",
                 "heldout": {"preference_accuracy": 0.75}, "win_rate.vs_sft": 0.625}
"""align.json as the align stage writes it (nested or dotted keys: both are read)."""


def test_report_with_an_aligned_model_shows_a_third_column_its_verdicts_and_the_align_stage():
    model, generations = newcomer_run()
    aligned = {k.replace("sft.", "aligned.", 1): v * 0.9 for k, v in model.items() if k.startswith("sft.")}
    model.update(aligned, **{"aligned.heldout.by_language.zh.bits_per_byte": 2.0, "aligned_vs_sft.heldout.loss_delta":
                             math.log(0.9), "aligned_vs_sft.heldout.loss_delta_se": 0.01})
    for name, bpb in (("base", 3.0), ("sft", 2.5)):
        model[f"{name}.heldout.by_language.zh.bits_per_byte"] = bpb
    generations["aligned.heldout_pairs"] = generations["sft.heldout_pairs"]
    curves = {**CURVES, "align": [{"step": i, "loss": 0.69 - i / 50, "lr": 1e-5} for i in range(8)]}

    metrics, _, page = build_evaluation_report(model, OPERATIONS, curves, generations=generations,
                                               align_metrics=ALIGN_METRICS)

    assert "<h2>Verdicts: SFT against base</h2>" in page and "<h2>Verdicts: aligned against SFT</h2>" in page
    section = page.split("<h2>Verdicts: aligned against SFT</h2>")[1].split("<h2>")[0]
    assert "<th>SFT</th><th>aligned</th><th>difference (aligned &minus; SFT)</th>" in section
    assert re.search(r"<tr class='better'><td>heldout\.perplexity</td>", section)  # 0.9 x SFT's, 10 SE away
    assert metrics["verdict.aligned_vs_sft.heldout.perplexity"] == 1.0
    assert metrics["verdict.heldout.perplexity"] == -1.0  # SFT against base unchanged
    assert "verdict.aligned_vs_sft.heldout_pairs.token_f1" in metrics  # per-pair records: a noise estimate
    align = page.split("<h2>Align stage</h2>")[1].split("<h2>")[0]
    for cell in ("<td class='num'>dpo</td>", "<td class='num'>0.75</td>", "<td class='num'>0.625</td>",
                 "<td class='num'>ab12cd</td>", "<td class='num'>2</td>"):
        assert cell in align, cell
    languages = page.split("<h2>Per language</h2>")[1].split("<h2>")[0]
    assert ("<tr><td>zh</td><td class='num'>3</td><td class='num'>2.5</td><td class='num'>2</td>"
            "<td class='num'>-0.5</td><td class='num'>-0.5</td>") in languages
    assert "<h2>Base vs SFT vs aligned</h2>" in page and page.count("data:image/png;base64,") >= 5


def test_report_with_align_off_is_the_two_model_report_and_says_why():
    model, generations = newcomer_run()
    off = {"enabled": False, "method": "dpo"}
    metrics, _, page = build_evaluation_report(model, OPERATIONS, CURVES, generations=generations, align_metrics=off)
    _, _, without = build_evaluation_report(model, OPERATIONS, CURVES, generations=generations)
    assert not any(k.startswith(("aligned", "verdict.aligned")) for k in metrics)
    assert "Verdicts: aligned against SFT" not in page and "<h2>Base vs SFT</h2>" in page
    assert "align.enabled: false" in page.split("<h2>Align stage</h2>")[1].split("<h2>")[0]
    assert "<h2>Align stage</h2>" not in without  # no align stage in the chain at all: no section
