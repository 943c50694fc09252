"""Atomic writes: a reader sees the old file or folder or the new one, never a partial one.

A file is written to ``.<name>.<pid>-<random>.tmp`` beside it and renamed over it (``replace_file``); a folder
is built in such a staging folder and swapped in (``replace_directory``, ``swap_in``: one
``renameat2(RENAME_EXCHANGE)`` on Linux). The names are unique per writer, so two writers never share a
temporary file, and ``lmforge.locks.remove_leftovers`` finds what a killed writer left by ``staging_prefix``.
No ``fsync`` unless asked: a killed process loses nothing the kernel has (a power cut may; DVC's hashes then
show it); checkpoint manifests ask for it (``lmforge.training.checkpoints.write_atomic``).

Framework-free: the Kedro datasets (``lmforge.pipelines.datasets``) and the training checkpoints both use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def staging_prefix(target: Path) -> str:
    """``.<name>.<pid>-``: the start of every temporary name beside ``target`` (``lmforge.locks.remove_leftovers``)."""
    return f".{target.name}.{os.getpid()}-"


def replace_file(target: str | Path, write: Callable[[IO], None], mode: str = "w", *, fsync: bool = False,
                 **open_args: Any) -> None:
    """Call ``write(fh)`` on a fresh temporary file beside ``target``, then rename it over ``target``.

    ``fsync``: flush the file to the disk before the rename (checkpoint manifests: a power cut must not leave a
    manifest naming files the disk never got); outputs DVC hashes do without it (see the module docstring)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=staging_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **open_args) as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; the file it replaces was not
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def swap_in(staged: Path, target: Path) -> None:
    """Put the directory ``staged`` at ``target``; the old ``target`` (if any) ends up at ``staged``.

    On Linux one ``renameat2(RENAME_EXCHANGE)``: there is no moment without a whole ``target``, even for a kill
    between two steps. Where the kernel or filesystem has no exchange (macOS, some NFS servers): two renames,
    with a moment (microseconds) where ``target`` is absent (never partial).
    """
    if target.exists():
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.renameat2(_AT_FDCWD, os.fsencode(staged), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE) == 0:
                return
        except (AttributeError, OSError):  # no renameat2 in this libc
            pass
        old = staged.with_name(staged.name + ".old")
        os.replace(target, old)
        os.replace(staged, target)
        os.replace(old, staged)
        return
    os.replace(staged, target)


def replace_directory(target: str | Path, build: Callable[[Path], None]) -> None:
    """Call ``build(path)`` to fill a fresh directory beside ``target``, then swap it in for ``target``."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(target), dir=target.parent))
    try:
        staged = staging / target.name
        staged.mkdir(mode=0o777 & ~_UMASK)
        build(staged)
        swap_in(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
