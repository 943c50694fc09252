"""Start the inference engine behind the gateway as a child process that dies with us.

`start_engine` is a context manager yielding ``(url, fingerprint)`` for the engine of a `ServingConfig`:

- ``llama.cpp``: ``lmforge.engine.server.LlamaServer`` on the package's GGUF of the configured format
  (`find_gguf`: ``<gguf_dir>/<model_name>-<format>.gguf``), ``--parallel`` slots, a KV cache of
  ``parallel`` x the model's context so that every slot holds a full conversation. Fingerprint
  ``llama.cpp:<format>:<first 12 hex of the GGUF's sha256>``.
- ``vllm``: ``vllm serve <package dir> --host 127.0.0.1 --port <free>`` when a ``vllm`` executable is on
  PATH (vLLM lives in its own environment on a GPU machine: its pins are not ours); else one line saying
  so. Fingerprint ``vllm:<dtype of the package>:<weights sha 12>``. Not run here: this machine has no GPU.

Both children get their own process group and ``PR_SET_PDEATHSIG`` (SIGTERM when the gateway dies, even
by SIGKILL), and are closed when the context exits (SIGINT/SIGTERM of the gateway end uvicorn, then this).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from lmforge.engine.gguf import file_sha256
from lmforge.errors import UserError
from lmforge.packaging.serving_config import FORMATS, ServingConfig

logger = logging.getLogger(__name__)




def find_gguf(gguf_dir: str | Path, fmt: str) -> Path:
    """The one ``*-<fmt>.gguf`` in ``gguf_dir``; UserError (what to run) when there is none or several."""
    gguf_dir = Path(gguf_dir)
    found = sorted(gguf_dir.glob(f"*-{fmt}.gguf"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no {fmt} GGUF (*-{fmt}.gguf) in {gguf_dir}",
                        "run `make run` (the packaging stage exports the GGUFs), pass --gguf FILE, "
                        "or serve without the engine: make serve SERVE_ENGINE=torch")
    raise UserError(f"{len(found)} {fmt} GGUFs in {gguf_dir}: {', '.join(p.name for p in found)}",
                    "pass the one to serve with --gguf FILE")


@contextlib.contextmanager
def _vllm(model_dir: Path, config: ServingConfig) -> Iterator[str]:
    exe = shutil.which("vllm")
    if exe is None:
        raise UserError("--engine vllm: no `vllm` executable on PATH (vLLM needs a GPU and pins its own torch/"
                        "transformers)", "install vllm in its own environment on a GPU machine, put its bin/ on "
                        "PATH, then rerun; on a CPU use --engine llama.cpp")
    from lmforge.engine.server import free_port
    from lmforge.processes import die_with

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
           "--max-num-seqs", str(max(config.parallel, 1))]
    logger.info("starting %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with(os.getpid(), signal.SIGTERM))  # noqa: S603, PLW1509 (our own argv)
    try:
        deadline = time.monotonic() + config.engine_startup_s
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise UserError(f"vllm serve exited with status {proc.returncode} before it was ready",
                                "its log is above; check the GPU and the vLLM environment")
            if time.monotonic() > deadline:
                raise UserError(f"vllm serve was not ready after {config.engine_startup_s:.0f} s",
                                "raise --engine-startup-s, or read its log above")
            time.sleep(1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def check_gguf_lineage(model_dir: Path, gguf: Path, sha256: str) -> None:
    """The GGUF must be one shipped with this package: its model card (README.md, written by the packaging
    stage) lists every shipped GGUF's sha256 (16 hex). Serving ``models:/<name>@champion`` with the local
    catalog's GGUF folder would otherwise answer with another version's weights under the champion's name.
    A card that lists no GGUF (a package made with ``packaging.engine.enabled: false``, or elsewhere) is
    only warned about: nothing to check against.
    """
    card = model_dir / "README.md"
    listed = re.findall(r"\| `([0-9a-f]{16})` \|", card.read_text(encoding="utf-8")) if card.is_file() else []
    if not listed:
        logger.warning("the package %s lists no GGUF files: cannot check that %s was made from it", model_dir, gguf)
        return
    if sha256[:16] not in listed:
        raise UserError(f"{gguf} (sha256 {sha256[:16]}) is not one of the GGUF files shipped with the package "
                        f"{model_dir} (its model card lists {', '.join(listed)})",
                        "serve the GGUF folder made with this package (--gguf FILE), rerun `make run`, or serve "
                        "without the engine: make serve SERVE_ENGINE=torch")


@contextlib.contextmanager
def start_engine(config: ServingConfig, model_dir: str | Path, *, gguf: str | Path | None = None,
                 gguf_dir: str | Path | None = None) -> Iterator[tuple[str, str]]:
    """``(url, fingerprint)`` of a running engine for the package in ``model_dir``; stopped on exit."""
    model_dir = Path(model_dir)
    max_context = int(json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
                      .get("max_position_embeddings") or 0)
    if config.engine == "vllm":
        from lmforge.packaging.chat_model import default_model_version

        dtype = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("torch_dtype", "auto")
        with _vllm(model_dir, config) as url:
            yield url, f"vllm:{dtype}:{default_model_version(model_dir).rpartition('@')[2]}"
        return
    if config.engine != "llama.cpp":
        raise ValueError(f"start_engine starts llama.cpp or vllm, not {config.engine!r}")
    from lmforge.engine.server import LlamaServer

    if gguf is None and gguf_dir is None:
        raise UserError("no GGUF to serve: --gguf not given and the catalog has no packaged_gguf folder",
                        "pass --gguf FILE, or serve without the engine: make serve SERVE_ENGINE=torch")
    path = Path(gguf) if gguf else find_gguf(gguf_dir, config.format)
    if not path.is_file():
        raise UserError(f"GGUF file {path} not found", "pass an existing --gguf, or run `make run` to export them")
    fmt = next((f for f in FORMATS if path.name.endswith(f"-{f}.gguf")), config.format)  # --gguf names its own
    sha = file_sha256(path)
    check_gguf_lineage(model_dir, path, sha)
    fingerprint = f"llama.cpp:{fmt}:{sha[:12]}"
    server = LlamaServer(path, parallel=config.parallel, threads=config.engine_threads,
                         ctx_size=max_context * config.parallel if max_context else None)
    server.start(timeout=config.engine_startup_s)
    try:
        logger.info("engine llama-server (%s, %d slots) on %s", path.name, config.parallel, server.url)
        yield server.url, fingerprint
    finally:
        server.close()
