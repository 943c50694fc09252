"""/proc readers for the tests that kill processes and check that nothing they started is left behind.

A process is named by ``(pid, start ticks)`` (``lmforge.processes.start_ticks``), so a pid reused by the system is
never taken for the process that had it; zombies count as gone (they have exited).
"""

from __future__ import annotations

import os


def proc_table() -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, start ticks)}`` of every live (not zombie) process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().decode("ascii", "replace").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def tree(root_pid: int) -> dict[int, int]:
    """``{pid: start ticks}`` of ``root_pid`` and all its descendants."""
    table = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in table:
            found[pid] = table[pid][1]
            todo += children.get(pid, [])
    return found


def marked(name: str, value: str) -> dict[int, int]:
    """``{pid: start ticks}`` of the live processes whose environment holds ``name=value`` (inherited from the
    process a test started: it finds launchers and ranks in their own sessions too)."""
    needle = f"{name}={value}".encode()
    table = proc_table()
    found = {}
    for pid, (_, ticks) in table.items():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found[pid] = ticks
        except OSError:
            continue
    return found


def alive(procs: dict[int, int]) -> dict[int, int]:
    """The processes of ``procs`` still running (same pid *and* start ticks)."""
    table = proc_table()
    return {pid: ticks for pid, ticks in procs.items() if table.get(pid, (0, -1))[1] == ticks}


def cmdline(pid: int, width: int = 200) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")[:width]
    except OSError:
        return "?"
