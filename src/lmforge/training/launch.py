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
at once, the ranks in <= 1.2 s, ``deepspeed.launcher.launch`` in 3.6 s (by hand). Multi-node: the ranks of node R > 0 are owned by that node's
``join`` process (local to them, so watched the same way); node 0's ``kedro run`` on another host they cannot
see: when it dies its ranks' gloo/NCCL peers fail and node R's launcher, then its join, exit.

CPU: processes share the cores over gloo. GPU: one process per GPU over NCCL. Multi-node (``launch.nnodes``,
``master_addr``): this process is node 0 and writes ``launch.json`` next to ``job.json`` in the shared run
directory; every other node runs ``python -m lmforge.training.launch join --run-dir <run_dir> --node-rank <r>``
(``join``), which starts that node's torchrun (static rendezvous) or deepspeed runner (``--no_ssh``); a node
that never arrives stops the job after ``launch.join_timeout_s`` with its name (``lmforge.training.nodes``).
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
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from lmforge import locks, processes
from lmforge.errors import UserError, run_cli
from lmforge.training import nodes
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


class NodeMissingError(TrainingError, UserError):
    """A multi-node job stopped because a node never arrived at the rendezvous within ``launch.join_timeout_s``:
    names the node, the rendezvous and the timeout, and the join command to run there."""

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
    """The launcher command line of node ``launch.node_rank`` for ``module`` (a ``python -m`` target).

    Multi-node torchrun uses the static rendezvous, not c10d: node R's ranks are R x nproc_per_node onwards
    (c10d numbers the nodes in their order of arrival and ignores ``--node_rank``), and it gives up after
    ``launch.join_timeout_s`` (its ``timeout``). Multi-node deepspeed without ssh runs the runner on every node
    with ``--no_ssh --node_rank`` and an explicit ``--master_addr`` (it would ask the first host over ssh).
    """
    launch = replace(launch, nproc_per_node=resolve_nproc(launch))
    if launch.launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launch.nproc_per_node}",
               f"--nnodes={launch.nnodes}", f"--master_addr={launch.master_addr}", f"--master_port={port}"]
        if launch.nnodes > 1:
            cmd += [f"--node_rank={launch.node_rank}", "--rdzv_backend=static",
                    f"--rdzv_endpoint={launch.master_addr}:{port}", f"--rdzv_conf=timeout={launch.join_timeout_s}"]
        return [*cmd, "-m", module, "--config", str(config_path)]
    if launch.launcher == "deepspeed":
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", f"--master_port={port}"]
        joined = launch.nnodes > 1 and not launch.ssh  # every node starts its own part (no ssh)
        if joined and not launch.hostfile:
            raise ValueError("deepspeed multi-node without ssh needs launch.hostfile (launch_job writes one)")
        # With a hostfile and ssh the runner takes the first host as master unless one is named: loopback
        # would send every other node to itself.
        if joined or not launch.hostfile or launch.master_addr not in LOOPBACK:
            cmd.append(f"--master_addr={launch.master_addr}")
        if launch.hostfile:
            cmd += [f"--hostfile={launch.hostfile}", f"--num_nodes={launch.nnodes}"]
            if joined:
                cmd += ["--no_ssh", f"--node_rank={launch.node_rank}"]
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
    """Run ``spec`` on ``launch.nproc_per_node`` processes; return rank 0's result dict.

    Multi-node (``launch.nnodes > 1``): this is node 0; it writes ``launch.json`` into the run directory and
    waits for the other nodes to join (``lmforge.training.nodes``), or raises ``NodeMissingError``.
    """
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
    module = f"lmforge.training.{spec.kind}"
    watch = None
    if launch.nnodes > 1 and not (launch.launcher == "deepspeed" and launch.ssh):
        launch = replace(launch, master_port=port, node_rank=0)
        if launch.launcher == "deepspeed" and not launch.hostfile:
            launch = replace(launch, hostfile=str(nodes.write_hostfile(run_dir, launch)))
        elif launch.launcher == "deepspeed":
            nodes.check_hostfile(launch.hostfile, replace(launch, nproc_per_node=resolve_nproc(launch)))
        watch = nodes.NodeWatch(run_dir, nodes.start_launch(run_dir, launch, module), launch.nnodes,
                                launch.join_timeout_s)
        logger.info("node 0 of %d: waiting up to %d s at %s:%d for the other nodes; on node r run `%s`",
                    launch.nnodes, launch.join_timeout_s, launch.master_addr, port, nodes.join_command(run_dir, "r"))
    cmd = build_command(module, config_path, launch, port)
    logger.info("launching %s job on %d process(es): %s", spec.kind, resolve_nproc(launch) * launch.nnodes,
                " ".join(cmd))
    log_path = run_dir / "train.log"
    try:
        returncode, tail, errors = run_launcher(cmd, log_path, child_environment(env), launch, watch)
    finally:
        if watch:
            nodes.end_launch(run_dir, watch.attempt)
    if returncode != 0 and result_path.exists() and complete_path.exists():
        logger.warning("%s job: every rank finished and the outputs are written, but a process failed while "
                       "exiting (exit code %d); first error lines:\n%s\nfull log: %s", spec.kind, returncode,
                       "\n".join(errors) or "(none)", log_path)
    elif returncode != 0 and watch and (missing := watch.absent()):
        raise NodeMissingError(*nodes.missing_message(run_dir, launch, port, missing))
    elif returncode != 0 and (locked := next((e for e in errors if _LOCKED.search(e)), None)):
        # rank 0 found the run directory locked (``loop.lock_run_dir``): that line is the whole story
        raise TrainingError(f"{spec.kind} job refused: {_LOCKED.split(locked, 1)[1].strip()} (full log: {log_path})")
    elif returncode != 0 or not result_path.exists():
        raise TrainingError(_failure(f"{spec.kind} job", returncode, log_path, errors, tail))
    return json.loads(result_path.read_text())


