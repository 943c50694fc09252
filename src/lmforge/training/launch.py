"""Start a multi-process training job (torchrun or the deepspeed launcher) and wait for it.

The Kedro node calls ``launch_job``: the spec is written to ``<run_dir>/job.json``, every rank runs
``python -m lmforge.training.<kind> --config <run_dir>/job.json``, they write ``<run_dir>/train.log``
(which this process follows into its own log), and rank 0's ``<run_dir>/result.json`` is returned. A failed
job raises ``TrainingError`` with the tail of the log, not a bare exit code.

Nothing outlives the caller (``lmforge.processes``): the launcher is started with ``die_with`` (the kernel
SIGKILLs it when this process dies, however it dies) and the job's environment names this process as the
owner (``owner_env``), which every rank watches (``guard_process``, first thing in its ``main``): a rank whose
launcher or owner is gone ends itself within ~1 s. The deepspeed launcher's middle level
(``deepspeed.launcher.launch``, which we cannot instrument) exits within its 1 s poll once a rank has ended.
Measured on 2 CPU cores under load 8, 2 gloo ranks mid-training, after a SIGKILL of the process that called
``launch_job``: torchrun and both ranks gone in 0.1-0.4 s (tests/test_processes.py); deepspeed: the runner
at once, the ranks in <= 1.2 s, ``deepspeed.launcher.launch`` in 3.6 s (by hand). A rank on another host (multi-node) cannot see the owner: it
keeps the watch on its local launcher only.

CPU: processes share the cores over gloo. GPU: one process per GPU over NCCL. Multi-node: the
deepspeed launcher with a hostfile (see README), or torchrun with ``nnodes``/``master_addr``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmforge import locks, processes
from lmforge.errors import UserError
from lmforge.training.config import JobSpec, LaunchArgs

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A training job failed; the message carries the ranks' error lines and the last lines of its log."""


RUN_DIR_WAIT_S = 5.0


class RunDirLockedError(TrainingError, UserError):
    """A job not started: another trainer (an orphan of a killed run) holds its run directory; names it and says
    what to do (a ``UserError``: one line, no hint about the job's log, which is the holder's)."""

    def __init__(self, message: str, next_step: str | None = None):
        UserError.__init__(self, message, next_step)


# Rank 0 writes this after every rank passed the job's final barrier (``loop.finish_job``): the outputs
# are complete even if a process then fails while the interpreter shuts down.
COMPLETE_MARKER = "complete"
_ERROR_LINE = re.compile(r"Traceback|Error|Exception|terminate called|what\(\):|Abort|Killed|Segmentation fault")
_NOT_AN_ERROR = re.compile(r"Warning|warnings\.warn|ChildFailedError|error_file:")

_LOCKED = re.compile(r"LockedError: ")  # rank 0's refusal (``loop.lock_run_dir``)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_nproc(launch: LaunchArgs) -> int:
    """``launch.nproc_per_node``, where 0 means one process per visible GPU."""
    if launch.nproc_per_node > 0:
        return launch.nproc_per_node
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        raise ValueError("launch.nproc_per_node: 0 means one process per GPU, but no GPU is visible; "
                         "set a number (e.g. 2 on CPU)")
    return n


def build_command(module: str, config_path: str | Path, launch: LaunchArgs, port: int) -> list[str]:
    """The launcher command line for ``module`` (a ``python -m`` target)."""
    launch = replace(launch, nproc_per_node=resolve_nproc(launch))
    if launch.launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launch.nproc_per_node}",
               f"--nnodes={launch.nnodes}", f"--master_addr={launch.master_addr}", f"--master_port={port}"]
        if launch.nnodes > 1:
            cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={launch.master_addr}:{port}"]
        return [*cmd, "-m", module, "--config", str(config_path)]
    if launch.launcher == "deepspeed":
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", f"--master_port={port}"]
        # With a hostfile the runner takes the first host as master unless one is named: loopback
        # would send every other node to itself.
        if not launch.hostfile or launch.master_addr not in LOOPBACK:
            cmd.append(f"--master_addr={launch.master_addr}")
        if launch.hostfile:
            cmd += [f"--hostfile={launch.hostfile}", f"--num_nodes={launch.nnodes}"]
        else:
            cmd += [f"--num_gpus={launch.nproc_per_node}"]
        return [*cmd, "--module", module, "--config", str(config_path)]
    raise ValueError(f"unknown launcher {launch.launcher!r}: use 'torchrun' or 'deepspeed'")


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env.update(processes.owner_env())  # this process owns the job: its ranks end when it is gone
    # Ranks must import this package even when the caller put src/ on sys.path by hand.
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch

        if not torch.cuda.is_available():
            env.setdefault("DS_ACCELERATOR", "cpu")
    except ImportError:  # pragma: no cover
        pass
    return env


