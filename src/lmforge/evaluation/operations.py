"""Operations metrics of the chain's stages, read back from MLflow and the stages' metrics files.

Every ``kedro run`` of a stage is one MLflow run (kedro-mlflow), tagged ``lmforge.pipelines`` with
the stage names (``hooks.LineageHooks``) and sampled by MLflow's system-metrics monitor
(``system/cpu_utilization_percentage``, ``system/system_memory_usage_megabytes``,
``system/disk_usage_megabytes``, ``system/network_{receive,transmit}_megabytes``, and
``system/gpu_<i>_{utilization_percentage,memory_usage_megabytes}`` where NVML sees a GPU).
This module reads those runs through ``MlflowClient`` and returns flat metrics (stable names, all
floats) plus a ``not_measured`` map ``{metric: reason}`` for everything it could not find:

- per stage ``ops.<stage>.``: ``runs``; ``failed_runs`` (status FAILED: the stage raised an error);
  ``crashed_runs`` (status KILLED: ``tracking.close_dead_runs``, called by ``hooks.RunOwnerHooks`` at the
  start of every run, sets a run whose owner process died on this host to KILLED; a run still open whose
  ``lmforge.owner`` is gone counts too, and an untagged one left RUNNING although a later run of the same
  stage started: the process died without closing its run, e.g. killed by the OOM killer); ``error_rate`` and
  ``crash_rate`` (those over ``runs``); and from the newest FINISHED run: ``duration_s``,
  ``cpu_utilization_pct`` (mean), ``memory_used_mb_max`` (system memory in use, max),
  ``disk_read_mb``, ``disk_write_mb``, ``disk_mb_per_s`` (block-device I/O of the machine during the
  stage, logged by ``hooks.DiskIOHooks``), ``disk_usage_delta_mb`` (disk space used at the end minus
  the start, from MLflow's samples of disk *usage*), ``network_receive_mb``,
  ``network_transmit_mb`` (since the run started), ``network_mb_per_s`` (both over the run's duration;
  psutil counts every interface, loopback included, so on one machine the training processes'
  gloo/NCCL traffic shows here),
  ``gpu_utilization_pct`` (mean over samples and GPUs), ``gpu_memory_used_mb_max``;
- training stages (pretrain, sft, align) also ``time_per_epoch_s``, ``tokens_per_s``, ``restart_count`` (resumes from a
  checkpoint), ``peak_memory_mb`` (GPU max allocated, or the CPU run's peak RSS) and
  ``allreduce_busbw_gbps`` (the all-reduce bus bandwidth of the job's own process group, nccl-tests'
  definition, measured at training start: ``training/bandwidth.py``; the seed's network figure, where
  ``network_mb_per_s`` above is every interface's traffic), taken from the stage's metrics file
  (``data/08_reporting/<stage>.json``) or, without it, the run's logged metrics;
- chain totals ``ops.chain.``: ``stages`` (how many stages they cover: the ones passed in, i.e. the
  stages *before* evaluation, since evaluation's own run is still open and packaging runs after it),
  ``runs`` (MLflow runs of those stages, every attempt: 4 on a clean ``make run`` of the 6-stage chain,
  one per stage before evaluation, not "runs of the chain"), ``failed_runs``, ``crashed_runs``,
  ``error_rate``, ``crash_rate``, ``restart_count`` (training stages summed), ``duration_s`` (newest
  finished runs summed).

CPU utilisation leaves out the first sample of a run (step 0): MLflow's monitor thread samples
``psutil.cpu_percent()`` without an interval, and psutil's first such call in a thread compares the
CPU times with themselves and returns a meaningless 0.0. A stage shorter than two sampling intervals
(2 x 5 s, ``tracking.enable_system_metrics``) has no other sample: its CPU is reported not measured
instead of 0% (what data_processing showed).

Nothing here raises on a missing store or run: an evaluation must still report what it has.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

TRAINING_STAGES = ("pretrain", "sft", "align")
TRAINING_KEYS = ("time_per_epoch_s", "tokens_per_s", "restart_count")
BUSBW = "allreduce_busbw_gbps"  # under the stage's ``network`` (training/bandwidth.py)
PIPELINES_TAG = "lmforge.pipelines"
CRASH_STATUSES = ("KILLED",)
OPEN_STATUSES = ("RUNNING", "SCHEDULED")

SYSTEM = "system/"
CPU = "system/cpu_utilization_percentage"
MEMORY = "system/system_memory_usage_megabytes"
DISK = "system/disk_usage_megabytes"
NET_RX = "system/network_receive_megabytes"
NET_TX = "system/network_transmit_megabytes"
DISK_IO = ("io.disk_read_mb", "io.disk_write_mb", "io.disk_mb_per_s")


def gather_operations(stage_metrics: Mapping[str, Mapping[str, Any]] | None = None, *,
                      tracking_uri: str | None = None, experiment: str = "lmforge",
                      stages: Sequence[str], exclude_run_ids: Iterable[str] = (),
                      exclude_active: bool = True, max_runs: int = 1000) -> dict[str, Any]:
    """``{"metrics": {name: float}, "not_measured": {name: reason}}`` for ``stages`` (see module docstring).

    ``stage_metrics`` maps a training stage to its metrics dict (``pretrain.json``...). Without
    ``tracking_uri`` the current MLflow URI is used; ``exclude_run_ids`` and, with ``exclude_active``,
    the active run (the evaluation's own, still running) are ignored.
    """
    metrics: dict[str, float] = {}
    not_measured: dict[str, str] = {}
    exclude = set(exclude_run_ids)
    if exclude_active:
        exclude |= _active_run_ids()
    runs_by_stage, where = _runs_by_stage(tracking_uri, experiment, stages, exclude, max_runs)
    client = runs_by_stage.pop("__client__", None)
    for stage in stages:
        prefix = f"ops.{stage}"
        runs = runs_by_stage.get(stage, [])
        if not runs:
            not_measured[prefix] = f"no MLflow run of stage {stage!r} {where}: run the stage with MLFLOW_TRACKING_URI set"
        else:
            metrics.update(_status_counts(prefix, runs))
            finished = [r for r in runs if r.info.status == "FINISHED"]
            if finished:
                metrics.update(_system_metrics(client, prefix, finished[0], not_measured))
            else:
                not_measured[f"{prefix}.duration_s"] = f"no FINISHED run of stage {stage!r} {where}"
        if stage in TRAINING_STAGES:
            metrics.update(_training_metrics(prefix, (stage_metrics or {}).get(stage), runs, stage, not_measured))
    metrics.update(_chain_totals(metrics, stages))
    return {"metrics": metrics, "not_measured": not_measured}


def _active_run_ids() -> set[str]:
    import mlflow

    run = mlflow.active_run()
    return {run.info.run_id} if run else set()


def _runs_by_stage(tracking_uri: str | None, experiment: str, stages: Sequence[str], exclude: set[str],
                   max_runs: int) -> tuple[dict[str, Any], str]:
    """Runs of each stage, newest first, plus a phrase saying where they were looked for."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = tracking_uri or mlflow.get_tracking_uri()
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
    except Exception as err:  # unreachable store, bad URI: report, do not fail the evaluation
        logger.warning("operations: cannot read MLflow (%s)", err)
        return {}, f"(MLflow unreadable: {err})"
    where = f"in experiment {experiment!r} at {uri}"
    if exp is None:
        return {}, where
    runs = client.search_runs([exp.experiment_id], max_results=max_runs, order_by=["attributes.start_time DESC"])
    grouped: dict[str, Any] = {"__client__": client}
    for run in runs:
        if run.info.run_id in exclude:
            continue
        for stage in _stages_of(run, stages):
            grouped.setdefault(stage, []).append(run)
    return grouped, where


def _stages_of(run: Any, stages: Sequence[str]) -> list[str]:
    """Stages a run ran: its ``lmforge.pipelines`` tag (or run name), ``__default__`` meaning the chain."""
    names = (run.data.tags.get(PIPELINES_TAG) or run.info.run_name or "").split("+")
    if "__default__" in names:
        return list(stages)
    return [s for s in stages if s in names]


def _crashed(run: Any, newer_runs: int) -> bool:
    """KILLED (``tracking.close_dead_runs`` closes a dead owner's run so), or open although its owner is gone;
    an untagged (older) run: open although a newer run of the stage started (its process died unclosed)."""
    from lmforge.processes import owner_alive
    from lmforge.tracking import OWNER_TAG

    if run.info.status in CRASH_STATUSES:
        return True
    if run.info.status not in OPEN_STATUSES:
        return False
    owner = run.data.tags.get(OWNER_TAG)
    alive = owner_alive(owner) if owner else None
    return alive is False if alive is not None else newer_runs > 0


def _status_counts(prefix: str, runs: Sequence[Any]) -> dict[str, float]:
    failed = sum(r.info.status == "FAILED" for r in runs)
    crashed = sum(_crashed(r, i) for i, r in enumerate(runs))
    n = len(runs)
    return {f"{prefix}.runs": float(n), f"{prefix}.failed_runs": float(failed), f"{prefix}.crashed_runs": float(crashed),
            f"{prefix}.error_rate": failed / n, f"{prefix}.crash_rate": crashed / n}


def _system_metrics(client: Any, prefix: str, run: Any, not_measured: dict[str, str]) -> dict[str, float]:
    """Duration and the system-metrics summary of one finished run."""
    info = run.info
    out: dict[str, float] = {}
    duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    if duration is not None:
        out[f"{prefix}.duration_s"] = duration
    for key in DISK_IO:  # hooks.DiskIOHooks: block-device reads/writes of the machine during the stage
        if key in run.data.metrics:
            out[f"{prefix}.{key.removeprefix('io.')}"] = float(run.data.metrics[key])
    if DISK_IO[0] not in run.data.metrics:
        not_measured[f"{prefix}.disk_read_mb"] = (f"run {info.run_id} has no io.* metrics: psutil gave no block-device "
                                                  "counters (or the run predates hooks.DiskIOHooks)")
    keys = [k for k in run.data.metrics if k.startswith(SYSTEM)]
    if not keys:
        not_measured[f"{prefix}.system"] = (f"run {info.run_id} has no system/* metrics: MLflow system metrics "
                                            "were off (psutil missing, or the run was too short to be sampled)")
        return out

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(info.run_id, key), key=lambda m: (m.step, m.timestamp))]

    if CPU in keys:
        values = history(CPU)[1:]  # step 0: psutil's meaningless first cpu_percent() of the monitor thread
        if values:
            out[f"{prefix}.cpu_utilization_pct"] = sum(values) / len(values)
        else:
            not_measured[f"{prefix}.cpu_utilization_pct"] = (
                f"run {info.run_id} has one CPU sample, psutil's first call of MLflow's monitor thread (always 0): "
                "the stage ran for less than two sampling intervals")
    if MEMORY in keys:
        out[f"{prefix}.memory_used_mb_max"] = max(history(MEMORY))
    if DISK in keys:
        values = history(DISK)
        out[f"{prefix}.disk_usage_delta_mb"] = values[-1] - values[0]
    net = {}
    for name, key in (("receive", NET_RX), ("transmit", NET_TX)):
        if key in keys:
            net[name] = history(key)[-1]
            out[f"{prefix}.network_{name}_mb"] = net[name]
    if len(net) == 2 and duration:
        out[f"{prefix}.network_mb_per_s"] = (net["receive"] + net["transmit"]) / duration
    gpu_util = [k for k in keys if k.startswith("system/gpu_") and k.endswith("_utilization_percentage")]
    gpu_mem = [k for k in keys if k.startswith("system/gpu_") and k.endswith("_memory_usage_megabytes")]
    if gpu_util:
        values = [v for k in gpu_util for v in history(k)]
        out[f"{prefix}.gpu_utilization_pct"] = sum(values) / len(values)
        out[f"{prefix}.gpu_count"] = float(len(gpu_util))
    else:
        not_measured[f"{prefix}.gpu_utilization_pct"] = ("no GPU: the run logged no system/gpu_* metrics (no NVIDIA "
                                                         "GPU visible to NVML, or nvidia-ml-py not installed)")
    if gpu_mem:
        out[f"{prefix}.gpu_memory_used_mb_max"] = max(v for k in gpu_mem for v in history(k))
    return out


