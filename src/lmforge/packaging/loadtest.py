"""Load-test a running chat server on loopback: N requests, bounded concurrency, throughput and latencies.

``python -m lmforge.packaging.loadtest --url http://127.0.0.1:8000 --requests 100 --concurrency 4``
sends ``--requests`` chat completions from ``--concurrency`` threads (stdlib HTTP, no extra client),
measures each request's wall time and time to first token, and reports::

    {"requests", "ok", "errors", "concurrency", "duration_s", "rps", "output_tokens", "output_tokens_per_s",
     "streamed", "ttft_kind", "latency_ms": {"p50", "p95", "p99", "mean", "max"}, "ttft_ms": {...},
     "url", "model_version", "engine"}

``rps`` counts successful requests over the whole wall time, ``output_tokens_per_s`` the servers'
``usage.completion_tokens`` over the same time. The time to first token needs a server that streams
(``/health`` says ``streams``: the engine gateway, OpenAI server-sent events); our torch server does not,
so its TTFT is its full latency and ``ttft_kind`` says so. ``--sweep 1,4,8,16`` (``make loadtest``) runs
one such test per concurrency and keeps them all under ``levels`` (the level ``--concurrency`` names at
the top, where the evaluation report reads it). Percentiles interpolate linearly between order
statistics (numpy's default; ``lmforge.evaluation.speed.percentile``, the project's one). The report is
written as JSON (default: the filepath of the catalog entry ``serving_load``) and, when
``MLFLOW_TRACKING_URI`` is set, logged as metrics ``serving.rps``, ``serving.output_tokens_per_s``,
``serving.latency_p50_ms``, ``serving.ttft_p50_ms``, ... (a sweep: one step per concurrency) to the
``lmforge-serving`` experiment. Only loopback URLs are accepted: this is a local check, not a tool to load
someone else's server.

Its requests carry ``X-Lmforge-Client: loadtest``, so the server's satisfaction metric leaves them out.
A load test that reaches no server (``GET /health`` fails first) or gets no answer at all writes
nothing, neither the JSON nor an MLflow run, and exits 1 with one line: a 0 req/s report would hide
the last real one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lmforge.errors import UserError, run_cli
from lmforge.evaluation.speed import percentile

__all__ = ["check_health", "percentile", "post_json", "record_load_report", "record_sweep", "require_loopback",
           "run_load_test", "run_sweep", "stream_chat"]

logger = logging.getLogger(__name__)

REPORT_ENTRY = "serving_load"
"""Catalog entry whose filepath is the default ``--out`` (conf/base/catalog.yml owns the path)."""
EXPERIMENT = "lmforge-serving"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CLIENT_HEADER = "X-Lmforge-Client"
"""The request header naming the client; the server records it and the satisfaction metric reads it."""
CHAT_CLIENT = "chat"
"""What the interactive chat client sends: the only traffic the satisfaction metric counts as responses."""
LOADTEST_CLIENT = "loadtest"
DEFAULT_PROMPTS = ("def add(a, b):", "Write a function that reverses a string.", "What is a Python list?")


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"load tests run on loopback only (127.0.0.1/localhost), got host {host!r} in {url}")


def quiet_store_migrations() -> None:
    """MLflow creating or migrating a sqlite store logs at INFO (alembic, mlflow.store.db): not our commands' news."""
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_health(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """``GET <url>/health`` of an lmforge server; ``UserError`` (one line: start it) when none answers."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:  # noqa: S310
            body = json.loads(resp.read() or b"{}")
    except (OSError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"no lmforge server answers at {url}: {reason}",
                        "start one with `make serve`, or pass --url") from exc
    if body.get("status") != "ok":
        raise UserError(f"{url}/health answered {body!r}, not an lmforge server that is ready",
                        "start one with `make serve`, or pass --url")
    return body


def post_json(url: str, payload: Mapping[str, Any], timeout: float = 60.0,
              client: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` as JSON (naming ``client`` in ``X-Lmforge-Client``); returns (HTTP status, JSON body),
    also for 4xx/5xx answers."""
    headers = {"Content-Type": "application/json", **({CLIENT_HEADER: client} if client else {})}
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback URL checked by callers)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except json.JSONDecodeError:
            return exc.code, {"error": {"message": body.decode(errors="replace")}}


