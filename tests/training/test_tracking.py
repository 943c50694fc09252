"""lmforge.tracking: flat metric names, per-step logging into a real MLflow run, git and DVC lineage."""

from __future__ import annotations

import subprocess

import pytest
from mlflow_helpers import isolated_run, isolated_store, migrated_store

from lmforge.step_logging import StepLogger
from lmforge.tracking import dvc_hashes, flatten, git_state


def test_flatten_nested_numeric_leaves():
    metrics = {"loss": 1.5, "eval": {"ppl": 3, "split": {"n": 2}}, "ok": True, "name": "x", "nan": float("nan"),
               "curve": [1, 2]}

    assert flatten(metrics) == {"loss": 1.5, "eval.ppl": 3.0, "eval.split.n": 2.0, "ok": 1.0}
    assert flatten({"a": {"b": 1}}, prefix="stage", sep="/") == {"stage/a/b": 1.0}


def test_step_logger_without_a_run_is_disabled(monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    logger = StepLogger()
    logger.log({"x": 1.0}, step=0)
    logger.flush()

    assert not logger.enabled


def test_step_logger_writes_metric_history_into_an_existing_run(mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_tracking_uri)
    experiment_id = client.create_experiment("test-step-logger")
    run_id = client.create_run(experiment_id).info.run_id
    losses = [4.0, 3.5, 3.25, 3.0, 2.9]

    logger = StepLogger(run_id=run_id, tracking_uri=mlflow_tracking_uri, flush_every=2)
    logger.log_params({f"p{i}": i for i in range(150)})  # more than one 100-param batch
    for step, loss in enumerate(losses):
        logger.log({"pretrain.loss": loss, "pretrain.lr": 0.1 * (step + 1)}, step)
    logger.flush()

    history = sorted(client.get_metric_history(run_id, "pretrain.loss"), key=lambda m: m.step)
    assert logger.enabled
    assert [m.step for m in history] == list(range(len(losses)))
    assert [m.value for m in history] == losses
    assert len(client.get_metric_history(run_id, "pretrain.lr")) == len(losses)
    run = client.get_run(run_id)
    assert run.data.params["p149"] == "149"
    assert run.info.status == "RUNNING"  # the logger never ends the run it writes into


def test_step_logger_reads_the_run_from_the_environment(monkeypatch, mlflow_tracking_uri):
    monkeypatch.setenv("MLFLOW_RUN_ID", "run-from-env")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking_uri)

    logger = StepLogger()

    assert logger.enabled
    assert (logger.run_id, logger.tracking_uri) == ("run-from-env", mlflow_tracking_uri)


DVC_LOCK = """\
schema: '2.0'
stages:
  data_processing:
    cmd: kedro run --pipelines data_processing
    outs:
    - path: data/03_primary/documents
      hash: md5
      md5: 1111.dir
      size: 10
      nfiles: 2
  tokenizer:
    cmd: kedro run --pipelines tokenizer
    outs:
    - path: data/06_models/tokenizer
      hash: md5
      md5: 2222.dir
    - path: data/08_reporting/tokenizer.json
      hash: md5
      md5: '3333'
"""


def test_dvc_hashes_reads_dvc_lock(tmp_path):
    (tmp_path / "dvc.lock").write_text(DVC_LOCK)
    paths = {
        "tokenizer": "data/06_models/tokenizer",
        "clean_documents": str(tmp_path / "data/03_primary/documents/shard-00000.jsonl"),  # absolute, inside
        "tokenizer_metrics": "data/08_reporting/tokenizer.json",
        "lookalike": "data/06_models/tokenizer_v2",
        "unknown": "data/01_raw/corpus",
    }

    tags = dvc_hashes(tmp_path, paths)

    assert tags == {
        "dvc.tokenizer": "data/06_models/tokenizer:2222.dir",
        "dvc.clean_documents": "data/03_primary/documents:1111.dir",
        "dvc.tokenizer_metrics": "data/08_reporting/tokenizer.json:3333",
    }


