"""Kedro project settings: hooks (incl. one-line errors, ``error_hooks``), config loader resolvers and the parameter
merge strategy."""

from pathlib import Path

from omegaconf.resolvers import oc

from lmforge.error_hooks import ErrorPresentationHooks
from lmforge.hooks import DiskIOHooks, LineageHooks, MissingInputHooks, RunOwnerHooks, SystemMetricsHooks

HOOKS = (MissingInputHooks(), SystemMetricsHooks(), DiskIOHooks(), LineageHooks(), RunOwnerHooks(),
         ErrorPresentationHooks())

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
