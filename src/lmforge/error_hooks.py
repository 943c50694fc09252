"""Kedro hook: a stage that fails with one of our expected errors ends with one line, not a traceback.

``kedro run`` prints the runner's traceback for any failing node. For a user's mistake (a refused
quality gate, a failed training job whose message already carries the ranks' error lines, a missing
file: ``lmforge.errors.is_expected``) that buries the message under a hundred lines, so
``on_pipeline_error`` ends the run with ``error: <message> (<next step>)`` on stderr and exit status 1
instead. It runs last (``trylast``), after kedro-mlflow has marked the MLflow run as failed. An
unexpected error is left alone: Kedro prints its full traceback, which is what a bug needs; so is
every error when ``LMFORGE_VERBOSE=1`` (the ``--verbose`` of ``kedro run``, which has no such flag).

A missing input stops a run before it starts (``hooks.MissingInputHooks``) and an unknown pipeline
name before the hooks exist (``pipeline_registry.check_pipeline_names``), both with one line too.
"""

from __future__ import annotations

import os
from typing import Any

from kedro.framework.hooks import hook_impl

from lmforge.errors import VERBOSE_ENV, flush_logs, is_expected, one_line


class ErrorPresentationHooks:
    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if is_expected(error) and os.environ.get(VERBOSE_ENV, "") in ("", "0"):
            flush_logs()  # what the run logged comes before the error line
            raise SystemExit(f"error: {one_line(error)}") from None
