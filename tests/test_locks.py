"""lmforge.locks: one writer per output, a killed holder's lock free at once, a killed writer's leftovers removed.

The holders are real processes (a second interpreter holding the lock), killed with SIGKILL like an OOM kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lmforge.errors import UserError, one_line
from lmforge.locks import LockedError, OutputLock, lock_file_for, read_owner, remove_leftovers

HOLD = ("import sys, time; from lmforge.locks import OutputLock; lock = OutputLock(sys.argv[1], sys.argv[2]).acquire(); "
        "print('held', flush=True); time.sleep(120)")


def hold_in_child(path: Path, what: str) -> subprocess.Popen:
    """A second process that takes the lock and keeps it (until killed)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path), what], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "held"
    return child


def test_lock_file_is_named_from_the_project_relative_path(tmp_path):
    assert lock_file_for(tmp_path / "data/03_primary/documents", tmp_path) == \
        tmp_path / "data/.locks/data__03_primary__documents.lock"
    assert lock_file_for("/elsewhere/out.json", tmp_path) == tmp_path / "data/.locks/elsewhere__out.json.lock"


def test_second_taker_is_refused_with_the_holders_pid_and_command(tmp_path):
    path = tmp_path / "x.lock"
    child = hold_in_child(path, "data/03_primary/documents")
    try:
        with pytest.raises(LockedError) as err:
            OutputLock(path, "data/03_primary/documents").acquire()
    finally:
        child.kill()
        child.wait()
    line = one_line(err.value)
    assert isinstance(err.value, UserError)
    assert f"pid {child.pid}" in line and f"kill {child.pid}" in line
    assert "data/03_primary/documents is being written by" in line and "-c" in line  # the holder's command line
    assert read_owner(path)["locks"] == "data/03_primary/documents"


def test_a_killed_holders_lock_is_free_at_once(tmp_path, caplog):
    path = tmp_path / "x.lock"
    child = hold_in_child(path, "out")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    started = time.perf_counter()
    with caplog.at_level("WARNING", logger="lmforge.locks"), OutputLock(path, "out") as lock:
        assert lock.held
        assert read_owner(path)["pid"] == os.getpid()
    assert time.perf_counter() - started < 1.0  # no waiting, no pid guessing: the kernel dropped the flock
    assert f"pid {child.pid}" in caplog.text and "killed" in caplog.text
    assert path.read_text() == ""  # released cleanly: emptied, not deleted


def test_two_locks_of_one_process_exclude_each_other_and_release_is_idempotent(tmp_path):
    first = OutputLock(tmp_path / "x.lock", "out").acquire()
    with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        OutputLock(tmp_path / "x.lock", "out").acquire()
    first.release()
    first.release()
    with OutputLock(tmp_path / "x.lock", "out"):
        pass


def test_remove_leftovers_removes_staging_dirs_and_temp_files_only(tmp_path):
    target = tmp_path / "documents"
    target.mkdir()
    (target / "shard-00000.jsonl").write_text("{}\n")
    (tmp_path / ".documents.123-abc").mkdir()                 # a killed AtomicPartitionedDataset's staging dir
    (tmp_path / ".documents.123-abc/documents").mkdir()
    (tmp_path / "documents.tmp").write_text("half")           # the fixed temp name of older versions
    (tmp_path / ".documents_other.1-x").mkdir()               # another output's: kept
    (tmp_path / "documents2").mkdir()

    removed = remove_leftovers(target)

    assert sorted(p.name for p in removed) == [".documents.123-abc", "documents.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".documents_other.1-x", "documents", "documents2"]
    assert (target / "shard-00000.jsonl").read_text() == "{}\n"


def test_a_taker_that_waits_gets_the_lock_when_its_holder_dies(tmp_path):
    path = tmp_path / "x.lock"
    child = hold_in_child(path, "out")
    killer = threading.Timer(0.3, os.kill, (child.pid, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(LockedError):
            OutputLock(path, "out").acquire(wait_s=0.1)
        with OutputLock(path, "out").acquire(wait_s=10) as lock:
            assert lock.held
    finally:
        killer.cancel()
        child.kill()
        child.wait()
