"""Per-step metrics of a training process into its stage's MLflow run, and never a dead run for a dead store.

Rank 0 of a training job logs loss, lr, throughput... every few steps into the run kedro-mlflow opened
(``tracking.child_env`` passes its URI and id). Tracking must never end a training run: a tracking server
that goes down, a sqlite file on a volume that went away, a locked store. ``StepLogger`` buffers, warns
once, retries now and then, and at the end writes what the store did not take to a file that
``python -m lmforge.step_logging replay <file>`` sends later. Measured (tests/test_faults.py): a dead
HTTP server costs the first failed send ~3-5 s with ``tracking.HTTP_LIMITS`` (MLflow's defaults would
retry 7 times with a backoff factor of 2: minutes), then nothing until the next retry.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge.tracking import RUN_ID_ENV, URI_ENV

logger = logging.getLogger(__name__)

UNSENT_METRICS = "unsent_metrics.jsonl"
"""Where a training job's ``StepLogger`` leaves the metrics the store did not take (in the job's run_dir)."""
RETRY_MAX_S = 600.0
"""Longest wait between two tries of ``StepLogger`` while the store keeps failing."""


class StepLogger:
    """Per-step metrics from a training process into an existing run (rank 0 only).

    Buffers metrics and sends them in batches so logging never dominates a step on CPU.

    Tracking must never end a training run: when the store fails (a dead tracking server, a locked or
    removed sqlite file) the logger warns once (what failed, that training goes on, where unsent metrics
    go), keeps the metrics, and retries at later flushes, at most every ``retry_every_s`` (doubling up to
    ``RETRY_MAX_S`` while it keeps failing, so a hung server costs a step one bounded request now and
    then, see ``tracking.HTTP_LIMITS``). The buffer is bounded (``max_buffer`` metrics): past it the oldest go
    to ``unsent_path`` at once. ``close`` makes a last attempt and writes what is still unsent to
    ``unsent_path`` (JSON lines, one batch per line, with the run id), with a warning naming the file
    and the command that replays it: ``python -m lmforge.step_logging replay <file>``. Replaying is safe
    twice: MLflow keeps one copy of an identical (key, value, step, timestamp).
    """

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None, flush_every: int = 20, *,
                 unsent_path: str | Path | None = None, max_buffer: int = 100_000, retry_every_s: float = 30.0):
        self.run_id = run_id or os.environ.get(RUN_ID_ENV)
        self.tracking_uri = tracking_uri or os.environ.get(URI_ENV)
        self.flush_every = flush_every
        self.max_buffer = max_buffer
        self.retry_every_s = retry_every_s
        self.unsent_path = Path(unsent_path) if unsent_path else Path(tempfile.gettempdir(),
                                                                      f"lmforge-unsent-{self.run_id}.jsonl")
        self.unsent_metrics = 0  # metrics written to unsent_path
        self.unsent_params = 0
        self.failures = 0
        self._buffer: list[Any] = []
        self._params: list[Any] = []
        self._client: Any = None
        self._retry_at = 0.0  # time.monotonic() before which no send is tried (after a failure)
        self._wait_s = retry_every_s

    @property
    def enabled(self) -> bool:
        return bool(self.run_id and self.tracking_uri)

    @property
    def healthy(self) -> bool:
        """False while the store is failing (metrics are being buffered)."""
        return self._retry_at == 0.0

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

        self._params.extend(Param(k, str(v)[:6000]) for k, v in params.items())
        self.flush()

    def flush(self, *, force: bool = False) -> bool:
        """Send what is buffered; True when nothing is left. Never raises for a store failure."""
        if not self.enabled or not (self._buffer or self._params):
            return True
        if not force and time.monotonic() < self._retry_at:
            self._bound_buffer()
            return False
        try:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(self.tracking_uri)
            while self._params:  # MLflow accepts at most 100 params per batch
                self._client.log_batch(self.run_id, params=self._params[:100])
                del self._params[:100]
            while self._buffer:
                self._client.log_batch(self.run_id, metrics=self._buffer[:1000])
                del self._buffer[:1000]
        except Exception as err:  # noqa: BLE001 - any store failure: training goes on
            self._failed(err)
            return False
        if not self.healthy:
            logger.warning("MLflow tracking at %s works again: the buffered metrics of run %s were sent",
                           self.tracking_uri, self.run_id)
        self._retry_at, self._wait_s = 0.0, self.retry_every_s
        return True

    def close(self) -> Path | None:
        """Last attempt to send; what is still unsent goes to ``unsent_path`` (returned, or None if all sent)."""
        if self.flush(force=True) and not (self.unsent_metrics or self.unsent_params):
            return None
        self._spill(len(self._buffer))
        logger.warning("%d metric(s) and %d param(s) of MLflow run %s could not be sent to %s and are saved in %s: "
                       "once the store is back, run `python -m lmforge.step_logging replay %s`", self.unsent_metrics,
                       self.unsent_params, self.run_id,
                       self.tracking_uri, self.unsent_path, self.unsent_path)
        return self.unsent_path

    def _failed(self, err: Exception) -> None:
        self.failures += 1
        first_line = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        if self.failures == 1:
            logger.warning("MLflow tracking at %s failed (%s: %s): training continues; per-step metrics stay in "
                           "memory (up to %d), are retried every %.0f s or more, and whatever is still unsent at "
                           "the end is written to %s", self.tracking_uri, type(err).__name__, first_line,
                           self.max_buffer, self.retry_every_s, self.unsent_path)
        else:
            logger.debug("MLflow tracking still failing (%s)", first_line)
        self._client = None  # a fresh client (and store connection) at the next attempt
        self._retry_at = time.monotonic() + self._wait_s
        self._wait_s = min(self._wait_s * 2, RETRY_MAX_S)
        self._bound_buffer()

    def _bound_buffer(self) -> None:
        if len(self._buffer) > self.max_buffer:
            self._spill(len(self._buffer) - self.max_buffer)

    def _spill(self, n_metrics: int) -> None:
        """Append the oldest ``n_metrics`` buffered metrics (and every buffered param) to ``unsent_path``."""
        metrics, params = self._buffer[:n_metrics], self._params
        if not (metrics or params):
            return
        record = {"run_id": self.run_id, "tracking_uri": self.tracking_uri,
                  "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                  "params": {p.key: p.value for p in params}}
        self.unsent_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.unsent_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self.unsent_metrics += len(metrics)
        self.unsent_params += len(params)
        del self._buffer[:n_metrics]
        self._params = []


def replay_unsent(path: str | Path, tracking_uri: str | None = None) -> int:
    """Send a ``StepLogger``'s unsent-metrics file into its run(s); returns how many metrics and params were sent.

    ``tracking_uri`` overrides the one recorded in the file (the store moved). The file is renamed to
    ``<file>.sent`` once everything is in.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    path = Path(path)
    sent = 0
    clients: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        uri = tracking_uri or record["tracking_uri"]
        client = clients.setdefault(uri, MlflowClient(uri))
        metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in record["metrics"]]
        params = [Param(k, v) for k, v in record["params"].items()]
        for i in range(0, len(params), 100):
            client.log_batch(record["run_id"], params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(record["run_id"], metrics=metrics[i:i + 1000])
        sent += len(metrics) + len(params)
    path.replace(path.with_name(path.name + ".sent"))
    logger.info("replayed %d metric(s)/param(s) from %s", sent, path)
    return sent


def main(argv: list[str] | None = None) -> int:
    """``python -m lmforge.step_logging replay <file> [--tracking-uri URI]``: send a StepLogger's unsent metrics."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lmforge.step_logging")
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="send the metrics a training run could not send to MLflow")
    replay.add_argument("file")
    replay.add_argument("--tracking-uri", default=None, help="the store now (default: the one in the file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    replay_unsent(args.file, args.tracking_uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