def stream_chat(url: str, payload: Mapping[str, Any], timeout: float = 60.0,
                client: str | None = None) -> tuple[int, dict[str, Any], float | None]:
    """POST ``payload`` with ``stream: true`` and read the server-sent events to the end.

    Returns (HTTP status, body, seconds to the first content piece): the body is ``{"id", "model",
    "system_fingerprint", "content", "finish_reason", "usage"}`` assembled from the chunks (or the JSON error
    of a non-200 answer, time None). The clock starts when the request is sent.
    """
    start = time.perf_counter()
    status, body = 200, {}
    headers = {"Content-Type": "application/json", **({CLIENT_HEADER: client} if client else {})}
    data = json.dumps({**payload, "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (loopback URL checked by callers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}"), None
        except json.JSONDecodeError:
            return exc.code, {"error": {"message": raw.decode(errors="replace")}}, None
    first: float | None = None
    pieces: list[str] = []
    with resp:
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[len(b"data:"):])
            if "error" in chunk:  # the server failed mid-stream: the status line was already 200
                return 502, chunk, first
            for key in ("id", "model", "system_fingerprint", "usage"):
                if chunk.get(key):
                    body[key] = chunk[key]
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first if first is not None else time.perf_counter() - start
                    pieces.append(piece)
                if choice.get("finish_reason"):
                    body["finish_reason"] = choice["finish_reason"]
                    first = first if first is not None else time.perf_counter() - start  # an empty answer
    body["content"] = "".join(pieces)
    return status, body, first


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99),
            "mean": sum(values) / len(values), "max": max(values)} if values else {}


STREAMED_TTFT = "first streamed token"
UNSTREAMED_TTFT = "full latency: the server does not stream, its first token arrives with its last"


def run_load_test(url: str, *, requests: int = 100, concurrency: int = 4, max_tokens: int = 16,
                  prompts: Sequence[str] = DEFAULT_PROMPTS, timeout: float = 60.0,
                  stream: bool | None = None) -> dict[str, Any]:
    """Send ``requests`` chat completions to ``url`` (the server root) with at most ``concurrency`` in flight.

    ``stream``: ask for server-sent events and time the first token; None (default) streams when the server's
    ``/health`` says it ``streams`` (the engine gateway), else the time to first token is the full latency
    (our torch server: ``ttft_kind`` says so). Output tokens are the servers' ``usage.completion_tokens``.
    """
    require_loopback(url)
    if requests < 1 or concurrency < 1:
        raise ValueError(f"requests and concurrency must be >= 1, got {requests} and {concurrency}")
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    health: dict[str, Any] = {}
    if stream is None:
        health = check_health(url)
        stream = bool(health.get("streams"))

    def one(i: int) -> dict[str, Any] | None:
        payload = {"messages": [{"role": "user", "content": prompts[i % len(prompts)]}], "max_tokens": max_tokens}
        start = time.perf_counter()
        try:
            if stream:
                status, body, first = stream_chat(endpoint, payload, timeout=timeout, client=LOADTEST_CLIENT)
            else:
                (status, body), first = post_json(endpoint, payload, timeout=timeout, client=LOADTEST_CLIENT), None
        except OSError as exc:  # refused, reset, timed out
            logger.warning("request %d: %s", i, exc)
            return None
        elapsed = (time.perf_counter() - start) * 1000
        if status != 200:
            logger.warning("request %d: HTTP %d %s", i, status, body.get("error", {}).get("message", ""))
            return None
        return {"ms": elapsed, "ttft_ms": elapsed if first is None else first * 1000,
                "tokens": int((body.get("usage") or {}).get("completion_tokens", 0)),
                "model": str(body.get("model", "")), "engine": str(body.get("system_fingerprint", ""))}

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    duration = time.perf_counter() - start
    good = [r for r in results if r is not None]
    ok = len(good)
    tokens = sum(r["tokens"] for r in good)
    report: dict[str, Any] = {
        "url": url,
        "model_version": next((r["model"] for r in good if r["model"]), ""),
        "engine": next((r["engine"] for r in good if r["engine"]), str(health.get("engine", ""))),
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "streamed": stream,
        "ttft_kind": STREAMED_TTFT if stream else UNSTREAMED_TTFT,
        "duration_s": round(duration, 4),
        "rps": ok / duration if duration > 0 else 0.0,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / duration if duration > 0 else 0.0,
        "latency_ms": _summary([r["ms"] for r in good]),
        "ttft_ms": _summary([r["ttft_ms"] for r in good]),
    }
    logger.info("load test c=%d: %d/%d ok, %.1f req/s, %.0f output tokens/s, TTFT p50 %.1f ms, p95 %.1f ms",
                concurrency, ok, requests, report["rps"], report["output_tokens_per_s"],
                report["ttft_ms"].get("p50", float("nan")), report["latency_ms"].get("p95", float("nan")))
    return report


SWEEP = (1, 4, 8, 16)
"""The concurrency levels of a sweep (``--sweep``; the serving bench)."""


def run_sweep(url: str, *, concurrencies: Sequence[int] = SWEEP, requests: int = 32,
              **kwargs: Any) -> dict[str, Any]:
    """`run_load_test` at each concurrency, same prompts: ``{"url", "engine", "model_version", "levels":
    {"<concurrency>": report}}``. ``requests`` per level is at least twice the concurrency."""
    levels = {str(c): run_load_test(url, requests=max(requests, 2 * c), concurrency=c, **kwargs)
              for c in concurrencies}
    first = next(iter(levels.values()))
    return {"url": url, "engine": first["engine"], "model_version": first["model_version"], "levels": levels}


