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


def _producers(datasets: list[str]) -> list[str]:
    """The chain's stages that produce ``datasets``, upstream first."""
    from lmforge.pipeline_registry import CHAIN, build_stage

    return [stage for stage in CHAIN if any(d in build_stage(stage).all_outputs() for d in datasets)]


def _location(catalog: Any, name: str) -> str | None:
    dataset = catalog.get(name) if name in catalog else None
    path = getattr(dataset, "_filepath", None) or getattr(dataset, "_path", None)
    return str(path) if path else None


class MissingInputHooks:
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        missing = [
            name for name in sorted(pipeline.inputs())
            if not name.startswith("params:") and name != "parameters" and not catalog.exists(name)
        ]
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


class SystemMetricsHooks:
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        tracking.enable_system_metrics()


class LineageHooks:
    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        inputs = {name: path for name in pipeline.inputs()
                  if not name.startswith("params:") and (path := _location(catalog, name))}
        tracking.set_lineage_tags(run_params.get("project_path") or ".", inputs,
                                  pipelines=run_params.get("pipeline_names") or ["__default__"])
