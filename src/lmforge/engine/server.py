"""Run llama.cpp's ``llama-server`` on a GGUF file as a child process that never outlives us.

``LlamaServer(model).start()`` returns once ``GET /health`` answers 200 (the model is loaded); ``url`` is
then an OpenAI-compatible endpoint (``/v1/chat/completions``, ``/completion``, ``/tokenize``,
``/apply-template``...). What the server is told, and why:

- ``--parallel N --cont-batching``: N slots decoded together, a new request joining the running batch at
  the next step (continuous batching; llama.cpp's default, passed explicitly so the command line says it);
- ``--ctx-size`` defaults to ``N x`` the model's training context (``n_ctx_train`` of the GGUF): with an
  explicit ``--parallel`` the KV cache is split evenly between the slots, so each holds a whole context;
- ``--jinja``: the engine renders the GGUF's own chat template (ours, written by ``lmforge.engine.gguf``),
  so what the engine is given is what ``lmforge.engine.parity`` checks; ``chat_template`` overrides it
  (a file passed as ``--chat-template-file``: the parity tests use it to alter the template on purpose);
- ``--threads`` defaults to half the logical CPUs (`default_threads`); ``--no-webui``: an API, nothing to browse.

The child dies with us: it runs in its own process group (``start_new_session``), ``close`` sends SIGTERM
to the group, then SIGKILL; and ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` kills it when the process that
started it dies, even by SIGKILL (``lmforge.processes.die_with``; Linux; the signal follows the *thread* that started the child, so start
servers from a thread that lives as long as they should). The server's output goes to a log file (a temp
file unless ``log_path`` is given); a failed start raises ``UserError`` with its last lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from lmforge.engine.llama_cpp import tool
from lmforge.errors import UserError
from lmforge.processes import die_with  # the one copy (lmforge.processes); re-exported for old imports

__all__ = ["LlamaServer", "die_with", "free_port"]

logger = logging.getLogger(__name__)

_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
LOG_TAIL_LINES = 8


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def default_threads() -> int:
    """Half the logical CPUs (the physical cores where there is SMT), at least 1: llama-server's ``--threads``.

    Not all of them: llama.cpp's threads spin at a barrier every step, and when another process holds one of
    the cores the whole batch waits. Measured on a shared 2-core machine (tiny model, q8_0, 8 slots, 16
    tokens): 2 threads 4.9 req/s at concurrency 8 with a 2.9 s worst latency, 1 thread 197 req/s (71 ms).
    """
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaServer:
    """``llama-server`` on ``model`` (a GGUF file), as a context manager (the module docstring says how)."""

    def __init__(self, model: str | Path, *, host: str = "127.0.0.1", port: int | None = None, parallel: int = 8,
                 ctx_size: int | None = None, threads: int | None = None, chat_template: str | None = None,
                 extra_args: Sequence[str] = (), log_path: str | Path | None = None):
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        self.model = Path(model)
        self.host = host
        self.port = port
        self.parallel = parallel
        self.ctx_size = ctx_size
        self.threads = threads or default_threads()
        self.chat_template = chat_template
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self._template_file: Path | None = None
        self.process: subprocess.Popen | None = None
        self._healthy = False

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has no port before start()")
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The ``llama-server`` command line (resolves the port and the context size)."""
        if self.port is None:
            self.port = free_port(self.host)
        if self.ctx_size is None:
            from lmforge.engine.gguf import gguf_metadata

            try:
                n_ctx_train = gguf_metadata(self.model)["context_length"]
            except (ValueError, OSError, KeyError, IndexError) as err:
                raise UserError(f"{self.model} is not a readable GGUF file: {err}",
                                "export it again (lmforge.engine.gguf.export_gguf)") from err
            if not n_ctx_train:
                raise UserError(f"{self.model} has no context length in its metadata", "pass ctx_size")
            self.ctx_size = self.parallel * int(n_ctx_train)
        cmd = [str(tool("llama-server")), "-m", str(self.model), "--host", self.host, "--port", str(self.port),
               "--parallel", str(self.parallel), "--ctx-size", str(self.ctx_size), "--threads", str(self.threads),
               "--cont-batching", "--jinja", "--no-webui"]
        if self._template_file is not None:
            cmd += ["--chat-template-file", str(self._template_file)]
        return cmd + self.extra_args

    def start(self, timeout: float = 120) -> LlamaServer:
        """Start the server and wait until ``/health`` is 200; UserError (with the log's last lines) otherwise."""
        if self.process is not None:
            raise RuntimeError("server already started")
        if not self.model.is_file():
            raise UserError(f"GGUF model not found: {self.model}", "export it first (lmforge.engine.gguf.export_gguf)")
        if self.port is not None and _port_busy(self.host, self.port):
            raise UserError(f"port {self.port} on {self.host} is busy", "pick another port, or none for a free one")
        try:
            if self.chat_template is not None:
                fd, name = tempfile.mkstemp(prefix="lmforge-template-", suffix=".jinja")
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(self.chat_template)
                self._template_file = Path(name)
            cmd = self.command()
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"llama-server-{self.model.stem}-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
            logger.info("starting %s (log: %s)", " ".join(cmd), self.log_path)
            started = time.perf_counter()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, preexec_fn=die_with(os.getpid()))  # noqa: PLW1509
            self._wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        logger.info("llama-server pid %d ready at %s in %.1f s", self.process.pid, self.url,
                    time.perf_counter() - started)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise UserError(f"llama-server exited with {code} while starting on {self.model}: {self.log_tail()}",
                                f"full log: {self.log_path}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with _LOOPBACK.open(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        self._healthy = True
                        return
            if time.monotonic() > deadline:
                raise UserError(f"llama-server on {self.model} not healthy after {timeout:.0f} s: {self.log_tail()}",
                                f"full log: {self.log_path}")
            time.sleep(0.1)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The log's last ``lines`` non-empty lines, joined by `` | `` (one line for an error message)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])

    def close(self) -> None:
        """SIGTERM the server's process group, wait 10 s, then SIGKILL; remove our temp files (the temp log of a
        server that failed to start stays: the error names it)."""
        process, self.process = self.process, None
        if process is not None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("llama-server pid %d ignored %s", process.pid, sig.name)
        if self._template_file is not None:
            self._template_file.unlink(missing_ok=True)
            self._template_file = None
        if self._healthy and self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> LlamaServer:
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
