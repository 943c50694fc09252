"""Kedro hooks: stop early on missing inputs, turn on MLflow system metrics, tag runs with lineage.

- ``MissingInputHooks`` runs before any other ``before_pipeline_run`` hook (so before kedro-mlflow
  opens a run) and stops with one line naming the command that produces a missing input, instead
  of a dataset traceback halfway through a stage. An input that every node consuming it can do
  without, given a parameter (``OPTIONAL_INPUTS``: sft needs no ``pretrain_checkpoint`` when
  ``sft.base_model`` names a Hugging Face directory, pretrain no ``token_shards`` or ``tokenizer``
  when ``pretrain.base_model`` does, evaluation and packaging not the tokenizer stage's outputs when
  the models they read bring their own tokenizers), is not required.
- ``OutputLockHooks`` runs right after ``MissingInputHooks`` (still before kedro-mlflow opens a run): it locks every
  file/directory output of the pipeline (``lmforge.locks``; lock files in ``data/.locks``), so two runs that write
  one output cannot run at once (the second stops with one line naming the first), removes what a killed writer
  of those outputs left (staging directories, temporary files: only now, under the lock, so never a live
  writer's) and releases the locks when the pipeline ends, with or without an error.
- ``DvcStageGuardHooks``: a stage's ``kedro run`` dies with the ``dvc repro`` that started it.
- ``SystemMetricsHooks`` turns on MLflow's CPU/memory/disk/network (and GPU, with NVML) sampling.
- ``DiskIOHooks`` logs the bytes read from and written to the machine's block devices during the
  stage (``io.disk_read_mb``, ``io.disk_write_mb``, ``io.disk_mb_per_s``): MLflow's system metrics
  sample disk *usage*, not I/O.
- ``LineageHooks`` tags the run with the git commit and the DVC hashes of the stage's inputs, so
  every MLflow run points at the exact code and data that produced it; it keeps Kedro's session id as
  ``kedro.session_id`` instead of the ``run_id`` tag kedro-mlflow copies from Kedro (a second "run id"
  holding a timestamp) and marks the experiment as a model-training one.
- ``RunOwnerHooks`` tags the run with the process that owns it (``lmforge.owner``) and closes, as KILLED,
  the runs of the experiment left RUNNING by an owner that died on this host (``tracking.close_dead_runs``):
  a SIGKILLed ``kedro run`` never closes its own run, and the seed's crash rate counts those.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from lmforge import locks, processes, tracking
from lmforge.errors import one_line

logger = logging.getLogger(__name__)

# (node name, input) -> the parameter (or parameters: any one) that, when set, makes the node do without
# that input.
# sft.base_model: a Hugging Face directory replaces the pretrain checkpoint, and brings its own tokenizer
# (one without is refused when the tokenizer stage's is missing too: ``training.sft.load_sft_tokenizer``).
# pretrain.base_model: continued pretraining re-tokenizes the corpus with the base model's own tokenizer.
OPTIONAL_INPUTS = {("finetune_model", "pretrain_checkpoint"): "sft.base_model",
                   ("tokenize_conversations", "pretrain_checkpoint"): "sft.base_model",
                   # the model directory, or the continued-pretraining checkpoint, brings its own tokenizer
                   ("finetune_model", "tokenizer"): ("sft.base_model", "pretrain.base_model"),
                   ("tokenize_conversations", "tokenizer"): ("sft.base_model", "pretrain.base_model"),
                   ("align_model", "tokenizer"): ("sft.base_model", "pretrain.base_model"),
                   ("pretrain_model", "token_shards"): "pretrain.base_model",
                   ("pretrain_model", "tokenizer"): "pretrain.base_model",
                   # evaluation: the base model is sft.base_model when set; models that bring their own tokenizer
                   # are scored on their own held-out blocks (``evaluation.heldout``), so either base_model frees it
                   # from the tokenizer stage's outputs
                   ("evaluate_models", "pretrain_checkpoint"): "sft.base_model",
                   ("evaluate_models", "pretrain_token_shards"): "sft.base_model",
                   ("evaluate_models", "tokenizer"): ("sft.base_model", "pretrain.base_model"),
                   ("evaluate_models", "token_shards"): ("sft.base_model", "pretrain.base_model"),
                   # the GGUF export scores on the same held-out blocks as evaluate_models: the same freedoms
                   ("quantize_chat_model", "pretrain_token_shards"): "sft.base_model",
                   ("quantize_chat_model", "tokenizer"): ("sft.base_model", "pretrain.base_model"),
                   ("quantize_chat_model", "token_shards"): ("sft.base_model", "pretrain.base_model"),
                   # packaging: the SFT checkpoint carries its tokenizer; the card then shows no tokenizer-stage data
                   ("package_chat_model", "tokenizer"): ("sft.base_model", "pretrain.base_model"),
                   ("package_chat_model", "tokenizer_metrics"): ("sft.base_model", "pretrain.base_model"),
                   # SFT straight from a Hugging Face model: no pretraining ran, so no pretrain metrics or curve
                   ("gather_operations", "pretrain_metrics"): "sft.base_model",
                   ("build_report", "pretrain_loss_curve"): "sft.base_model",
                   ("package_chat_model", "pretrain_metrics"): "sft.base_model",
                   # no GGUF packages to ship when the engine step is off
                   ("package_chat_model", "quantized_models"): "packaging.engine.enabled=false"}


class MissingInputError(SystemExit):
    """Raised (as a clean exit, not a traceback) when a stage's input has not been produced yet."""


