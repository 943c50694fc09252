"""The one place the library talks to MLflow.

Kedro nodes never call MLflow: kedro-mlflow opens one run per ``kedro run`` and the catalog's
metrics datasets log what nodes return. Two things need MLflow outside the catalog:

- training processes (launched by a node, several ranks) log per-step metrics into that same run:
  the node passes ``child_env()`` (tracking URI + run id) to the launcher and rank 0 uses
  ``StepLogger``, which writes through ``MlflowClient`` and never changes the run's status;
- hooks tag runs with lineage (git commit, DVC hashes of the inputs) and mark the experiment as a
  model-training one.

One number per metric: a name MLflow shows for a run is the stage's summary (``<stage>.<key>``, equal
to ``data/08_reporting/<stage>.json``); a per-step curve of a quantity the summary also reports
(throughput, MFU, memory) lives under ``<stage>.step.<key>``. MLflow shows a run's *latest* value of a
metric (highest step), so a summary logged at step 0 under the name of a per-step curve would be
hidden by the last step's value. ``metric_mismatches`` checks a run against its metrics file.

Everything here is a no-op when MLflow is absent or no run is active, so the library runs from a
REPL or a unit test with plain arguments.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_ID_ENV = "MLFLOW_RUN_ID"
URI_ENV = "MLFLOW_TRACKING_URI"
STEP_NAMESPACE = "step"
"""Per-step curves of quantities the stage's summary also reports: ``pretrain.step.tokens_per_s``."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
"""The experiment kind MLflow's UI calls "Machine learning" (model training), as opposed to "genai_development"."""
SESSION_TAG = "kedro.session_id"
"""Kedro's session id (a timestamp), which kedro-mlflow would tag as ``run_id`` beside MLflow's own run id."""


def _active_run() -> Any:
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return None
    return mlflow.active_run()


def child_env() -> dict[str, str]:
    """Environment that lets a child process log into the active run (empty when none is active)."""
    run = _active_run()
    if run is None:
        return {}
    import mlflow

    return {URI_ENV: mlflow.get_tracking_uri(), RUN_ID_ENV: run.info.run_id}


def flatten(metrics: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, float]:
    """Numeric leaves of a nested dict as flat ``a.b.c`` keys (booleans become 0/1, others dropped)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        elif isinstance(value, bool):
            flat[name] = float(value)
        elif isinstance(value, int | float) and value == value:  # drops NaN
            flat[name] = float(value)
    return flat


def flatten_leaves(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested mapping as a dotted key, strings and lists kept (lists joined with ", "): for
    showing a metrics file (``align.json``'s ``method``, ``pairs_sha256``) where `flatten` keeps numbers only."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_leaves(value, name))
        else:
            flat[name] = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
    return flat


def log_metrics(metrics: Mapping[str, Any], *, prefix: str = "", step: int | None = None) -> None:
    """Log the numeric leaves of ``metrics`` into the active run, if any."""
    if _active_run() is None:
        return
    import mlflow

    flat = flatten(metrics, prefix)
    if flat:
        mlflow.log_metrics(flat, step=step)


def log_artifact_dir(path: str | Path, artifact_path: str) -> None:
    """Upload a directory (reports, Data Docs) into the active run, if any."""
    if _active_run() is None or not Path(path).exists():
        return
    import mlflow

    mlflow.log_artifacts(str(path), artifact_path=artifact_path)


def log_dict(payload: Mapping[str, Any], artifact_file: str) -> None:
    """Store a JSON document (e.g. the resolved DeepSpeed config) as a run artifact, if a run is active."""
    if _active_run() is None:
        return
    import mlflow

    mlflow.log_dict(dict(payload), artifact_file)


def log_config(config: Any, prefix: str) -> dict[str, str]:
    """Log a stage's fully resolved config (defaults included) as flat params of the active run.

    kedro-mlflow already logs the keys the YAML gives; this adds every default the YAML left out, so
    two runs' compare view shows each setting that can differ. A key already logged keeps its value
    (MLflow refuses to change a param). Returns what was logged (empty without an active run).
    """
    from lmforge.config import flatten_config

    run = _active_run()
    if run is None:
        return {}
    import mlflow

    logged = mlflow.get_run(run.info.run_id).data.params
    new = {k: v[:6000] for k, v in flatten_config(config, prefix).items() if k not in logged}
    items = list(new.items())
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per call
        mlflow.log_params(dict(items[i:i + 100]))
    return new


def enable_system_metrics(interval_s: float = 5.0) -> None:
    """CPU/memory/disk/network sampling for every run (GPU too when NVML is importable)."""
    try:
        import mlflow

        mlflow.set_system_metrics_sampling_interval(interval_s)
        mlflow.enable_system_metrics_logging()
    except Exception as err:  # pragma: no cover - psutil missing etc.
        logger.warning("MLflow system metrics are off: %s", err)


class StepLogger:
    """Per-step metrics from a training process into an existing run (rank 0 only).

    Buffers metrics and sends them in batches so logging never dominates a step on CPU.
    """

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None, flush_every: int = 20):
        self.run_id = run_id or os.environ.get(RUN_ID_ENV)
        self.tracking_uri = tracking_uri or os.environ.get(URI_ENV)
        self.flush_every = flush_every
        self._buffer: list[Any] = []
        self._client = None
        if self.run_id and self.tracking_uri:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._buffer) >= self.flush_every * max(1, len(metrics)):
            self.flush()

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def flush(self) -> None:
        if self.enabled and self._buffer:
            for i in range(0, len(self._buffer), 1000):
                self._client.log_batch(self.run_id, metrics=self._buffer[i:i + 1000])
            self._buffer.clear()


def git_state(project_path: str | Path) -> dict[str, str]:
    """Commit hash and whether the work tree differs from it ("unknown" outside a git repo)."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=project_path, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def dvc_hashes(project_path: str | Path, paths: Mapping[str, str]) -> dict[str, str]:
    """DVC md5 of each input path as recorded in dvc.lock by the stage that produced it."""
    import yaml

    lock = Path(project_path) / "dvc.lock"
    if not lock.exists():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    recorded = {}
    for stage in stages.values():
        for out in stage.get("outs", []):
            recorded[os.path.normpath(out["path"])] = out.get("md5") or out.get("hash", "")
    root = Path(project_path).resolve()
    tags = {}
    for name, path in paths.items():
        p = Path(path)
        rel = os.path.normpath(str(p.resolve().relative_to(root)) if p.is_absolute() and root in p.resolve().parents
                               else str(p))
        for out_path, md5 in recorded.items():
            if rel == out_path or rel.startswith(out_path + os.sep):
                tags[f"dvc.{name}"] = f"{out_path}:{md5}"
    return tags


