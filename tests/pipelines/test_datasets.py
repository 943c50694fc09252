"""lmforge's Kedro datasets: JSON lines, atomic directory artifacts, metrics mirrored into MLflow."""

from __future__ import annotations

import json

import pytest
from kedro.io import DatasetError
from mlflow_helpers import isolated_run

from lmforge.pipelines.datasets import ArtifactDirectory, JSONLinesDataset, MetricsDataset


def test_jsonlines_round_trip(tmp_path):
    path = tmp_path / "nested/records.jsonl"
    records = [{"id": "a", "text": "héllo\nworld"}, {"id": "b", "tags": [1, 2], "meta": {"x": None}}]
    dataset = JSONLinesDataset(str(path))

    assert not dataset.exists()
    dataset.save(records)

    assert dataset.exists()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert "héllo" in path.read_text(encoding="utf-8")  # not \u-escaped
    assert dataset.load() == records
    assert not path.with_name("records.jsonl.tmp").exists()


def test_jsonlines_skips_blank_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")

    assert JSONLinesDataset(str(path)).load() == [{"a": 1}, {"a": 2}]


def test_jsonlines_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,\n{"a": 3}\n', encoding="utf-8")

    with pytest.raises(DatasetError, match=f"{path}:3: malformed JSON line"):
        JSONLinesDataset(str(path)).load()


def make_dir(path, files):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_artifact_directory_save_moves_staging_into_place(tmp_path):
    staging = make_dir(tmp_path / "staging/tok", {"tokenizer.model": "m", "tokenizer.json": "{}"})
    target = tmp_path / "data/06_models/tokenizer"
    dataset = ArtifactDirectory(str(target))

    assert not dataset.exists()
    dataset.save(str(staging))

    assert sorted(p.name for p in target.iterdir()) == ["tokenizer.json", "tokenizer.model"]
    assert not staging.exists()
    assert [p.name for p in target.parent.iterdir()] == ["tokenizer"]  # no staging leftovers
    assert dataset.load() == str(target.resolve())


def test_artifact_directory_save_replaces_an_existing_directory(tmp_path):
    target = make_dir(tmp_path / "models/pretrain", {"old.bin": "old", "config.json": "old"})
    new = make_dir(tmp_path / "run/export", {"config.json": "new"})

    ArtifactDirectory(str(target)).save(str(new))

    assert [p.name for p in target.iterdir()] == ["config.json"]
    assert (target / "config.json").read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["pretrain"]


def test_artifact_directory_save_of_itself_is_a_no_op(tmp_path):
    target = make_dir(tmp_path / "ckpt", {"a": "1"})

    ArtifactDirectory(str(target)).save(str(target))

    assert (target / "a").read_text() == "1"


def test_artifact_directory_save_rejects_a_file(tmp_path):
    source = tmp_path / "file.txt"
    source.write_text("x")

    with pytest.raises(DatasetError, match="not a directory"):
        ArtifactDirectory(str(tmp_path / "target")).save(str(source))


@pytest.mark.parametrize("empty", [False, True])
def test_artifact_directory_load_of_missing_or_empty_dir_raises(tmp_path, empty):
    target = tmp_path / "missing"
    if empty:
        target.mkdir()

    with pytest.raises(DatasetError, match="does not exist or is empty"):
        ArtifactDirectory(str(target)).load()


def test_metrics_dataset_writes_sorted_json_without_a_run(tmp_path):
    path = tmp_path / "reporting/stage.json"
    dataset = MetricsDataset(str(path), prefix="stage")
    metrics = {"z": 1, "a": {"b": 2.5}, "note": "text"}

    dataset.save(metrics)

    assert json.loads(path.read_text()) == metrics
    assert list(json.loads(path.read_text())) == ["a", "note", "z"]
    assert dataset.load() == metrics


def test_metrics_dataset_logs_prefixed_metrics_to_the_active_run(tmp_path, mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    with isolated_run(mlflow_tracking_uri, "test-metrics-dataset") as run:
        MetricsDataset(str(tmp_path / "tokenizer.json"), prefix="tokenizer").save(
            {"vocab_size": 400, "split": {"train_blocks": 12}, "ok": True, "sha256": "abc"})
    logged = MlflowClient(mlflow_tracking_uri).get_run(run.info.run_id).data.metrics

    assert logged == {"tokenizer.vocab_size": 400.0, "tokenizer.split.train_blocks": 12.0, "tokenizer.ok": 1.0}


def test_metrics_dataset_summary_is_what_mlflow_shows_beside_the_per_step_curves(tmp_path, mlflow_tracking_uri):
    """A training run's per-step metrics (as the training loop names them), then the stage's summary saved
    through the catalog: for every key of the metrics file, MLflow's latest value is the file's."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lmforge.tracking import metric_mismatches
    from lmforge.training.throughput import step_metrics_for_mlflow

    summary = {"tokens_per_s": 3195.0, "mfu_cpu_measured_peak": 0.41, "peak_rss_mb": 812.0, "final_loss": 2.5,
               "steps": 3, "device": "cpu"}
    with isolated_run(mlflow_tracking_uri, "test-metrics-dataset-steps") as run:
        for step in range(3):
            record = {"step": step, "loss": 3.0 - step * 0.2, "tokens_per_s": 2924.9 + step,
                      "mfu_cpu_measured_peak": 0.3, "peak_rss_mb": 800.0 + step}
            mlflow.log_metrics(step_metrics_for_mlflow(record, "pretrain"), step=step)
        MetricsDataset(str(tmp_path / "pretrain.json"), prefix="pretrain").save(summary)

    client = MlflowClient(mlflow_tracking_uri)
    assert metric_mismatches(client, run.info.run_id, summary, "pretrain") == []
    assert len(client.get_metric_history(run.info.run_id, "pretrain.step.tokens_per_s")) == 3
    assert len(client.get_metric_history(run.info.run_id, "pretrain.loss")) == 3


def test_metrics_of_a_skipped_stage_load_empty_only_when_allowed(tmp_path):
    absent = str(tmp_path / "tokenizer.json")
    optional = MetricsDataset(absent, prefix="tokenizer", missing_ok=True)
    assert optional.load() == {} and not optional.exists()
    with pytest.raises(DatasetError):
        MetricsDataset(absent, prefix="tokenizer").load()