def _producers(datasets: list[str]) -> list[str]:
    """The chain's stages that produce ``datasets``, upstream first."""
    from lmforge.pipeline_registry import CHAIN, build_stage

    return [stage for stage in CHAIN if any(d in build_stage(stage).all_outputs() for d in datasets)]


def _location(catalog: Any, name: str) -> str | None:
    dataset = catalog.get(name) if name in catalog else None
    path = getattr(dataset, "_filepath", None) or getattr(dataset, "_path", None)
    return str(path) if path else None


def _frees(catalog: Any, spec: str) -> bool:
    """Whether an ``OPTIONAL_INPUTS`` entry holds: ``name`` is set (truthy), ``name=false`` is set to false."""
    name, _, want = spec.partition("=")
    value = _param(catalog, name)
    return value is False if want == "false" else bool(value)


def _param(catalog: Any, dotted: str) -> Any:
    """The run's parameter at a dotted path (``sft.base_model``), or None when it is not set."""
    head, *keys = dotted.split(".")
    if f"params:{head}" not in catalog:
        return None
    value = catalog.get(f"params:{head}").load()
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _optional(name: str, pipeline: Any, catalog: Any) -> str | None:
    """The parameter(s) that let every node of ``pipeline`` consuming ``name`` do without it, if any.

    An ``OPTIONAL_INPUTS`` entry names one parameter or several (any of them set frees the node).
    """
    found = []
    for node in pipeline.nodes:
        if name not in node.inputs:
            continue
        params = OPTIONAL_INPUTS.get((node.name, name)) or ()
        param = next((p for p in ((params,) if isinstance(params, str) else params) if _frees(catalog, p)), None)
        if param is None:
            return None
        found.append(param)
    return " and ".join(dict.fromkeys(found)) or None


class MissingInputHooks:
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        missing = []
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:") or name == "parameters" or catalog.exists(name):
                continue
            if param := _optional(name, pipeline, catalog):
                logger.info("lmforge: %s is set, so %r (not produced) is not needed", param, name)
                continue
            missing.append(name)
        if not missing:
            return
        producers = _producers(missing)
        where = _location(catalog, missing[0])
        what = f"{missing[0]!r}" + (f" ({where})" if where else "")
        others = f" and {len(missing) - 1} more input(s)" if len(missing) > 1 else ""
        if producers:
            fix = f"run `kedro run --pipelines {','.join(producers)}` (or `dvc repro {producers[-1]}`) first"
        else:
            fix = "add it to conf/base/catalog.yml or produce it first"
        message = f"lmforge: {what}{others} not produced yet: {fix}."
        logger.error(message)
        raise MissingInputError(message)