def _failure(what: str, returncode: int, log_path: Path, errors: list[str], tail: list[str]) -> str:
    cause = ("first error lines of the ranks:\n" + "\n".join(errors) + "\n...\n") if errors else ""
    return f"{what} failed (exit code {returncode}); full log: {log_path}\n{cause}last lines:\n" + "\n".join(tail)


def run_launcher(cmd: list[str], log_path: Path, env: dict[str, str], launch: LaunchArgs,
                 watch: nodes.NodeWatch | None = None) -> tuple[int, list[str], list[str]]:
    """Start the launcher ``cmd`` writing ``log_path``, follow the log into this process's log until it exits;
    returns (exit code, last 40 lines, first 30 error lines). Stops the launcher (and raises) on
    ``launch.timeout_s``, and when ``watch`` finds a node missing after ``launch.join_timeout_s``."""
    tail: deque[str] = deque(maxlen=40)
    errors: list[str] = []  # the first error lines of the ranks: the cause, before the launcher's summary
    run_dir = log_path.parent

    def check() -> None:
        if watch and (missing := watch.missing()):
            raise NodeMissingError(*nodes.missing_message(run_dir, launch, launch.master_port or 0, missing))

    # The job writes its own log (not a pipe to this process): ``tail -f train.log`` follows it, the whole log
    # survives this process, and the ranks never die of a broken pipe by accident when it is killed: they end
    # because their guard saw the owner go (``processes``), which is what the chaos test checks.
    with open(log_path, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True,  # _kill_group's group
                                preexec_fn=processes.die_with(os.getpid()))  # noqa: PLW1509 (sets prctl only)
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            for line in follow(log, proc, launch.timeout_s, check=check):
                tail.append(line.rstrip())
                if len(errors) < 30 and _ERROR_LINE.search(line) and not _NOT_AN_ERROR.search(line):
                    errors.append(line.rstrip())
                if "[lmforge]" in line or "Error" in line or "error" in line:
                    logger.info("%s", line.rstrip())
        returncode = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    return returncode, list(tail), errors


