"""The spool of a killed data-processing run is removed by the next one; a live run's spool never is."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from lmforge.data.spool import Spool


def make_spool_then(parent: str, end: str, ready) -> None:
    spool = Spool(parent)
    spool.file(0, "kept.jsonl").write_text("{}\n")
    ready.set()
    if end == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def test_a_killed_runs_spool_is_removed_by_the_next_spool_and_a_live_ones_is_kept(tmp_path, caplog):
    ctx = multiprocessing.get_context("fork")
    children = {}
    for end in ("live", "kill"):  # the live one first: its Spool() would remove the killed one's
        ready = ctx.Event()
        children[end] = ctx.Process(target=make_spool_then, args=(str(tmp_path), end, ready))
        children[end].start()
        assert ready.wait(30)
    children["kill"].join(30)
    assert children["kill"].exitcode == -signal.SIGKILL
    try:
        before = {p.name for p in tmp_path.iterdir()}
        assert len(before) == 2
        with caplog.at_level("WARNING", logger="lmforge.locks"):
            spool = Spool(str(tmp_path))
        after = {p.name for p in tmp_path.iterdir()} - {spool.path.name}
    finally:
        children["live"].kill()
        children["live"].join()
    assert after == {n for n in before if f".{children['live'].pid}." in n}  # the live run's spool stays
    assert "removed 1 temporary folder(s) of killed runs" in caplog.text
