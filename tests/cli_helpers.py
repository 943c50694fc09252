"""Commands as a user runs them: the one-line error contract of lmforge.errors as a test assertion, and
``kedro run`` in a copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlflow_helpers import migrated_store


def assert_one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Non-zero exit, exactly one line on stderr, ``error: ...``, no traceback; returns the line."""
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def copy_project(project_root: Path, root: Path, documents: dict[str, list[dict]] | None = None, *,
                 data_processing_metrics: bool = False) -> Path:
    """The project's tracked files (no tests, no data outputs) under ``root``, plus cleaned ``documents`` and a
    tiny source cache (``data/00_sources``, tests/chat_samples.py).

    ``data_processing_metrics``: the documents stand for a finished data_processing stage, so its
    metrics file is written too (the model card reads it): every provided document kept.
    """
    from lmforge.pipelines.datasets import JSONLinesDataset

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=project_root, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (project_root / rel).is_file() and not rel.startswith("tests/"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project_root / rel, root / rel)
    from chat_samples import write_chat_cache

    write_chat_cache(root / "data/00_sources")  # a tiny literal copy of the fetched packages sft's chat sources read
    for shard, records in (documents or {}).items():
        JSONLinesDataset(str(root / "data/03_primary/documents" / f"{shard}.jsonl")).save(records)
    if data_processing_metrics:
        n = sum(len(records) for records in (documents or {}).values())
        (root / "data/08_reporting").mkdir(parents=True, exist_ok=True)
        (root / "data/08_reporting/data_processing.json").write_text(json.dumps({"records_in": n, "records_out": n}))
    return root


def kedro_run(root: Path, tmp_path: Path | None, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``kedro run <args>`` in the project copy ``root``, offline, with its own MLflow store under ``tmp_path``
    (None: $MLFLOW_TRACKING_URI's)."""
    exe = str(Path(sys.executable).parent / "kedro")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(root / "src"), "HF_HUB_OFFLINE": "1"}
    if tmp_path is not None:
        env["MLFLOW_TRACKING_URI"] = migrated_store(tmp_path / "mlflow.db")
    return subprocess.run([exe, "run", *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
