"""Serving on loopback: today's torch server versus our gateway + the llama.cpp engine, each GGUF format.

    .venv/bin/python bench/serving.py [--model DIR] [--gguf-dir DIR] [--formats f32,f16,q8_0,q4_k_m]
        [--concurrency 1,4,8,16] [--requests 32] [--max-tokens 64] [--rounds 2] [--threads 2] [--quick]

The model is one packaged model (``--model``; default ``data/07_model_output/lmforge-chat``): the torch
server loads its HF folder (fp32, ``lmforge.generation``, one request at a time), the gateway serves its
GGUF files (``--gguf-dir``, default the catalog's ``packaged_gguf`` folder; when that has no GGUF of a
format, ``lmforge.engine.gguf.export_gguf`` writes them into a temporary folder first). Each server is
started the way ``make serve`` starts it (``python -m lmforge.packaging.serve --engine ...``, with
``ServingConfig``'s defaults: llama.cpp with 8 slots), one at a time, with the same ``--threads`` (torch's
``OMP_NUM_THREADS``, llama.cpp's ``--threads``), and gets the same load: ``lmforge.packaging.loadtest``'s
``run_load_test`` at each concurrency (``--requests`` requests, at least 2x the concurrency), the same 32 chat
prompts (bench/generation_speed.py's) in the same order, greedy, ``max_tokens`` ``--max-tokens``, after 4
warm-up requests. All servers are up at once (an idle one costs no CPU) and the measurements interleave:
``--rounds`` rounds, each over every level with the servers in a rotated order, and each server keeps its
best round per level (by output tokens/s): the machine is shared, its load moves between minutes.

Per server and concurrency: requests/s, output tokens/s (the servers' ``usage.completion_tokens`` over
the wall time), time to first token (the gateway streams; the torch server does not, its TTFT is its
full latency: ``ttft_kind`` says so) and latency p50/p95/p99. Ratios, per format: engine / torch output
tokens/s at concurrency 8 (acceptance >= 3x), and engine / torch single-request latency (p50 at
concurrency 1; acceptance <= 1.2x; also per output token, since quantized models may stop elsewhere).
Written to ``bench/results/serving.json``, logged to MLflow (experiment ``lmforge-serving``, metrics with
one step per concurrency), and plotted to ``bench/results/serving.html`` (output tokens/s and p95 latency
against concurrency, one line per server; inline SVG, opens offline).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
logger = logging.getLogger("bench.serving")

PACKAGED_MODEL = ROOT / "data/07_model_output/lmforge-chat"
ACCEPT_THROUGHPUT_C8 = 3.0
ACCEPT_SINGLE_LATENCY = 1.2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m lmforge.packaging.serve`` in its own process group on a free loopback port."""

    def __init__(self, name: str, args: list[str], work: Path, threads: int):
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"{name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env.pop("MLFLOW_TRACKING_URI", None)  # the servers log nothing; the bench logs its one run
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmforge.packaging.serve", *args, "--port", str(self.port),
                 "--feedback-db", str(work / f"{name}.sqlite"), "--max-tokens-limit", "512"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)

    def wait(self, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    return json.loads(resp.read())
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_ggufs(model: Path, gguf_dir: Path | None, formats: list[str], work: Path,
               tokenizer_model: Path | None) -> dict[str, Path]:
    """``{format: GGUF file}``: from ``gguf_dir`` where it has them, else exported into ``work``."""
    found: dict[str, Path] = {}
    if gguf_dir and gguf_dir.is_dir():
        for fmt in formats:
            matches = sorted(gguf_dir.glob(f"*-{fmt}.gguf"))
            if len(matches) == 1:
                found[fmt] = matches[0]
    missing = [f for f in formats if f not in found]
    if missing:
        from lmforge.engine.gguf import export_gguf

        logger.info("exporting %s GGUF(s) of %s into %s", ",".join(missing), model, work)
        start = time.perf_counter()
        exported = export_gguf(model, work, name=model.name, formats=tuple(missing), tokenizer_model=tokenizer_model)
        logger.info("exported in %.1f s", time.perf_counter() - start)
        found.update({fmt: exported[fmt].path for fmt in missing})
    return {fmt: found[fmt] for fmt in formats}


def plot(result: dict, out: Path) -> None:
    """A self-contained HTML page (inline SVG, no script, opens offline): output tokens/s and p95 latency
    against concurrency, one line per server."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, server in result["servers"].items():
        levels = server["levels"]
        cs = [int(c) for c in levels]
        axes[0].plot(cs, [levels[c]["output_tokens_per_s"] for c in levels], marker="o", label=name)
        axes[1].plot(cs, [levels[c]["latency_ms"]["p95"] for c in levels], marker="o", label=name)
    for ax, title in zip(axes, ("output tokens/s", "latency p95 (ms)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(c) for c in result["concurrency"]], [str(c) for c in result["concurrency"]])
        ax.set_xlabel("concurrency")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    svg = io.StringIO()
    fig.tight_layout()
    fig.savefig(svg, format="svg")
    plt.close(fig)
    title = (f"Serving {result['model']['path']} on loopback ({result['threads']} threads): "
             "torch server vs gateway + llama.cpp")
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                   f"<body><h2>{title}</h2>{svg.getvalue()}</body></html>\n", encoding="utf-8")


def log_mlflow(result: dict, files: list[Path]) -> str:
    import mlflow

    from lmforge.packaging.loadtest import EXPERIMENT, report_metrics

    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="bench-serving") as run:
        for name, server in result["servers"].items():
            for c, level in server["levels"].items():
                mlflow.log_metrics(report_metrics(level, prefix=f"bench.{name}."), step=int(c))
        for fmt, ratios in result["ratios"].items():
            mlflow.log_metrics({f"bench.ratio.{fmt}.{k}": v for k, v in ratios.items() if isinstance(v, float)})
        mlflow.log_params({"model": result["model"]["path"], "threads": result["threads"],
                           "max_tokens": result["max_tokens"], "concurrency": ",".join(result["concurrency"]),
                           "requests_per_level": result["requests_per_level"]})
        for path in files:
            mlflow.log_artifact(str(path))
    return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(PACKAGED_MODEL), help="packaged HF model folder")
    parser.add_argument("--gguf-dir", default=None, help="folder of <name>-<format>.gguf (default: the catalog's "
                        "packaged_gguf; missing formats are exported into a temporary folder)")
    parser.add_argument("--tokenizer-model", default=None, help="sentencepiece model for exporting GGUFs (default: "
                        "the tokenizer stage's tokenizer.model of the package's project, when there)")
    parser.add_argument("--formats", default="f32,f16,q8_0,q4_k_m")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level (>= 2x the level)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all servers and levels; each keeps its best")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each server (the same for all; 1: on "
                        "the shared 2-core machine 2 llama.cpp threads were 40x slower at concurrency 8, spinning)")
    parser.add_argument("--quick", action="store_true", help="q8_0 only, concurrency 1,8, 16 tokens; nothing saved")
    parser.add_argument("--out", default=str(ROOT / "bench/results/serving.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from generation_speed import PROMPTS

    from lmforge.packaging.loadtest import quiet_store_migrations, run_load_test

    quiet_store_migrations()
    if args.quick:
        args.formats, args.concurrency, args.max_tokens, args.requests, args.rounds = "q8_0", "1,8", 16, 16, 1
    model = Path(args.model).resolve()
    if not (model / "config.json").is_file():
        sys.exit(f"error: {model} is not a packaged model (no config.json): run `make run`, or pass --model DIR")
    gguf_dir = Path(args.gguf_dir) if args.gguf_dir else None
    if gguf_dir is None:
        from lmforge.pipelines.catalog_paths import catalog_path

        try:  # the package's own project (the catalog's layout), as for the tokenizer below
            gguf_dir = model.parents[2] / catalog_path("packaged_gguf", ROOT)
        except KeyError:
            gguf_dir = None
    formats = args.formats.split(",")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    tokenizer_model = Path(args.tokenizer_model) if args.tokenizer_model else None
    if tokenizer_model is None:  # the tokenizer stage's, in the project the package belongs to (the catalog's layout)
        from lmforge.pipelines.catalog_paths import catalog_path

        candidate = model.parents[2] / catalog_path("tokenizer", ROOT) / "tokenizer.model"
        tokenizer_model = candidate if candidate.is_file() else None
    ggufs = find_ggufs(model, gguf_dir, formats, work, tokenizer_model)
    contenders = {"torch": ["--engine", "torch", "--model", str(model), "--device", "cpu"]}
    for fmt, path in ggufs.items():
        contenders[f"llama.cpp-{fmt}"] = ["--engine", "llama.cpp", "--model", str(model), "--gguf", str(path),
                                          "--engine-threads", str(args.threads)]
    servers: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        running = {name: stack.enter_context(Server(name, server_args, work, args.threads))
                   for name, server_args in contenders.items()}
        for name, server in running.items():  # all up at once (idle servers cost no CPU): the rounds interleave
            health = server.wait()
            logger.info("%s: %s", name, health)
            run_load_test(server.url, requests=4, concurrency=1, max_tokens=args.max_tokens, prompts=PROMPTS)  # warm-up
            servers[name] = {"engine": health.get("engine"), "streams": health.get("streams"), "levels": {},
                             "rounds_output_tokens_per_s": {str(c): [] for c in concurrency}}
            if name != "torch":
                gguf = ggufs[name.split("-", 1)[1]]
                servers[name].update(gguf=str(gguf), gguf_bytes=gguf.stat().st_size)
        order = list(running)
        for r in range(args.rounds):  # each round: every level, the servers in a rotated order; keep each best
            for c in concurrency:
                for name in order[r % len(order):] + order[:r % len(order)]:
                    report = run_load_test(running[name].url, requests=max(args.requests, 2 * c), concurrency=c,
                                           max_tokens=args.max_tokens, prompts=PROMPTS, timeout=600)
                    servers[name]["rounds_output_tokens_per_s"][str(c)].append(report["output_tokens_per_s"])
                    best = servers[name]["levels"].get(str(c))
                    if best is None or report["output_tokens_per_s"] > best["output_tokens_per_s"]:
                        servers[name]["levels"][str(c)] = report

    def at(name: str, c: int) -> dict:
        return servers[name]["levels"][str(c)]

    ratios: dict[str, dict] = {}
    c_hi, c_lo = (8 if 8 in concurrency else max(concurrency)), min(concurrency)
    for fmt in ggufs:
        eng, ref = f"llama.cpp-{fmt}", "torch"
        per_token = [at(n, c_lo)["latency_ms"]["p50"] / max(1, at(n, c_lo)["output_tokens"] / at(n, c_lo)["ok"])
                     for n in (eng, ref)]
        ratios[fmt] = {
            f"output_tokens_per_s_c{c_hi}": at(eng, c_hi)["output_tokens_per_s"] / at(ref, c_hi)["output_tokens_per_s"],
            f"rps_c{c_hi}": at(eng, c_hi)["rps"] / at(ref, c_hi)["rps"],
            f"latency_p50_c{c_lo}": at(eng, c_lo)["latency_ms"]["p50"] / at(ref, c_lo)["latency_ms"]["p50"],
            f"latency_p50_per_output_token_c{c_lo}": per_token[0] / per_token[1],
            f"latency_p95_c{c_hi}": at(eng, c_hi)["latency_ms"]["p95"] / at(ref, c_hi)["latency_ms"]["p95"],
        }
        ratios[fmt]["accepted"] = bool(ratios[fmt][f"output_tokens_per_s_c{c_hi}"] >= ACCEPT_THROUGHPUT_C8
                                       and ratios[fmt][f"latency_p50_c{c_lo}"] <= ACCEPT_SINGLE_LATENCY)
        logger.info("%s / torch: output tokens/s at c=%d %.2fx, single-request p50 latency %.2fx (per token %.2fx)",
                    fmt, c_hi, ratios[fmt][f"output_tokens_per_s_c{c_hi}"], ratios[fmt][f"latency_p50_c{c_lo}"],
                    ratios[fmt][f"latency_p50_per_output_token_c{c_lo}"])
    import torch

    config = json.loads((model / "config.json").read_text())
    result = {
        "what": "loopback serving: torch server (python -m lmforge.packaging.serve --engine torch, fp32, one request "
                "at a time) vs our gateway + llama-server (--engine llama.cpp, ServingConfig defaults) per GGUF "
                "format; same package, prompts, max_tokens, threads; greedy",
        "model": {"path": str(model), "model_type": config.get("model_type"),
                  "hidden_size": config.get("hidden_size"), "layers": config.get("num_hidden_layers"),
                  "vocab_size": config.get("vocab_size"), "context": config.get("max_position_embeddings")},
        "prompts": len(PROMPTS), "max_tokens": args.max_tokens, "threads": args.threads,
        "concurrency": [str(c) for c in concurrency], "requests_per_level": args.requests, "rounds": args.rounds,
        "servers": servers,
        "ratios": ratios,
        "acceptance": {f"output_tokens_per_s_c{c_hi}": f">= {ACCEPT_THROUGHPUT_C8}",
                       f"latency_p50_c{c_lo}": f"<= {ACCEPT_SINGLE_LATENCY}"},
        "load_average_after": os.getloadavg(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
    }
    text = json.dumps(result, indent=2) + "\n"
    if not args.quick:
        out = Path(args.out)
        out.write_text(text)
        html = out.with_suffix(".html")
        plot(result, html)
        result["mlflow_run_id"] = log_mlflow(result, [out, html])
        out.write_text(json.dumps(result, indent=2) + "\n")
        logger.info("wrote %s and %s (MLflow run %s)", out, html, result["mlflow_run_id"])
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
