"""Kedro project settings: hooks (incl. one-line errors, ``error_hooks``), config loader resolvers and the parameter
merge strategy."""

from pathlib import Path

from omegaconf.resolvers import oc

from lmforge.error_hooks import ErrorPresentationHooks
from lmforge.hooks import (
    DiskIOHooks,
    DvcStageGuardHooks,
    LineageHooks,
    MissingInputHooks,
    OutputLockHooks,
    RunOwnerHooks,
    SystemMetricsHooks,
)

# pluggy calls the ``tryfirst`` hooks last-registered first: MissingInputHooks checks the inputs, then
# OutputLockHooks locks the outputs, both before kedro-mlflow opens the run (a refused run leaves none).
# RunOwnerHooks (trylast) tags the run kedro-mlflow opened with its owner and closes dead owners' runs as KILLED.
HOOKS = (OutputLockHooks(), MissingInputHooks(), SystemMetricsHooks(), DiskIOHooks(), LineageHooks(), RunOwnerHooks(),
         ErrorPresentationHooks(), DvcStageGuardHooks())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/local and conf/gpu override single keys instead of replacing a whole pipeline's block.
    "merge_strategy": {"parameters": "soft"},
    "custom_resolvers": {
        "oc.env": oc.env,
        "project_root": lambda: str(Path.cwd().resolve()),
    },
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
}