def log_to_mlflow(metrics: Mapping[str, float], *, params: Mapping[str, Any], tags: Mapping[str, str],
                  run_name: str, tracking_uri: str | None = None) -> str:
    """Log one run into the ``lmforge-serving`` experiment; returns its run id."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_metrics(dict(metrics))
        if params:
            mlflow.log_params(dict(params))
        if tags:
            mlflow.set_tags(dict(tags))
    return run.info.run_id


def record_load_report(report: Mapping[str, Any], out_json: str | Path,
                       tracking_uri: str | None = None) -> str | None:
    """Write the report as JSON; also log it to MLflow when a tracking URI is given or set. Returns the run id.

    A report without one answered request is refused (``UserError``) before anything is written.
    """
    if not report["ok"]:
        raise UserError(f"no request to {report['url']} succeeded ({report['errors']} failed): nothing recorded",
                        "check the server's log; `make serve` starts one")
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return None
    params = {k: report[k] for k in ("requests", "concurrency", "max_tokens")}
    return log_to_mlflow(report_metrics(report), params=params, tags=_tags(report), run_name="loadtest",
                         tracking_uri=tracking_uri)


def report_metrics(report: Mapping[str, Any], prefix: str = "serving.") -> dict[str, float]:
    """The MLflow metrics of one load-test report: rps, output tokens/s, errors, latency and TTFT percentiles."""
    metrics = {f"{prefix}rps": report["rps"], f"{prefix}errors": report["errors"],
               f"{prefix}requests": report["requests"]}
    if "output_tokens_per_s" in report:
        metrics[f"{prefix}output_tokens_per_s"] = report["output_tokens_per_s"]
    metrics.update({f"{prefix}latency_{k}_ms": v for k, v in report["latency_ms"].items()})
    metrics.update({f"{prefix}ttft_{k}_ms": v for k, v in report.get("ttft_ms", {}).items()})
    return metrics


def _tags(report: Mapping[str, Any]) -> dict[str, str]:
    tags = {"model_version": str(report.get("model_version", ""))}
    if report.get("engine"):
        tags["engine"] = str(report["engine"])
    if "ttft_kind" in report:
        tags["ttft_kind"] = str(report["ttft_kind"])
    return tags


def record_sweep(sweep: Mapping[str, Any], out_json: str | Path, tracking_uri: str | None = None,
                 primary: int = 4) -> str | None:
    """Write a `run_sweep` result as JSON: the level at concurrency ``primary`` (else the first) at the top,
    as `record_load_report` writes one report (what the evaluation report reads), and all levels under
    ``levels``; log one MLflow run whose metrics have one step per concurrency. Returns the run id."""
    levels = sweep["levels"]
    if not any(level["ok"] for level in levels.values()):
        raise UserError(f"no request to {sweep['url']} succeeded at any concurrency: nothing recorded",
                        "check the server's log; `make serve` starts one")
    top = dict(levels.get(str(primary)) or next(iter(levels.values())))
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**top, "levels": levels}, indent=2) + "\n", encoding="utf-8")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="loadtest-sweep") as run:
        for c, level in levels.items():
            if level["ok"]:
                mlflow.log_metrics(report_metrics(level), step=int(c))
        mlflow.log_params({"concurrencies": ",".join(levels), "max_tokens": top["max_tokens"]})
        mlflow.set_tags(_tags(top))
    return run.info.run_id


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmforge.packaging.loadtest",
                                     description="Load-test a local lmforge chat server (loopback only).")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server root (default http://127.0.0.1:8000)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sweep", default=None, help="comma-separated concurrencies, e.g. 1,4,8,16: one load test "
                        "per level (--requests each, at least 2x the level); the JSON holds them all under levels")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", default=None,
                        help=f"JSON report (default: the filepath of the catalog entry {REPORT_ENTRY})")
    parser.add_argument("--verbose", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    if args.out is None:
        from lmforge.pipelines.catalog_paths import catalog_path

        args.out = catalog_path(REPORT_ENTRY)
    try:
        require_loopback(args.url)
    except ValueError as exc:
        raise UserError(str(exc), "start the server with `make serve` and point --url at 127.0.0.1") from None
    check_health(args.url)  # before anything is logged or written
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_store_migrations()
    if args.sweep:
        levels = [int(c) for c in args.sweep.split(",")]
        sweep = run_sweep(args.url, concurrencies=levels, requests=args.requests, max_tokens=args.max_tokens)
        run_id = record_sweep(sweep, args.out, primary=args.concurrency)
    else:
        report = run_load_test(args.url, requests=args.requests, concurrency=args.concurrency,
                               max_tokens=args.max_tokens)
        run_id = record_load_report(report, args.out)
    logger.info("report: %s%s", args.out, f" (MLflow run {run_id})" if run_id else "")


if __name__ == "__main__":
    run_cli(main, "lmforge.packaging.loadtest")