def join(run_dir: str | Path, node_rank: int, *, wait_s: float | None = None) -> int:
    """Node ``node_rank`` of a multi-node job: start its launcher for the job node 0 wrote into ``run_dir``
    (waiting up to ``wait_s``, default ``LaunchArgs.join_timeout_s``, for it) and wait for it; returns 0.

    Its log is ``<run_dir>/train.node<rank>.log``; rank 0 (on node 0) writes the job's result.
    """
    run_dir = Path(run_dir).resolve()
    wait_s = LaunchArgs().join_timeout_s if wait_s is None else wait_s
    record = nodes.read_launch(run_dir, wait_s)
    if record is None:
        raise UserError(f"no multi-node job to join in {run_dir}: node 0 wrote no {nodes.LAUNCH_RECORD} there "
                        f"within {wait_s:g} s", "start the job on node 0 first (`kedro run` with launch.nnodes > 1); "
                        "the run directory must be the same shared folder on every node")
    launch: LaunchArgs = record["launch"]
    if not 0 < node_rank < launch.nnodes:
        raise UserError(f"--node-rank {node_rank} is not a joining node of this {launch.nnodes}-node job",
                        f"use 1..{launch.nnodes - 1} (node 0 is the `kedro run`)")
    launch = replace(launch, node_rank=node_rank)
    nodes.arrive(run_dir, node_rank, record["attempt"])
    watch = nodes.NodeWatch(run_dir, record["attempt"], launch.nnodes, launch.join_timeout_s)
    cmd = build_command(record["module"], run_dir / record["config"], launch, launch.master_port)
    log_path = run_dir / f"train.node{node_rank}.log"
    logger.info("node %d of %d joins the job of %s at %s:%d: %s (log: %s)", node_rank, launch.nnodes, run_dir,
                launch.master_addr, launch.master_port, " ".join(cmd), log_path)
    returncode, tail, errors = run_launcher(cmd, log_path, child_environment(), launch, watch)
    if returncode != 0 and not (run_dir / COMPLETE_MARKER).exists():
        if missing := watch.absent():
            raise NodeMissingError(*nodes.missing_message(run_dir, launch, launch.master_port, missing))
        raise TrainingError(_failure(f"node {node_rank}'s part of the job", returncode, log_path, errors, tail))
    logger.info("node %d: its part of the job is done (exit code %d); the result is node 0's", node_rank, returncode)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m lmforge.training.launch",
        description="Multi-node training: join, from another node, the job that node 0 (`kedro run` with "
                    "launch.nnodes > 1) started.")
    commands = parser.add_subparsers(dest="command", required=True)
    join_parser = commands.add_parser(
        "join", help="start this node's part of a multi-node training job",
        description="Start this node's launcher (torchrun or the deepspeed runner, as node 0's launch.launcher) for "
                    "the job node 0 wrote into the shared run directory (job.json, launch.json), and wait for it. "
                    "Node 0 waits launch.join_timeout_s for every node, then stops and names the missing ones.",
        epilog="example: python -m lmforge.training.launch join --run-dir /shared/project/data/06_models/"
               "pretrain_run --node-rank 1")
    join_parser.add_argument("--run-dir", required=True,
                             help="the job's run directory as this node sees it (pretrain.run_dir / sft.run_dir of "
                                  "node 0, on a filesystem every node shares)")
    join_parser.add_argument("--node-rank", type=int, required=True, help="this node's rank: 1..nnodes-1")
    join_parser.add_argument("--wait-s", type=float, default=None,
                             help="seconds to wait for node 0 to write launch.json (default: launch.join_timeout_s's "
                                  f"default, {LaunchArgs().join_timeout_s})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return join(args.run_dir, args.node_rank, wait_s=args.wait_s)


def follow(log: Any, proc: subprocess.Popen, timeout_s: float = 0, poll_s: float = 0.1,
           check: Callable[[], None] | None = None) -> Iterator[str]:
    """The lines of the job's log as the job writes them, until it has exited and every line is read;
    ``subprocess.TimeoutExpired`` after ``timeout_s`` (0: no limit). ``check`` is called while waiting (it may
    raise to stop following)."""
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
            if check:
                check()
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


if __name__ == "__main__":
    # through the imported module, so its error types are ``lmforge.training.launch``'s (not ``__main__``'s)
    from lmforge.training.launch import main as _main

    run_cli(_main, "lmforge.training.launch")
