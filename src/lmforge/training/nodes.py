"""Multi-node training: what node 0 leaves in the shared run directory and how the other nodes join.

Node 0 is the ``kedro run`` (``launch.launch_job``). Besides ``<run_dir>/job.json`` it writes
``<run_dir>/launch.json`` (its ``LaunchArgs`` with the rendezvous port it picked, the worker module, and an
``attempt`` id new for every launch) and, with the deepspeed launcher and no hostfile, ``<run_dir>/hostfile``.
Every other node runs ``python -m lmforge.training.launch join --run-dir <run_dir> --node-rank <r>``: it waits
for ``launch.json``, and starts its own launcher for node rank ``r`` (torchrun ``--node_rank`` on a static
rendezvous at ``master_addr:master_port``, or the deepspeed runner ``--no_ssh --node_rank``). The run
directory must therefore be the same path on a filesystem every node sees (NFS, Lustre...).

Each node's starter records its arrival as ``<run_dir>/nodes/<rank>.json`` (host, pid, time, attempt) before
it starts its launcher, and then watches that directory (``NodeWatch``): when a node has not arrived within
``launch.join_timeout_s`` it stops its launcher and names the missing node and the join command to run there.
The launchers' own waits are no guarantee: torchrun's static rendezvous does give up after its ``timeout``
(set to the same value), but ranks started by the deepspeed launcher wait in ``init_process_group`` for
DeepSpeed's 30-minute default. Node 0 removes ``launch.json`` when its job ends, so a join started later waits
for the next job instead of joining a finished one; a new launch clears ``nodes/``.

Every process dies with its starter (``lmforge.processes``): each node's launcher gets ``die_with`` its join
process (or the ``kedro run``), and the ranks watch that process, which is local to them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import build_dataclass, config_to_dict
from lmforge.training.config import LaunchArgs

logger = logging.getLogger(__name__)

LAUNCH_RECORD = "launch.json"
NODES_DIR = "nodes"
HOSTFILE = "hostfile"
JOIN_COMMAND = "python -m lmforge.training.launch join"


def join_command(run_dir: str | Path, node_rank: int | str) -> str:
    """The command that node ``node_rank`` runs to join the job of ``run_dir``."""
    return f"{JOIN_COMMAND} --run-dir {run_dir} --node-rank {node_rank}"


def write_hostfile(run_dir: str | Path, launch: LaunchArgs) -> Path:
    """``<run_dir>/hostfile`` for the deepspeed runner without ssh: one line per node, node 0 first. The names
    are labels (``--no_ssh`` starts nothing remotely; the runner only counts each node's slots)."""
    path = Path(run_dir, HOSTFILE)
    path.write_text("".join(f"node{r} slots={launch.nproc_per_node}\n" for r in range(launch.nnodes)))
    return path


def check_hostfile(path: str | Path, launch: LaunchArgs) -> None:
    """A ``UserError`` unless the deepspeed hostfile ``path`` names at least ``launch.nnodes`` hosts with
    ``launch.nproc_per_node`` slots each (the world size and the global batch are computed from those)."""
    from lmforge.errors import UserError

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise UserError(f"launch.hostfile {path} cannot be read: {err.strerror}", "fix launch.hostfile") from None
    slots = [int(m.group(1)) for line in lines if (m := re.match(r"^\S+\s+slots=(\d+)", line.strip()))]
    if len(slots) < launch.nnodes or any(n != launch.nproc_per_node for n in slots[:launch.nnodes]):
        raise UserError(f"launch.hostfile {path} has slots {slots}; the job needs {launch.nnodes} hosts of "
                        f"launch.nproc_per_node {launch.nproc_per_node} slots",
                        "one line `<host> slots=<nproc_per_node>` per node, node 0 first")


def start_launch(run_dir: str | Path, launch: LaunchArgs, module: str) -> str:
    """Node 0: clear the previous launch's records, write ``launch.json`` and node 0's arrival; returns the
    attempt id. ``launch`` must name its port (the joiners connect to it)."""
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / NODES_DIR, ignore_errors=True)
    attempt = uuid.uuid4().hex
    record = {"attempt": attempt, "module": module, "config": "job.json", "launch": config_to_dict(launch),
              "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    tmp = run_dir / f".{LAUNCH_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(run_dir / LAUNCH_RECORD)  # a joiner never reads half a record
    arrive(run_dir, 0, attempt)
    return attempt


def end_launch(run_dir: str | Path, attempt: str) -> None:
    """Node 0, when its job has ended: remove ``launch.json`` (if still this attempt's)."""
    path = Path(run_dir, LAUNCH_RECORD)
    try:
        if json.loads(path.read_text()).get("attempt") == attempt:
            path.unlink()
    except (OSError, ValueError):
        pass


def read_launch(run_dir: str | Path, wait_s: float, poll_s: float = 0.2) -> dict[str, Any] | None:
    """``launch.json`` of ``run_dir`` with its ``launch`` as ``LaunchArgs``, waiting up to ``wait_s`` for node 0
    to write it; None when it did not."""
    path = Path(run_dir, LAUNCH_RECORD)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            record = json.loads(path.read_text())
            record["launch"] = build_dataclass(LaunchArgs, record["launch"], path="launch")
            return record
        except FileNotFoundError:
            if time.monotonic() > deadline:
                return None
            time.sleep(poll_s)


def arrive(run_dir: str | Path, node_rank: int, attempt: str) -> None:
    """Record that node ``node_rank`` is here for ``attempt`` (``<run_dir>/nodes/<rank>.json``)."""
    nodes = Path(run_dir, NODES_DIR)
    nodes.mkdir(parents=True, exist_ok=True)
    record = {"node_rank": node_rank, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
              "attempt": attempt}
    tmp = nodes / f".{node_rank}.json.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(nodes / f"{node_rank}.json")


def arrived(run_dir: str | Path, attempt: str) -> set[int]:
    """The node ranks that recorded their arrival for ``attempt``."""
    found = set()
    for path in Path(run_dir, NODES_DIR).glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("attempt") == attempt:
            found.add(int(record["node_rank"]))
    return found


def missing_message(run_dir: str | Path, launch: LaunchArgs, port: int, missing: list[int]) -> tuple[str, str]:
    """(message, next step) of a rendezvous that node(s) ``missing`` never reached."""
    which = f"node {missing[0]}" if len(missing) == 1 else "nodes " + ", ".join(map(str, missing))
    message = (f"{which} of {launch.nnodes} never arrived at the rendezvous {launch.master_addr}:{port} within "
               f"{launch.join_timeout_s} s")
    if missing == [0]:
        return message, ("start the job on node 0 first (`kedro run` with launch.nnodes "
                         f"{launch.nnodes}), then the join commands")
    commands = "; ".join(f"`{join_command(run_dir, r)}` on node {r}" for r in missing if r)
    return message, f"start {commands} (or raise launch.join_timeout_s)"


@dataclass
class NodeWatch:
    """Polled while a node's launcher runs: ``missing()`` is the node ranks still absent once
    ``timeout_s`` has passed since the watch began ([] before that, and for good once every node arrived)."""

    run_dir: Path
    attempt: str
    nnodes: int
    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    complete: bool = False

    def absent(self) -> list[int]:
        return sorted(set(range(self.nnodes)) - arrived(self.run_dir, self.attempt))

    def missing(self) -> list[int]:
        if self.complete:
            return []
        absent = self.absent()
        if not absent:
            self.complete = True
            logger.info("all %d nodes arrived", self.nnodes)
            return []
        return absent if time.monotonic() - self.started > self.timeout_s else []