class DvcStageGuardHooks:
    """Under ``dvc repro``, the ``kedro run`` of a stage ends when the ``dvc`` process is gone (even SIGKILLed
    alone, not its group): ``lmforge.processes.guard_dvc_stage``. A ``kedro run`` from a shell is left alone."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        processes.guard_dvc_stage()


class OutputLockedError(SystemExit):
    """Raised (as a clean exit with one line, not a traceback) when another run holds a lock on an output."""


def output_paths(pipeline: Any, catalog: Any) -> dict[str, Path]:
    """{dataset name: absolute local path} of the pipeline's outputs that are files or directories."""
    found = {}
    for name in pipeline.all_outputs():
        dataset = catalog.get(name) if name in catalog else None
        if getattr(dataset, "_protocol", "file") not in ("file", "local"):  # flock is for local/NFS paths
            continue
        if path := _location(catalog, name):
            found[name] = Path(os.path.abspath(path))  # Kedro resolves relative catalog paths from the cwd
    return found


class OutputLockHooks:
    """Lock the pipeline's outputs before it runs, remove a killed run's leftovers, release them after it."""

    def __init__(self) -> None:
        self._held: list[locks.OutputLock] = []

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens a run: a refused run leaves no MLflow run behind
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._release()  # a run of this process whose start failed after this hook (no after/error hook then)
        root = Path(run_params.get("project_path") or os.getcwd())
        targets = sorted(set(output_paths(pipeline, catalog).values()))  # one order for every run: no deadlock
        try:
            for target in targets:
                self._held.append(locks.OutputLock(locks.lock_file_for(target, root),
                                                   _relative(target, root)).acquire())
        except locks.LockedError as err:
            self._release()
            raise OutputLockedError(f"error: {one_line(err)}") from err
        removed = [path for target in targets for path in locks.remove_leftovers(target)]
        if removed:
            logger.warning("lmforge: removed %d leftover(s) of a killed run: %s", len(removed),
                           ", ".join(_relative(path, root) for path in removed))

    @hook_impl(trylast=True)  # after every other hook has read or logged the outputs
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline: Any, catalog: Any) -> None:
        self._release()

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._release()

    def _release(self) -> None:
        while self._held:
            self._held.pop().release()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


class SystemMetricsHooks:
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        tracking.enable_system_metrics()


def disk_io_bytes() -> tuple[int, int] | None:
    """(bytes read, bytes written) of every block device since boot, or None where the OS gives none."""
    try:
        import psutil

        counters = psutil.disk_io_counters()
    except Exception:  # noqa: BLE001 - no psutil, or no /proc/diskstats in a container: not measured
        return None
    return (int(counters.read_bytes), int(counters.write_bytes)) if counters else None


class DiskIOHooks:
    """Machine-wide disk reads and writes over a stage, as metrics of its MLflow run.

    Machine-wide on purpose: the stage's work runs in child processes (the training ranks) too. Other
    programs on the machine count as well, as they do in MLflow's system metrics.
    """

    def __init__(self) -> None:
        self._start: tuple[float, tuple[int, int]] | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        counters = disk_io_bytes()
        self._start = (time.perf_counter(), counters) if counters else None

    @hook_impl(tryfirst=True)  # before kedro-mlflow closes the run
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline: Any, catalog: Any) -> None:
        end = disk_io_bytes()
        if self._start is None or end is None:
            logger.info("disk I/O not measured: psutil gives no block-device counters on this machine")
            return
        started, (read0, write0) = self._start
        seconds = max(time.perf_counter() - started, 1e-9)
        read_mb, write_mb = (end[0] - read0) / 2**20, (end[1] - write0) / 2**20
        tracking.log_metrics({"io.disk_read_mb": read_mb, "io.disk_write_mb": write_mb,
                              "io.disk_mb_per_s": (read_mb + write_mb) / seconds})
        logger.info("disk I/O of the stage (whole machine): read %.1f MB, wrote %.1f MB in %.0f s",
                    read_mb, write_mb, seconds)


class LineageHooks:
    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        inputs = {name: path for name in pipeline.inputs()
                  if not name.startswith("params:") and (path := _location(catalog, name))}
        tracking.set_lineage_tags(run_params.get("project_path") or ".", inputs,
                                  pipelines=run_params.get("pipeline_names") or ["__default__"],
                                  session_id=run_params.get("run_id"))  # Kedro's name for its session id
        tracking.mark_training_experiment()


class RunOwnerHooks:
    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        tracking.tag_owner()
        tracking.close_dead_runs_of_active_experiment()