def set_lineage_tags(project_path: str | Path, input_paths: Mapping[str, str], pipelines: list[str],
                     session_id: str | None = None) -> None:
    """Tag the active run with git state, DVC hashes of its inputs and the pipelines it ran.

    kedro-mlflow copies Kedro's run parameters into tags, and Kedro calls its session id (a timestamp)
    ``run_id``: beside MLflow's own run id that reads as a second, wrong one. The session id is kept
    as ``kedro.session_id`` and the ``run_id`` tag deleted.
    """
    run = _active_run()
    if run is None:
        return
    import mlflow

    tags = {"lmforge.pipelines": "+".join(pipelines), **git_state(project_path),
            **dvc_hashes(project_path, input_paths)}
    if session_id:
        tags[SESSION_TAG] = str(session_id)
    mlflow.set_tags(tags)
    if "run_id" in mlflow.get_run(run.info.run_id).data.tags:
        mlflow.MlflowClient().delete_tag(run.info.run_id, "run_id")


def mark_training_experiment() -> None:
    """Mark the active run's experiment as a model-training experiment (``mlflow.experimentKind``).

    conf/base/mlflow.yml gives the tag to an experiment kedro-mlflow creates; this also marks one created
    before (or by another client). It is MLflow's own record of the kind (the experiment-kind selector,
    and the view of UIs without the workflow switch). MLflow 3.17.2's UI, measured: it ignores the tag
    and picks the view from its sidebar switch "GenAI / Model training" (the ``workflowType`` URL
    parameter, else the browser's last choice, else GenAI); ``training_view_url`` opens the training view.
    """
    run = _active_run()
    if run is None:
        return
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = run.info.experiment_id
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != TRAINING_EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND)


def training_view_url(ui_url: str, experiment_id: str) -> str:
    """The URL of an experiment's runs in the MLflow UI's training view ("Model training", not GenAI)."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def step_metric_name(prefix: str, key: str, curves: tuple[str, ...]) -> str:
    """MLflow name of a per-step metric: ``<prefix>.<key>`` for a curve only, else ``<prefix>.step.<key>``.

    ``curves`` are the per-step quantities no summary reports under the same name (``loss``, ``lr``):
    they keep their short names; every other per-step metric goes under the ``step`` namespace, so the
    summary's ``<prefix>.<key>`` is the one value MLflow shows for it.
    """
    return f"{prefix}.{key}" if key in curves else f"{prefix}.{STEP_NAMESPACE}.{key}"


def metric_mismatches(client: Any, run_id: str, metrics: Mapping[str, Any], prefix: str,
                      rel_tol: float = 1e-9) -> list[str]:
    """Where a run's metrics (the latest value MLflow shows) differ from a stage's metrics file.

    ``metrics`` is the file's content (nested dicts are flattened as `log_metrics` flattens them);
    every numeric leaf must be a metric ``<prefix>.<key>`` of the run with the same value (up to
    ``rel_tol``, for float formatting; an SQL store keeps an infinity as the largest float). Returns one
    line per missing or differing metric.
    """
    import math
    import sys

    logged = client.get_run(run_id).data.metrics
    problems = []
    for name, value in sorted(flatten(metrics, prefix).items()):
        if math.isinf(value):
            value = math.copysign(sys.float_info.max, value)
        if name not in logged:
            problems.append(f"{name}: {value!r} in the metrics file, not a metric of run {run_id}")
        elif not math.isclose(logged[name], value, rel_tol=rel_tol, abs_tol=1e-12):
            problems.append(f"{name}: MLflow shows {logged[name]!r}, the metrics file {value!r}")
    return problems
