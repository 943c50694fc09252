"""A real Ray cluster of several nodes on this machine, for the tests and the bench: each node is its own
`ray start --block` (GCS + raylet + agents; a worker node with its own temp dir and its own resource).

Ray addresses a node by this machine's reachable IP even when given 127.0.0.1 (``resolve_ip_for_localhost``):
the traffic never leaves the machine. Every process of the cluster dies with the process that made it:
`ray start --block` runs under ``lmforge.processes.die_with`` (PR_SET_PDEATHSIG), and with ``--block`` Ray starts
its GCS, raylet and monitors fate-shared with it (``kernel_fate_share``: PR_SET_PDEATHSIG); the raylet's children
(workers, agents) exit after their raylet, on Ray's own timeouts (see `stop`). `stop`
SIGKILLs each node's `ray start` and checks that the rest follows by itself (but for the head's two agents: see
`stop`), then ends each node's process group (its own session) by id; never `ray stop`, which would end every
Ray cluster of this user on the machine (another test's too).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from proc_helpers import alive, cmdline, proc_table, tree

from lmforge.processes import die_with

RAY = str(Path(sys.executable).parent / "ray")
# Node loss seen in ~1-2 s instead of Ray's ~15 s (3 s period x 5 misses): the node-loss test waits for it.
FAST_HEALTH_CHECK = {"health_check_period_ms": 500, "health_check_timeout_ms": 1000,
                     "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    """``with RayCluster(root) as cluster: cluster.add_node("worker1")``; ``cluster.address`` for ray.init."""

    def __init__(self, root: Path, *, cpus_per_node: int = 1, env: dict | None = None):
        self.root = Path(root)
        self.cpus = cpus_per_node
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Token auth off on both sides: Ray turns it on by itself when ~/.ray/auth_token exists (any local
        # `ray.init()` writes one), and a driver that does not send the cluster's token waits for minutes.
        self.driver_env = {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}
        self.env = {**(env or os.environ), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> RayCluster:
        try:
            self.start_head()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self, name: str, args: list[str], timeout: float) -> None:
        log = self.root / f"{name}.log"
        self.root.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--num-cpus", str(self.cpus),
                                     "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.root / name), *args],
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with(os.getpid()))
        self.nodes[name] = proc
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start (exit {proc.poll()}): "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def start_head(self, timeout: float = 90) -> None:
        self._start("head", ["--head", "--port", str(self.port), "--include-dashboard=false",
                             "--system-config", json.dumps(FAST_HEALTH_CHECK)], timeout)

    def add_node(self, name: str, timeout: float = 90) -> None:
        """A worker node with its own temp dir and its own resource ``{name: 1}`` (to tell it apart)."""
        self._start(name, ["--address", self.address, "--resources", json.dumps({name: 1})], timeout)

    def remove_node(self, name: str, timeout: float = 30) -> None:
        """Stop one worker node (SIGTERM to its `ray start --block`, then SIGKILL to what is left of it)."""
        proc = self.nodes.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()

    def processes(self) -> dict[int, int]:
        """``{pid: start ticks}`` of every live process of the cluster: each node's process group (its own session)
        and the descendants of each `ray start` (workers included, whatever their group)."""
        found: dict[int, int] = {}
        for proc in self.nodes.values():
            found |= self._node_tree(proc)
        return found

    def workers(self, name: str) -> list[int]:
        """Pids of the node's Ray worker processes (``ray::IDLE`` or ``ray::<task>``; not its agents)."""
        return [pid for pid in tree(self.raylet_pid(name)) if cmdline(pid).startswith("ray::")
                and not cmdline(pid).startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))]

    def node_processes(self, name: str) -> dict[int, str]:
        """``{pid: command line}`` of one node's processes."""
        group = self.nodes[name].pid
        out = {}
        for pid in proc_table():
            try:
                if os.getpgid(pid) == group:
                    out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
        return out

    def raylet_pid(self, name: str) -> int:
        [pid] = [pid for pid, cmd in self.node_processes(name).items() if "/raylet/raylet " in cmd]
        return pid

    def _node_tree(self, proc: subprocess.Popen) -> dict[int, int]:
        found = tree(proc.pid)
        for pid, (_, ticks) in proc_table().items():
            try:
                if os.getpgid(pid) == proc.pid:
                    found[pid] = ticks
            except OSError:
                continue
        return found

    def stop(self, timeout: float = 20) -> dict[int, str]:
        """SIGKILL each node's `ray start --block` (worker nodes first) and wait for the rest of the node to follow by
        itself: GCS and raylet fate-share with it, workers and agents exit with their raylet. Returns ``{pid: command
        line}`` of what had not ended after ``timeout`` (empty when all is well); SIGKILLs each node's process group
        anyway.

        Known exception, not returned: the raylets' children (workers, agents) see their raylet die but may then wait
        on Ray's own timeouts (an agent reports the death to the GCS with a hard-coded 60 s timeout,
        ``ray._private.utils.publish_error_to_driver``; a worker still booting when its raylet died was seen alive
        20 s later), so only the group kill ends them at once; left alone they end by themselves."""
        survivors: dict[int, str] = {}
        for name in sorted(self.nodes, key=lambda n: n == "head"):
            proc = self.nodes[name]
            seen = self._node_tree(proc)
            raylets = [pid for pid in seen if "/raylet/raylet " in cmdline(pid)]
            lingering = {pid for r in raylets for pid in tree(r)} - set(raylets)
            if proc.poll() is None:
                proc.kill()
            deadline = time.monotonic() + timeout
            while set(alive(seen)) - lingering and time.monotonic() < deadline:
                time.sleep(0.1)
            survivors |= {pid: cmdline(pid) for pid in set(alive(seen)) - lingering}
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        deadline = time.monotonic() + 5
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        return survivors | {pid: cmdline(pid) for pid in self.processes()}
