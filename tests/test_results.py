"""python -m lmforge.results: the artifacts and metrics files it lists are the catalog's, the stages the registry's."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.pipeline_registry import CHAIN
from lmforge.pipelines.catalog_paths import catalog_path
from lmforge.results import ARTIFACTS, HEADLINES, catalog_locations, main, summarize

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_artifact_list_equals_the_catalog_entries_it_names():
    artifacts, metrics = catalog_locations(PROJECT_ROOT, CHAIN)
    assert list(artifacts) == list(ARTIFACTS)
    for label, entry in ARTIFACTS.items():
        dataset, _, inside = entry.partition("/")
        assert artifacts[label] == "/".join(p for p in (catalog_path(dataset, PROJECT_ROOT), inside) if p)
    assert metrics == {stage: catalog_path(f"{stage}_metrics", PROJECT_ROOT) for stage in CHAIN}
    # what the command printed before the paths came from the catalog
    assert artifacts["data docs"] == "data/08_reporting/data_docs/index.html"
    assert artifacts["packaged model"] == "data/07_model_output/lmforge-chat"
    assert metrics["evaluation"] == "data/08_reporting/evaluation.json"
    assert set(HEADLINES) == set(CHAIN)


def test_summary_marks_missing_artifacts_and_shows_headlines(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tokenizer.json").write_text(json.dumps({"vocab_size": 400, "bytes_per_token": 3.14159}))
    text = summarize(tmp_path, {"tokenizer": "tok", "shards": "m"}, {"tokenizer": "m/tokenizer.json",
                                                                     "sft": "m/sft.json"}, ["tokenizer", "sft"])
    assert "tok   (missing)" in text and "  shards               m\n" in text
    assert "vocab_size=400, bytes_per_token=3.142" in text
    assert "(no metrics: run `dvc repro sft`)" in text
    (tmp_path / "m" / "pretrain.json").write_text(json.dumps({"final_loss": 2.5, "network": {
        "allreduce_busbw_gbps": 3.25, "allreduce_by_size": {}}}))
    text = summarize(tmp_path, {}, {"pretrain": "m/pretrain.json"}, ["pretrain"])
    assert "final_loss=2.5, network.allreduce_busbw_gbps=3.25" in text  # the job's all-reduce bus bandwidth, Gbps


def test_command_reads_the_project(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    main(["--project", str(PROJECT_ROOT)])
    out = capsys.readouterr().out
    assert "packaged model       data/07_model_output/lmforge-chat" in out
    assert all(f"  {stage:<16}" in out for stage in CHAIN)
