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

__all__ = ["OWNER_ENV", "die_with", "guard_process", "owner_alive", "owner_env", "owner_token", "start_ticks"]

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


def guard_process(owner: str | None = None, *, interval_s: float = GUARD_INTERVAL_S,
                  sig: int = signal.SIGKILL) -> threading.Thread | None:
    """End this process (``sig`` to itself, one line on stderr first) when ``owner`` is gone or it is reparented.

    ``owner``: a token from ``owner_token`` (default ``$LMFORGE_OWNER``; without either, only the reparenting is
    watched). Idempotent: a second call returns the running guard. Returns the daemon thread.
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
