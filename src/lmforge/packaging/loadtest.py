"""Load-test a running chat server on loopback: N requests, bounded concurrency, rps and latency percentiles.

``python -m lmforge.packaging.loadtest --url http://127.0.0.1:8000 --requests 100 --concurrency 4``
(``make loadtest``) sends ``--requests`` chat completions from ``--concurrency`` threads (stdlib HTTP, no
extra client), measures each request's wall time and reports::

    {"requests", "ok", "errors", "concurrency", "duration_s", "rps",
     "latency_ms": {"p50", "p95", "p99", "mean", "max"}, "url", "model_version"}

``rps`` counts successful requests over the whole wall time. Percentiles interpolate linearly between
order statistics (numpy's default; ``lmforge.evaluation.speed.percentile``, the project's one). The report
is written as JSON (default: the filepath of the catalog entry ``serving_load``) and, when
``MLFLOW_TRACKING_URI`` is set, logged as metrics ``serving.rps``, ``serving.latency_p50_ms``, ... to the
``lmforge-serving`` experiment. Only loopback URLs are accepted: this is a local check, not a tool to load
someone else's server.
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

from lmforge.evaluation.speed import percentile

__all__ = ["percentile", "post_json", "record_load_report", "require_loopback", "run_load_test"]

logger = logging.getLogger(__name__)

REPORT_ENTRY = "serving_load"
"""Catalog entry whose filepath is the default ``--out`` (conf/base/catalog.yml owns the path)."""
EXPERIMENT = "lmforge-serving"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PROMPTS = ("def add(a, b):", "Write a function that reverses a string.", "What is a Python list?")


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"load tests run on loopback only (127.0.0.1/localhost), got host {host!r} in {url}")


def post_json(url: str, payload: Mapping[str, Any], timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` as JSON; returns (HTTP status, decoded JSON body), also for 4xx/5xx answers."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback URL checked by callers)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except json.JSONDecodeError:
            return exc.code, {"error": {"message": body.decode(errors="replace")}}


def run_load_test(url: str, *, requests: int = 100, concurrency: int = 4, max_tokens: int = 16,
                  prompts: Sequence[str] = DEFAULT_PROMPTS, timeout: float = 60.0) -> dict[str, Any]:
    """Send ``requests`` chat completions to ``url`` (the server root) with at most ``concurrency`` in flight."""
    require_loopback(url)
    if requests < 1 or concurrency < 1:
        raise ValueError(f"requests and concurrency must be >= 1, got {requests} and {concurrency}")
    endpoint = url.rstrip("/") + "/v1/chat/completions"

    def one(i: int) -> tuple[bool, float, str]:
        payload = {"messages": [{"role": "user", "content": prompts[i % len(prompts)]}], "max_tokens": max_tokens}
        start = time.perf_counter()
        try:
            status, body = post_json(endpoint, payload, timeout=timeout)
        except OSError as exc:  # refused, reset, timed out
            logger.warning("request %d: %s", i, exc)
            return False, (time.perf_counter() - start) * 1000, ""
        elapsed = (time.perf_counter() - start) * 1000
        if status != 200:
            logger.warning("request %d: HTTP %d %s", i, status, body.get("error", {}).get("message", ""))
            return False, elapsed, ""
        return True, elapsed, str(body.get("model", ""))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    duration = time.perf_counter() - start
    latencies = [ms for ok, ms, _ in results if ok]
    ok = len(latencies)
    report: dict[str, Any] = {
        "url": url,
        "model_version": next((v for good, _, v in results if good and v), ""),
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "duration_s": round(duration, 4),
        "rps": ok / duration if duration > 0 else 0.0,
        "latency_ms": {},
    }
    if latencies:
        report["latency_ms"] = {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                                "p99": percentile(latencies, 99), "mean": sum(latencies) / ok,
                                "max": max(latencies)}
    logger.info("load test: %d/%d ok, %.1f req/s, p50 %.1f ms, p95 %.1f ms", ok, requests, report["rps"],
                report["latency_ms"].get("p50", float("nan")), report["latency_ms"].get("p95", float("nan")))
    return report


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
    """Write the report as JSON; also log it to MLflow when a tracking URI is given or set. Returns the run id."""
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return None
    metrics = {"serving.rps": report["rps"], "serving.errors": report["errors"], "serving.requests": report["requests"]}
    metrics.update({f"serving.latency_{k}_ms": v for k, v in report["latency_ms"].items()})
    params = {k: report[k] for k in ("requests", "concurrency", "max_tokens")}
    return log_to_mlflow(metrics, params=params, tags={"model_version": str(report.get("model_version", ""))},
                         run_name="loadtest", tracking_uri=tracking_uri)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmforge.packaging.loadtest",
                                     description="Load-test a local lmforge chat server (loopback only).")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server root (default http://127.0.0.1:8000)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", default=None,
                        help=f"JSON report (default: the filepath of the catalog entry {REPORT_ENTRY})")
    args = parser.parse_args(argv)
    if args.out is None:
        from lmforge.pipelines.catalog_paths import catalog_path

        args.out = catalog_path(REPORT_ENTRY)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run_load_test(args.url, requests=args.requests, concurrency=args.concurrency, max_tokens=args.max_tokens)
    run_id = record_load_report(report, args.out)
    logger.info("report: %s%s", args.out, f" (MLflow run {run_id})" if run_id else "")
    if report["ok"] == 0:
        raise SystemExit(f"no request succeeded: is the server running at {args.url}? start it with `make serve`")


if __name__ == "__main__":
    main()
