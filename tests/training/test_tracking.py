"""lmforge.tracking: flat metric names, per-step logging into a real MLflow run, git and DVC lineage."""

from __future__ import annotations

import subprocess

import pytest
from mlflow_helpers import isolated_run

from lmforge.tracking import StepLogger, dvc_hashes, flatten, git_state


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

    with isolated_run(f"sqlite:///{tmp_path}/mlflow.db") as run:
        mlflow.log_param("pretrain.train.max_steps", "7")  # what kedro-mlflow logs from the YAML
        logged = log_config(TrainArgs(max_steps=7), "pretrain.train")
        params = mlflow.get_run(run.info.run_id).data.params

    assert "pretrain.train.max_steps" not in logged
    assert params["pretrain.train.max_steps"] == "7"
    assert params["pretrain.train.lr"] == "0.001"
    assert params["pretrain.train.betas"] == "[0.9, 0.95]"
