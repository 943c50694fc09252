"""The seed-metric table and the self-contained HTML report (plots inline, every seed metric named)."""

from __future__ import annotations

import base64
import json
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
                "ops.pretrain.network_mb_per_s": 70.0,
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
    assert [r["seed"] for r in table] == [name for name, _, _ in SEED_METRICS]


@pytest.mark.parametrize("curves", [{"pretrain": [], "sft": []}, {"pretrain": CURVES["pretrain"], "sft": []}])
def test_report_without_some_inputs_still_renders(curves):
    _, _, page = build_evaluation_report({}, {"metrics": {}, "not_measured": {}}, curves)
    assert "<h2>Seed metrics</h2>" in page
    assert page.count("data:image/png") == (1 if curves["pretrain"] else 0)