def _training_metrics(prefix: str, summary: Mapping[str, Any] | None, runs: Sequence[Any], stage: str,
                      not_measured: dict[str, str]) -> dict[str, float]:
    """Training speed, restarts and peak memory: the stage's metrics file first, else its newest run.

    A stage switched off (its metrics file says ``enabled: false``, as align's does) trained nothing: one
    ``not_measured`` line for it instead of one per key."""
    if summary and "enabled" in summary and not summary["enabled"]:
        not_measured[f"{prefix}.tokens_per_s"] = f"{stage} is switched off ({stage}.enabled: false): nothing trained"
        return {}
    logged = next((r.data.metrics for r in runs if r.info.status == "FINISHED"), {})
    out: dict[str, float] = {}
    for key in TRAINING_KEYS:
        value = (summary or {}).get(key)
        if value is None:
            value = logged.get(f"{stage}.{key}")
        if _is_number(value):
            out[f"{prefix}.{key}"] = float(value)
        else:
            not_measured[f"{prefix}.{key}"] = (f"{stage} reported no {key} (neither data/08_reporting/{stage}.json "
                                               f"nor its MLflow run)" + (": the run has no epoch size"
                                                                         if key == "time_per_epoch_s" else ""))
    for key in ("gpu_max_allocated_mb", "peak_rss_mb"):
        value = (summary or {}).get(key, logged.get(f"{stage}.{key}"))
        if _is_number(value):
            out[f"{prefix}.peak_memory_mb"] = float(value)
            break
    network = (summary or {}).get("network") or {}
    value = network.get(BUSBW, logged.get(f"{stage}.network.{BUSBW}"))
    if _is_number(value):
        out[f"{prefix}.{BUSBW}"] = float(value)
    else:
        not_measured[f"{prefix}.{BUSBW}"] = (f"{stage}: " + network["allreduce_not_measured"]
                                            if network.get("allreduce_not_measured") else
                                            f"{stage} reported no all-reduce bus bandwidth (a run before the probe, "
                                            "training/bandwidth.py)")
    return out


def _chain_totals(metrics: Mapping[str, float], stages: Sequence[str]) -> dict[str, float]:
    def total(name: str, among: Sequence[str] = stages) -> float:
        return sum(metrics.get(f"ops.{s}.{name}", 0.0) for s in among)

    runs = total("runs")
    out = {"ops.chain.stages": float(len(stages)), "ops.chain.runs": runs, "ops.chain.failed_runs": total("failed_runs"),
           "ops.chain.crashed_runs": total("crashed_runs")}
    training = [s for s in stages if s in TRAINING_STAGES]
    if any(f"ops.{s}.restart_count" in metrics for s in training):  # none reported: not measured, not 0
        out["ops.chain.restart_count"] = total("restart_count", training)
    if any(f"ops.{s}.duration_s" in metrics for s in stages):
        out["ops.chain.duration_s"] = total("duration_s")
    if runs:
        out["ops.chain.error_rate"] = out["ops.chain.failed_runs"] / runs
        out["ops.chain.crash_rate"] = out["ops.chain.crashed_runs"] / runs
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
