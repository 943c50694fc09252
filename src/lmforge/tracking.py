"""The one place the library talks to MLflow.

Kedro nodes never call MLflow: kedro-mlflow opens one run per ``kedro run`` and the catalog's
metrics datasets log what nodes return. Two things need MLflow outside the catalog:

- training processes (launched by a node, several ranks) log per-step metrics into that same run:
  the node passes ``child_env()`` (tracking URI + run id, bounded HTTP retries) to the launcher and rank 0
  uses ``step_logging.StepLogger``, which writes through ``MlflowClient``, never changes the run's status
  and never stops training when the store fails;
- every run is tagged with the process that owns it, and a run left RUNNING by an owner that died (a
  SIGKILLed ``kedro run``) is closed as KILLED by the next run (``close_dead_runs``);
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
OWNER_TAG = "lmforge.owner"
"""The process that opened a run (``processes.owner_token``): a run left RUNNING by a dead owner was killed."""
ENDED_BY_TAG = "lmforge.ended_by"
"""How a run killed without closing itself was found and closed (``close_dead_runs``)."""
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""Bounds on one HTTP request of a training process to a tracking server. MLflow 3's defaults (7 retries,
backoff factor 2, 120 s timeout) stall a training step for minutes when the server is down; with these one
failed send costs at most 3 tries x 10 s plus 1 + 2 s of backoff. Set in the job's environment by
``child_env`` unless the user set them."""


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

    limits = {k: v for k, v in HTTP_LIMITS.items() if k not in os.environ}
    return {URI_ENV: mlflow.get_tracking_uri(), RUN_ID_ENV: run.info.run_id, **limits}


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


def tag_owner() -> None:
    """Tag the active run with the process that owns it (``lmforge.owner``), for ``close_dead_runs``."""
    run = _active_run()
    if run is None:
        return
    import mlflow

    from lmforge.processes import owner_token

    mlflow.set_tag(OWNER_TAG, owner_token())


def close_dead_runs(client: Any, experiment_id: str, *, closed_by: str | None = None) -> list[str]:
    """Set every RUNNING run of ``experiment_id`` whose owner died on this host to KILLED; returns their ids.

    A ``kedro run`` killed by SIGKILL (OOM killer, CI timeout, ``kill -9`` of ``dvc repro``) never closes its
    MLflow run: it would show RUNNING for ever. A run tagged ``lmforge.owner`` (``tag_owner``) whose owner
    process is gone (``processes.owner_alive`` is False: no such pid, or the pid was reused) is closed as
    KILLED, its end time the newest metric it logged (else its start), tagged ``lmforge.ended_by`` with how
    it was found. A run of another host is left alone (its owner cannot be checked from here); a run
    without the tag (older) is left to ``evaluation.operations`` (open while a later run started = crashed).
    """
    from lmforge.processes import owner_alive

    closed = []
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in runs:
        token = run.data.tags.get(OWNER_TAG)
        if not token:
            continue
        alive = owner_alive(token)
        if alive is None:
            logger.info("MLflow run %s is RUNNING, owned by %s on another host: left alone", run.info.run_id, token)
            continue
        if alive:
            continue
        stamps = [m.timestamp for m in getattr(run.data, "_metric_objs", []) if m.timestamp]
        end_time = max(stamps, default=run.info.start_time or int(time.time() * 1000))
        client.set_tag(run.info.run_id, ENDED_BY_TAG, f"owner {token} gone; closed by run {closed_by or 'unknown'}")
        client.set_terminated(run.info.run_id, status="KILLED", end_time=end_time)
        logger.warning("MLflow run %s was left RUNNING by %s, which is gone (killed): marked KILLED",
                       run.info.run_id, token)
        closed.append(run.info.run_id)
    return closed


def close_dead_runs_of_active_experiment() -> list[str]:
    """``close_dead_runs`` on the active run's experiment (a no-op without one; never raises)."""
    run = _active_run()
    if run is None:
        return []
    from mlflow import MlflowClient

    try:
        return close_dead_runs(MlflowClient(), run.info.experiment_id, closed_by=run.info.run_id)
    except Exception as err:  # noqa: BLE001 - bookkeeping of earlier runs must not stop this one
        logger.warning("could not close the MLflow runs of killed processes: %s", err)
        return []


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

