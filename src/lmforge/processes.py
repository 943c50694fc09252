"""Every process lmforge starts dies with the process that started it, however that one dies.

A job killed from outside (an OOM kill, a closed SSH session, a CI timeout, ``kill -9`` of ``dvc repro``'s
process group) must not leave a training launcher, its ranks, a worker pool or an engine running: an orphan
keeps writing checkpoints into the run directory the rerun is about to resume from. Two mechanisms, because
neither covers every case alone:

- ``die_with`` (a ``preexec_fn``): ``prctl(PR_SET_PDEATHSIG)``, the kernel signals the child the moment its
  parent *thread* exits. For children that are not ours to instrument (``llama-server``, the
  ``torch.distributed.run`` / deepspeed launchers). Linux only; cleared by a set-uid exec or a uid change.
- ``guard_process`` (called inside a Python child we own: training ranks, pool workers): a daemon thread that
  ends the process when its *owner* (the process that started the whole job tree, named in ``$LMFORGE_OWNER``
  by ``owner_env``) is gone, or when the process was reparented (its launcher died). This covers the ranks
  under a launcher that itself died by ``PDEATHSIG``, which the kernel would not signal (their parent is the
  launcher, not us).

An owner is named by ``owner_token``: host, pid and the process's start time in clock ticks since boot
(``/proc/<pid>/stat`` field 22), so a recycled pid is never taken for the owner.

Who uses what (tests/test_processes.py; time from the owner's SIGKILL to the process gone, measured on 2 CPU
cores under load 8: PDEATHSIG 0.0-0.4 s, the guard thread's watch 1.0-1.2 s, deepspeed's middle launcher 3.6 s):

- training (``training/launch.py``): the launcher (``torch.distributed.run`` or ``deepspeed.launcher.runner``)
  gets ``die_with`` (the kernel, at once); every rank calls ``guard_process`` first thing (PDEATHSIG on its
  launcher + the owner watch, <= ``GUARD_INTERVAL_S``). The deepspeed launcher has a middle level
  (runner -> ``deepspeed.launcher.launch`` -> ranks) we cannot instrument: once its ranks end, ``launch``
  sees a failed rank and exits within its 1 s poll. A rank on another host (multi-node) cannot see the
  owner (``owner_alive`` is None there): it keeps only the PDEATHSIG/reparenting watch on its local launcher.
- worker pools (``data/executor.py``, ``tokenizer/encode.py``): ``guard_process`` as the pool initializer,
  the owner being the process that made the pool.
- the evaluation sandbox: the runner sets PDEATHSIG itself *after* its uid drop (a uid change clears it).
- engines (``llama-server``, vLLM): ``die_with``.
- ``kedro run`` under ``dvc repro``: ``guard_dvc_stage`` (a Kedro hook) guards it against the ``dvc`` process
  that started it, so SIGKILL to ``dvc`` alone (not its group) does not leave the stage running. A ``kedro
  run`` started from a shell is not guarded: ``nohup kedro run &`` must keep running when the shell goes.

Threads: PDEATHSIG follows the parent *thread* that forked the child, so a child must be started from a
thread that lives as long as the child should (``launch_job`` starts and waits in the same call).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["OWNER_ENV", "die_with", "dvc_ancestor", "guard_dvc_stage", "guard_process", "owner_alive", "owner_env",
           "owner_token", "parent_pid", "start_ticks"]

logger = logging.getLogger(__name__)

OWNER_ENV = "LMFORGE_OWNER"
PR_SET_PDEATHSIG = 1
GUARD_INTERVAL_S = 1.0


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        if fields[0] == "Z":  # a zombie has exited: only its exit status is left to collect
            return None
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (``/proc/<pid>/stat`` field 4); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().decode("ascii", "replace").rsplit(")", 1)[-1].split()
        return int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def owner_token(pid: int | None = None) -> str:
    """``"<host>:<pid>:<start ticks>"`` naming process ``pid`` (default: this one) beyond pid reuse."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid) or 0}"


def parse_owner(token: str) -> tuple[str, int, int]:
    host, pid, ticks = token.rsplit(":", 2)
    return host, int(pid), int(ticks)


