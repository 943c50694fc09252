"""One writer per output: an exclusive lock file per output directory/file, and the removal of a killed writer's leftovers.

Two ``kedro run``s of stages that write the same output, or a rerun of a training job while an orphaned trainer
of the killed run still writes its checkpoints, must not write one place at once: the second one stops with one
line naming the first (pid, host, start time, command) and what to do. The lock is ``fcntl.flock`` on a small
file, taken without waiting:

- **Stale locks are impossible by construction**: the kernel drops a ``flock`` the moment its holder dies, however
  it dies (SIGKILL included), so the lock file a killed run leaves behind is simply an unlocked file; the next
  taker gets it at once. No pid is ever guessed: the file's JSON (owner token from ``lmforge.processes``, pid,
  host, start time, command line, what it locks) is only *read* to name a live holder, and to log whether the
  previous holder ended cleanly or was killed.
- The file is never deleted (deleting a lock file races with a taker that opened the old inode); on release it is
  emptied. Lock files of the Kedro outputs live in one git-ignored folder, ``data/.locks`` (``LOCKS_DIR``), named
  from the output's project-relative path, never inside a DVC ``out``.
- **NFS**: Linux emulates ``flock`` on NFS (since 2.6.12) with POSIX byte-range locks, which NFSv3 (NLM) and
  NFSv4 servers enforce across clients, so two machines sharing the project over NFS exclude each other as far
  as the server's locking works: a server reboot or an expired NFSv4 lease can lose a lock, and a
  ``nolock``/``local_lock`` mount makes it machine-local. Other shared filesystems: as far as their ``flock`` goes.
- Within one process, two ``OutputLock`` objects on one file exclude each other too (``flock`` belongs to the open
  file description, and each lock opens the file anew).

``owned_tempdir`` makes a temporary folder named by its owner (host, pid, start time) and first removes the
folders of the same kind whose owner on this machine is gone (a killed stage's staging folder or spool in the
system temp folder: no lock needed, a live owner's folder is never touched).

``remove_leftovers`` deletes what a killed writer of an output leaves beside it (the staging directories and
temporary files of ``lmforge.pipelines.datasets``: ``.<name>.*``, and the older fixed ``<name>.tmp``); call it
only while holding the output's lock, so a live writer's temporary files are never removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from lmforge.errors import UserError
from lmforge.processes import owner_alive, owner_token, start_ticks

__all__ = ["LOCKS_DIR", "RUN_DIR_LOCK", "LockedError", "OutputLock", "lock_file_for", "owned_tempdir",
           "remove_leftovers", "remove_orphaned_tempdirs", "run_dir_lock"]

logger = logging.getLogger(__name__)

LOCKS_DIR = "data/.locks"
RUN_DIR_LOCK = "job.lock"  # a training job's lock file, inside its run directory (no DVC out)


class LockedError(UserError):
    """The output is locked by a live writer; the message names it (pid, host, start time, command)."""


def lock_file_for(target: str | Path, root: str | Path) -> Path:
    """``<root>/data/.locks/<target's path relative to root, '/' -> '__'>.lock`` (an absolute name outside root)."""
    target, root = Path(os.path.abspath(target)), Path(os.path.abspath(root))
    try:
        rel = target.relative_to(root).as_posix()
    except ValueError:
        rel = target.as_posix().lstrip("/")
    return root / LOCKS_DIR / (rel.replace("/", "__") + ".lock")


def run_dir_lock(run_dir: str | Path) -> OutputLock:
    """The lock of a training job's run directory (checkpoints, logs): rank 0 holds it for the whole job."""
    return OutputLock(Path(run_dir) / RUN_DIR_LOCK, f"the training run directory {run_dir}")


