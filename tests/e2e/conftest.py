"""The tiny chain, built once per session: `test_chain.py` checks it, `test_chaos.py` compares a killed-and-rerun copy
of the same configuration with it (``reference_of``: what it held before `test_chain.py`'s experiment changed it)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from tiny_chain import BIN, LOSS_CURVES, lock_outs, make_project, network_cut, run


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> tuple[Path, dict]:
    return make_project(tmp_path_factory.mktemp("chain") / "project")


@pytest.fixture(scope="session")
def chain(project) -> tuple[Path, dict, subprocess.CompletedProcess, dict]:
    root, env = project
    missing = {flag: run([str(BIN / "kedro"), "run", flag, "sft"], root, env, timeout=300)
               for flag in ("--pipeline", "--pipelines")}
    started = time.perf_counter()
    offline = network_cut()  # no network at run time: the first repro runs with only loopback
    repro = run([*offline, str(BIN / "dvc"), "repro"], root, env, timeout=1500)
    print(f"dvc repro of the tiny chain{' (network cut)' if offline else ''}: {time.perf_counter() - started:.0f} s")
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-6000:]
    # what an uninterrupted run produced, kept before later tests change the workspace (`dvc exp run`)
    reference = {"outs": lock_outs(root), "durations_s": stage_durations(env["MLFLOW_TRACKING_URI"]),
                 "losses": {name: json.loads((root / rel).read_text()) for name, rel in LOSS_CURVES.items()}}
    reference_path(root).write_text(json.dumps(reference, indent=1))
    return root, env, repro, missing


def reference_path(root: Path) -> Path:
    return root.parent / "reference.json"


def reference_of(root: Path) -> dict:
    return json.loads(reference_path(root).read_text())


def stage_durations(tracking_uri: str) -> dict[str, float]:
    """Seconds each stage's MLflow run lasted (the work, without the `kedro run` start-up)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lmforge")
    return {r.info.run_name: (r.info.end_time - r.info.start_time) / 1000
            for r in client.search_runs([experiment.experiment_id]) if r.info.end_time}