def owner_alive(token: str) -> bool | None:
    """Whether the process named by ``token`` still runs; None when it runs on another host (cannot tell)."""
    try:
        host, pid, ticks = parse_owner(token)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    now = start_ticks(pid)
    return now is not None and (ticks == 0 or now == ticks)


def owner_env(pid: int | None = None) -> dict[str, str]:
    """Environment for a child job tree: its processes end themselves when this process (or ``pid``) is gone."""
    return {OWNER_ENV: owner_token(pid)}


def die_with(parent: int, sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends ``sig`` to the child when its parent dies (and a parent that died
    between the fork and the prctl, which the kernel would not report, ends the child at once)."""
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(1)
    return preexec


_guard_lock = threading.Lock()
_guard: threading.Thread | None = None


def _reset_after_fork() -> None:  # a forked child (a fork-started pool worker) has no guard thread yet
    global _guard_lock, _guard
    _guard_lock, _guard = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def guard_process(owner: str | None = None, *, interval_s: float = GUARD_INTERVAL_S,
                  sig: int = signal.SIGKILL) -> threading.Thread | None:
    """End this process (``sig`` to itself, one line on stderr first) when ``owner`` is gone or it is reparented.

    ``owner``: a token from ``owner_token`` (default ``$LMFORGE_OWNER``; without either, only the reparenting is
    watched; a token of another host (a multi-node rank) is ignored, as ``owner_alive`` cannot tell).
    Idempotent: a second call returns the running guard. Returns the daemon thread. Also a pool
    ``initializer`` (``initializer=guard_process, initargs=(owner_token(),)``).
    """
    global _guard
    owner = owner or os.environ.get(OWNER_ENV)
    with _guard_lock:
        if _guard is not None and _guard.is_alive():
            return _guard
        parent = os.getppid()
        if sys.platform.startswith("linux"):  # the direct parent's death, at once, where the kernel can tell
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
            except OSError:  # pragma: no cover - no libc prctl: the thread below still watches
                pass
            if os.getppid() != parent:  # pragma: no cover - the parent died before the prctl
                _end(sig, f"its parent {parent} is gone")

        def watch() -> None:
            while True:
                time.sleep(interval_s)
                if os.getppid() != parent:
                    _end(sig, f"its parent {parent} is gone (reparented to {os.getppid()})")
                if owner and owner_alive(owner) is False:
                    _end(sig, f"the process that owns its job ({owner}) is gone")

        _guard = threading.Thread(target=watch, name="lmforge-guard", daemon=True)
        _guard.start()
        return _guard


def _end(sig: int, why: str) -> None:
    try:
        os.write(2, f"lmforge: process {os.getpid()} ends: {why}\n".encode())
    finally:
        os.kill(os.getpid(), sig)


def _is_dvc(pid: int) -> bool:
    """Whether ``pid`` runs the ``dvc`` command line (``dvc ...``, ``python .../bin/dvc ...``, ``python -m dvc``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return False
    names = [os.path.basename(a) for a in argv[:2]]
    return "dvc" in names or argv[1:3] == ["-m", "dvc"]


def dvc_ancestor(max_levels: int = 3) -> int | None:
    """The ``dvc`` process that started this one (directly, or through the shell DVC runs a stage command in),
    looking at most ``max_levels`` parents up; None when there is none."""
    pid = os.getpid()
    for _ in range(max_levels):
        pid = parent_pid(pid) or 0
        if pid <= 1:
            return None
        if _is_dvc(pid):
            return pid
    return None


def guard_dvc_stage() -> threading.Thread | None:
    """Under ``dvc repro``: end this process when the ``dvc`` process that runs its stage is gone.

    DVC starts a stage command through a shell and does not pass its own death on: after a SIGKILL to
    ``dvc`` alone (not to its process group) the stage would keep running and writing its outputs while a
    rerun starts the same stage. Returns the guard, or None when no ``dvc`` process started this one (a
    ``kedro run`` from a shell keeps running when that shell goes: ``nohup`` must work).
    """
    dvc = dvc_ancestor()
    if dvc is None:
        return None
    logger.debug("guarding this stage against dvc process %d", dvc)
    return guard_process(owner_token(dvc))