def check_run_dir_free(run_dir: str | Path, kind: str) -> None:
    """Raise ``RunDirLockedError`` (one line naming the holder) when a trainer, e.g. an orphan of a killed run,
    still holds ``run_dir``'s lock (``lmforge.training.run_lock``) after ``RUN_DIR_WAIT_S``: call it before
    touching anything in ``run_dir``. The wait lets the ranks of a run killed a moment ago finish dying (their
    watchdog, ``processes.guard_process``, polls every second) instead of failing a rerun started at once."""
    try:
        locks.run_dir_lock(run_dir).acquire(wait_s=RUN_DIR_WAIT_S).release()
    except locks.LockedError as err:
        raise RunDirLockedError(f"{kind} job not started: {err.message}", err.next_step) from None


def launch_job(spec: JobSpec, launch: LaunchArgs, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``spec`` on ``launch.nproc_per_node`` processes; return rank 0's result dict."""
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_dir_free(run_dir, spec.kind)
    config_path = run_dir / "job.json"
    spec.save(config_path)
    result_path = run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    complete_path = run_dir / COMPLETE_MARKER
    complete_path.unlink(missing_ok=True)
    port = launch.master_port or free_port()
    cmd = build_command(f"lmforge.training.{spec.kind}", config_path, launch, port)
    logger.info("launching %s job on %d process(es): %s", spec.kind, resolve_nproc(launch) * launch.nnodes,
                " ".join(cmd))
    tail: deque[str] = deque(maxlen=40)
    errors: list[str] = []  # the first error lines of the ranks: the cause, before the launcher's summary
    log_path = run_dir / "train.log"
    # The job writes its own log (not a pipe to this process): ``tail -f train.log`` follows it, the whole log
    # survives this process, and the ranks never die of a broken pipe by accident when it is killed: they end
    # because their guard saw the owner go (``processes``), which is what the chaos test checks.
    with open(log_path, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=child_environment(env),
                                start_new_session=True,  # _kill_group's group
                                preexec_fn=processes.die_with(os.getpid()))  # noqa: PLW1509 (sets prctl only)
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            for line in follow(log, proc, launch.timeout_s):
                tail.append(line.rstrip())
                if len(errors) < 30 and _ERROR_LINE.search(line) and not _NOT_AN_ERROR.search(line):
                    errors.append(line.rstrip())
                if "[lmforge]" in line or "Error" in line or "error" in line:
                    logger.info("%s", line.rstrip())
        returncode = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    if returncode != 0 and result_path.exists() and complete_path.exists():
        logger.warning("%s job: every rank finished and the outputs are written, but a process failed while "
                       "exiting (exit code %d); first error lines:\n%s\nfull log: %s", spec.kind, returncode,
                       "\n".join(errors) or "(none)", log_path)
    elif returncode != 0 and (locked := next((e for e in errors if _LOCKED.search(e)), None)):
        # rank 0 found the run directory locked (``loop.lock_run_dir``): that line is the whole story
        raise TrainingError(f"{spec.kind} job refused: {_LOCKED.split(locked, 1)[1].strip()} (full log: {log_path})")
    elif returncode != 0 or not result_path.exists():
        cause = ("first error lines of the ranks:\n" + "\n".join(errors) + "\n...\n") if errors else ""
        raise TrainingError(
            f"{spec.kind} job failed (exit code {returncode}); full log: {log_path}\n{cause}last lines:\n"
            + "\n".join(tail)
        )
    return json.loads(result_path.read_text())


def follow(log: Any, proc: subprocess.Popen, timeout_s: float = 0, poll_s: float = 0.1) -> Iterator[str]:
    """The lines of the job's log as the job writes them, until it has exited and every line is read;
    ``subprocess.TimeoutExpired`` after ``timeout_s`` (0: no limit)."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    partial = ""
    while True:
        chunk = log.readline()
        if chunk.endswith("\n"):
            yield partial + chunk
            partial = ""
        elif chunk:  # a line still being written
            partial += chunk
        elif proc.poll() is not None:
            rest = partial + log.read()
            yield from rest.splitlines(keepends=True)
            return
        elif deadline and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        else:
            time.sleep(poll_s)


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
