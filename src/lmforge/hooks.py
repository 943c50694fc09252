"""Kedro hooks: stop early on missing inputs, turn on MLflow system metrics, tag runs with lineage.

- ``MissingInputHooks`` runs before any other ``before_pipeline_run`` hook (so before kedro-mlflow
  opens a run) and stops with one line naming the command that produces a missing input, instead
  of a dataset traceback halfway through a stage.
- ``SystemMetricsHooks`` turns on MLflow's CPU/memory/disk/network (and GPU, with NVML) sampling.
- ``LineageHooks`` tags the run with the git commit and the DVC hashes of the stage's inputs, so
  every MLflow run points at the exact code and data that produced it.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from lmforge import tracking

logger = logging.getLogger(__name__)


class MissingInputError(SystemExit):
    """Raised (as a clean exit, not a traceback) when a stage's input has not been produced yet."""


def _producer_of(dataset: str) -> str | None:
    from kedro.framework.project import pipelines

    for name, pipe in pipelines.items():
        if name != "__default__" and dataset in pipe.all_outputs():
            return name
    return None


class MissingInputHooks:
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        missing = [
            name for name in sorted(pipeline.inputs())
            if not name.startswith("params:") and name != "parameters" and not catalog.exists(name)
        ]
        if not missing:
            return
        name = missing[0]
        producer = _producer_of(name)
        where = getattr(catalog.get(name), "_filepath", None) if name in catalog else None
        what = f"{name!r}" + (f" ({where})" if where else "")
        fix = (f"run `kedro run --pipelines {producer}` (or `dvc repro {producer}`) first"
               if producer else "add it to conf/base/catalog.yml or produce it first")
        others = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        message = f"lmforge: input {what} does not exist yet{others}: {fix}."
        logger.error(message)
        raise MissingInputError(message)


class SystemMetricsHooks:
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        tracking.enable_system_metrics()


class LineageHooks:
    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        inputs = {}
        for name in pipeline.inputs():
            if name in catalog and not name.startswith("params:"):
                path = getattr(catalog.get(name), "_filepath", None)
                if path is not None:
                    inputs[name] = str(path)
        tracking.set_lineage_tags(run_params.get("project_path") or ".", inputs,
                                  pipelines=run_params.get("pipeline_names") or ["__default__"])