def test_dvc_hashes_without_a_lock_file_is_empty(tmp_path):
    assert dvc_hashes(tmp_path, {"tokenizer": "data/06_models/tokenizer"}) == {}


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def git_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_git_state_clean_then_dirty(git_repo):
    clean = git_state(git_repo)
    (git_repo / "untracked.txt").write_text("ignored by the dirty check\n")
    still_clean = git_state(git_repo)
    (git_repo / "a.txt").write_text("two\n")
    dirty = git_state(git_repo)

    assert clean == {"git.commit": git(git_repo, "rev-parse", "HEAD"), "git.dirty": "false"}
    assert len(clean["git.commit"]) == 40
    assert still_clean["git.dirty"] == "false"
    assert dirty == {"git.commit": clean["git.commit"], "git.dirty": "true"}


def test_git_state_outside_a_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()

    assert git_state(plain) == {"git.commit": "unknown", "git.dirty": "false"}


def test_log_config_adds_the_resolved_defaults_and_keeps_logged_keys(tmp_path):
    import mlflow

    from lmforge.tracking import log_config
    from lmforge.training.config import TrainArgs

    with isolated_run(migrated_store(tmp_path / "mlflow.db")) as run:
        mlflow.log_param("pretrain.train.max_steps", "7")  # what kedro-mlflow logs from the YAML
        logged = log_config(TrainArgs(max_steps=7), "pretrain.train")
        params = mlflow.get_run(run.info.run_id).data.params

    assert "pretrain.train.max_steps" not in logged
    assert params["pretrain.train.max_steps"] == "7"
    assert params["pretrain.train.lr"] == "0.001"
    assert params["pretrain.train.betas"] == "[0.9, 0.95]"


def summary_of_a_run(history: list[dict], mfu_name: str = "mfu_cpu_measured_peak") -> dict:
    """``loop.summarize`` over a literal history, as the training job returns it (world size 2)."""
    from types import SimpleNamespace

    from lmforge.training.config import TrainArgs
    from lmforge.training.loop import summarize

    spec = SimpleNamespace(train=TrainArgs(max_steps=len(history)), metric_prefix="pretrain", output_dir="out",
                           deepspeed={"zero_optimization": {"stage": 2}})
    meter = SimpleNamespace(device="cpu", peak=1.0e10, mfu_name=mfu_name)
    state = {"tokens": 3000, "flops": 6.0e11, "skipped_steps": 0}
    return summarize(spec, history, state, elapsed=1.0, checkpoint_time=0.0, world_size=2, n_params=10,
                     meter=meter, restart_count=0, epoch_size=8)


def step_record(step: int, memory_name: str = "peak_rss_mb") -> dict:
    """Every key a training step records (loop.train): loss/lr/grad norm, throughput, memory, GPU sample."""
    return {"step": step, "loss": 4.0 - step, "lr": 1e-3, "grad_norm": float("nan") if step == 0 else 1.0,
            "tokens_per_s": 2900.0 + step, "tokens_per_s_per_device": 1450.0, "step_time_s": 0.5,
            "mfu_cpu_measured_peak": 0.3, "mfu": 0.3, memory_name: 100.0 + step, "gpu_utilization_pct": 90.0,
            "gpu_memory_used_mb": 1000.0}


@pytest.mark.parametrize(("memory_name", "mfu_name"), [("peak_rss_mb", "mfu_cpu_measured_peak"),
                                                         ("gpu_max_allocated_mb", "mfu")])
def test_per_step_names_never_collide_with_the_summary(memory_name, mfu_name):
    """A per-step metric under a summary's name would hide the summary in MLflow (it shows the last step)."""
    from lmforge.tracking import flatten
    from lmforge.training.throughput import step_metrics_for_mlflow

    history = [step_record(step, memory_name) for step in range(3)]
    summary = flatten({k: v for k, v in summary_of_a_run(history, mfu_name).items() if k != "history"}, "pretrain")
    per_step = set().union(*(step_metrics_for_mlflow(record, "pretrain") for record in history))

    assert not per_step & set(summary), per_step & set(summary)
    assert {"pretrain.tokens_per_s", f"pretrain.{mfu_name}", f"pretrain.{memory_name}"} <= set(summary)
    assert {"pretrain.loss", "pretrain.lr", "pretrain.grad_norm", "pretrain.step.tokens_per_s",
            f"pretrain.step.{mfu_name}", f"pretrain.step.{memory_name}", "pretrain.step.step_time_s"} <= per_step
    assert "pretrain.grad_norm" not in step_metrics_for_mlflow(history[0], "pretrain")  # NaN: left out


