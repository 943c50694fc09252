"""OutputLockHooks: two runs that write one output cannot run at once; runs of different outputs can.

The real-CLI test holds the tokenizer stage's output lock in a second process and runs ``kedro run --pipelines
tokenizer`` in a copy of the project: it stops with one line naming that process, before any node or MLflow run.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import copy_project, kedro_run
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from lmforge.hooks import OutputLockedError, OutputLockHooks
from lmforge.locks import LOCKS_DIR, OutputLock, lock_file_for
from lmforge.pipelines.datasets import JSONLinesDataset


def hook_run(root: Path, pipeline: Pipeline, catalog: DataCatalog) -> OutputLockHooks:
    hooks = OutputLockHooks()
    hooks.before_pipeline_run(run_params={"project_path": str(root)}, pipeline=pipeline, catalog=catalog)
    return hooks


def test_a_second_run_writing_the_same_output_is_refused_and_a_different_one_is_not(tmp_path):
    catalog = DataCatalog({"quarantine": JSONLinesDataset(str(tmp_path / "data/02_intermediate/quarantine.jsonl")),
                           "tokenizer_metrics": JSONLinesDataset(str(tmp_path / "data/08_reporting/tok.jsonl")),
                           "scratch": MemoryDataset()})
    writes_q = Pipeline([Node(lambda: (None, None), None, ["scratch", "quarantine"], name="dp")])
    writes_t = Pipeline([Node(lambda: None, None, "tokenizer_metrics", name="tok")])

    first = hook_run(tmp_path, writes_q, catalog)
    assert (tmp_path / LOCKS_DIR / "data__02_intermediate__quarantine.jsonl.lock").is_file()
    with pytest.raises(OutputLockedError) as err:
        hook_run(tmp_path, writes_q, catalog)
    assert str(err.value).startswith("error: data/02_intermediate/quarantine.jsonl is being written by pid "
                                     f"{os.getpid()}")
    assert f"kill {os.getpid()}" in str(err.value) and "\n" not in str(err.value)
    other = hook_run(tmp_path, writes_t, catalog)  # another stage's outputs: runs alongside

    first.on_pipeline_error(error=RuntimeError(), run_params={}, pipeline=writes_q, catalog=catalog)
    other.after_pipeline_run(run_params={}, run_result={}, pipeline=writes_t, catalog=catalog)
    with OutputLock(lock_file_for(tmp_path / "data/02_intermediate/quarantine.jsonl", tmp_path), "q"):
        pass  # released after the run, with or without an error


def mlflow_runs(uri: str) -> int:
    db = Path(uri.removeprefix("sqlite:///"))
    return sqlite3.connect(db).execute("select count(*) from runs").fetchone()[0] if db.exists() else 0


def test_kedro_run_of_a_stage_whose_output_is_locked_stops_with_one_line(tmp_path, project_root, chain_documents,
                                                                         mlflow_tracking_uri, monkeypatch):
    """About 8 s on 2 idle cores: Kedro's start (the session's MLflow store, when another test already made it)."""
    from test_locks import hold_in_child

    root = copy_project(project_root, tmp_path / "project", chain_documents)
    holder = hold_in_child(lock_file_for(root / "data/06_models/tokenizer", root), "data/06_models/tokenizer")
    runs = mlflow_runs(mlflow_tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking_uri)
    try:
        proc = kedro_run(root, None, "--pipelines", "tokenizer", timeout=120)
    finally:
        holder.kill()
        holder.wait()

    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # (MLflow's "Creating initial MLflow database tables" before it)
    assert line.startswith(f"error: data/06_models/tokenizer is being written by pid {holder.pid}"), line
    assert f"kill {holder.pid}" in line
    assert not (root / "data/06_models/tokenizer").exists() and not (root / "data/05_model_input/tokens").exists()
    assert mlflow_runs(mlflow_tracking_uri) == runs  # refused before kedro-mlflow opened a run