class OutputLock:
    """An exclusive, non-blocking lock on ``what`` (an output), held through the file ``path``.

    ``acquire()`` takes it or raises ``LockedError``; ``release()`` (idempotent) gives it back; also a context
    manager. The kernel releases it when the process dies.
    """

    def __init__(self, path: str | Path, what: str | Path):
        self.path = Path(path)
        self.what = str(what)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait_s: float = 0.0) -> OutputLock:
        """Take the lock, or raise ``LockedError`` naming its holder; ``wait_s``: keep trying that long first
        (for a holder that is about to end, e.g. an orphan its watchdog is stopping)."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(fd)
                    if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    raise LockedError(*self._refusal(read_owner(self.path))) from None
                time.sleep(0.1)
        previous = _read_fd(fd)
        if previous.get("pid"):  # a holder that did not release: it was killed (the kernel dropped its flock)
            logger.warning("lmforge: took the lock on %s left by %s (pid %s on %s, started %s), which was killed "
                           "or crashed before releasing it", self.what, previous.get("command", "?"),
                           previous.get("pid"), previous.get("host"), previous.get("started"))
        record = {"owner": owner_token(), "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv) or sys.executable,
                  "locks": self.what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # an empty file: released cleanly (a killed holder's file keeps its JSON)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock must not outlive its object (closing the fd drops the flock)
        with contextlib.suppress(Exception):
            self.release()

    def _refusal(self, owner: dict[str, Any]) -> tuple[str, str]:
        if not owner:  # it has the lock but has not written its name yet (a few microseconds)
            return (f"{self.what} is being written by another process (lock {self.path}; it is just starting)",
                    "wait for it to finish")
        alive = owner_alive(owner.get("owner", ""))
        where = "" if alive is not None else f" on {owner.get('host')} (another machine: check there)"
        return (f"{self.what} is being written by pid {owner.get('pid')}{where}, started {owner.get('started')}: "
                f"{owner.get('command')} (lock {self.path})",
                f"wait for it, or stop it: kill {owner.get('pid')}")


def read_owner(path: str | Path) -> dict[str, Any]:
    """The JSON a lock's holder wrote into ``path`` ({} when empty, unreadable or absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


def _read_fd(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 65536, 0)
        record = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def remove_leftovers(target: str | Path) -> list[Path]:
    """Delete what killed writers of ``target`` left beside it; returns what was removed.

    The staging directories and temporary files of ``lmforge.pipelines.datasets`` (``.<name>.<pid>-<random>``,
    ``.<name>.<random>``) and the fixed ``<name>.tmp`` of older versions. Call it only while holding
    ``target``'s lock: a live writer's temporary files look the same.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    found = sorted(target.parent.glob(f".{_glob_escape(target.name)}.*"))
    legacy = target.with_name(target.name + ".tmp")
    found += [legacy] if legacy.exists() else []
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def owned_tempdir(prefix: str, parent: str | Path | None = None) -> Path:
    """``tempfile.mkdtemp`` named ``<prefix><host hash>.<pid>.<start ticks>-<random>``, after removing the folders of
    ``prefix`` in ``parent`` (default: the system temp folder) whose process is gone (``remove_orphaned_tempdirs``)."""
    remove_orphaned_tempdirs(prefix, parent)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_owner_name()}-", dir=parent))


def remove_orphaned_tempdirs(prefix: str, parent: str | Path | None = None) -> list[Path]:
    """Delete the ``owned_tempdir`` folders of ``prefix`` under ``parent`` made by a process of this machine that is
    gone (killed: its own cleanup never ran); a live process's, or another machine's (a shared ``parent``), stay."""
    parent = Path(parent or tempfile.gettempdir())
    host = _owner_name().split(".", 1)[0]
    removed = []
    for path in parent.glob(f"{_glob_escape(prefix)}{host}.*"):
        owner = path.name[len(prefix):].split("-", 1)[0]
        _, pid, ticks = (owner.split(".") + ["", ""])[:3]
        if not (pid.isdigit() and ticks.isdigit()) or not path.is_dir():
            continue
        now = start_ticks(int(pid))
        if now is not None and int(ticks) in (0, now):
            continue  # its process runs
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logger.warning("lmforge: removed %d temporary folder(s) of killed runs: %s", len(removed),
                       ", ".join(str(p) for p in removed))
    return removed


def _owner_name() -> str:
    """``<host hash>.<pid>.<start ticks>`` of this process: what an ``owned_tempdir``'s name says about its maker."""
    pid = os.getpid()
    return f"{zlib.crc32(socket.gethostname().encode()):08x}.{pid}.{start_ticks(pid) or 0}"