def test_mlflow_shows_the_summary_after_the_per_step_curves(mlflow_tracking_uri):
    """The training job's per-step metrics, then the stage's summary (MetricsDataset logs it at step 0):
    the value MLflow shows for every summary key is the summary's, and the per-step curves are kept."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lmforge.tracking import log_metrics, metric_mismatches
    from lmforge.training.throughput import step_metrics_for_mlflow

    client = MlflowClient(mlflow_tracking_uri)
    experiment_id = client.create_experiment("test-one-number")
    run_id = client.create_run(experiment_id).info.run_id
    history = [step_record(step) for step in range(4)]
    logger = StepLogger(run_id=run_id, tracking_uri=mlflow_tracking_uri)
    for record in history:
        logger.log(step_metrics_for_mlflow(record, "pretrain"), record["step"])
    logger.flush()
    summary = {k: v for k, v in summary_of_a_run(history).items() if k != "history"}

    with isolated_store(mlflow_tracking_uri), mlflow.start_run(run_id=run_id):
        log_metrics(summary, prefix="pretrain")  # what MetricsDataset.save does

    assert metric_mismatches(client, run_id, summary, "pretrain") == []
    assert client.get_run(run_id).data.metrics["pretrain.tokens_per_s"] == summary["tokens_per_s"] == 3000.0
    assert [m.value for m in client.get_metric_history(run_id, "pretrain.step.tokens_per_s")] == [
        2900.0, 2901.0, 2902.0, 2903.0]
    assert len(client.get_metric_history(run_id, "pretrain.loss")) == 4


def test_metric_mismatches_names_a_summary_hidden_by_a_later_step(mlflow_tracking_uri):
    """The bug this guards against: the summary logged at step 0 under a per-step metric's name."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from lmforge.tracking import metric_mismatches

    client = MlflowClient(mlflow_tracking_uri)
    run_id = client.create_run(client.create_experiment("test-mismatch")).info.run_id
    client.log_batch(run_id, metrics=[Metric("pretrain.tokens_per_s", 2924.9, 0, 29),
                                      Metric("pretrain.tokens_per_s", 3195.0, 1, 0),
                                      Metric("pretrain.steps", 30.0, 1, 0)])

    problems = metric_mismatches(client, run_id, {"tokens_per_s": 3195, "steps": 30, "loss_of": {"x": 1.0},
                                                  "device": "cpu"}, "pretrain")

    assert problems == ["pretrain.loss_of.x: 1.0 in the metrics file, not a metric of run " + run_id,
                        "pretrain.tokens_per_s: MLflow shows 2924.9, the metrics file 3195.0"]
    assert metric_mismatches(client, run_id, {"steps": 30.000000000001}, "pretrain") == []  # formatting only
    client.log_metric(run_id, "pretrain.ratio", float("inf"))  # stored as the largest float
    assert metric_mismatches(client, run_id, {"ratio": float("inf")}, "pretrain") == []


def test_lineage_tags_keep_one_run_id_and_mark_a_training_experiment(tmp_path):
    """kedro-mlflow copies Kedro's session id (a timestamp) as a ``run_id`` tag; the lineage hook moves it to
    ``kedro.session_id`` and tags the experiment ``mlflow.experimentKind=custom_model_development``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lmforge.tracking import mark_training_experiment, set_lineage_tags

    uri = migrated_store(tmp_path / "mlflow.db")
    with isolated_run(uri, "test-lineage") as run:
        mlflow.set_tags({"run_id": "2026-12-02T06.00.00.000Z", "env": "base"})  # what kedro-mlflow sets
        set_lineage_tags(tmp_path, {}, pipelines=["pretrain"], session_id="2026-12-02T06.00.00.000Z")
        mark_training_experiment()
        mark_training_experiment()  # idempotent

    client = MlflowClient(uri)
    tags = client.get_run(run.info.run_id).data.tags
    assert "run_id" not in tags
    assert tags["kedro.session_id"] == "2026-12-02T06.00.00.000Z" and tags["lmforge.pipelines"] == "pretrain"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_training_view_url_opens_the_runs_in_the_model_training_view():
    from lmforge.tracking import training_view_url

    assert training_view_url("http://127.0.0.1:5000/", "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning")
