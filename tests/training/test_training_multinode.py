"""Two-node pretraining on one machine: node 0 is ``run_pretraining`` (what ``kedro run --pipeline pretrain``
calls), node 1 a real ``python -m lmforge.training.launch join`` process, one rank each, over a loopback
rendezvous; with torchrun (static rendezvous) and with DeepSpeed's own runner (``--no_ssh``, a hostfile of two
names for this machine). Their per-step losses must equal the 1-node 2-process run of the same job (the
session's ``chain_pretrain_runs(2)``, shared with tests/training/test_training_jobs.py), and a node that never
comes must stop node 0 after ``launch.join_timeout_s`` with an error naming it, leaving no process behind.

Exact equality (not a tolerance): the same 2 ranks see the same micro-batches (``sample_indices`` depends only
on the rank and world size), run the same fp32 kernels on one thread each (``OMP_NUM_THREADS=1``, which torchrun
sets itself for the 2-process baseline), and gloo's sum of two gradients is the same in either order, so the
losses must match bit for bit; a changed node count, batch split or data order shows at the first steps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from proc_helpers import cmdline, marked

from lmforge.processes import OWNER_ENV, start_ticks

MARKER_ENV = "LMFORGE_TEST_MARKER"
SRC = str(Path(__file__).resolve().parents[2] / "src")



@pytest.fixture
def marker(monkeypatch):
    """Every process this test starts carries a fresh marker; none may survive the test (SIGKILLed at teardown)."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(MARKER_ENV, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per rank, as torchrun gives the 2-process baseline
    yield value
    for pid, ticks in marked(MARKER_ENV, value).items():
        if start_ticks(pid) == ticks and pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


def _survivors(marker: str, timeout_s: float = 5.0) -> list[str]:
    """The marked processes still running after ``timeout_s`` (a rank's guard needs ~1 s to notice)."""
    deadline = time.monotonic() + timeout_s
    while (left := {p: t for p, t in marked(MARKER_ENV, marker).items() if p != os.getpid()}) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{pid} {cmdline(pid)}" for pid in left]


def _join(run_dir: Path, node_rank: int) -> subprocess.Popen:
    """Node ``node_rank``: the join command, started before node 0 (it waits for node 0's launch.json)."""
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, "-m", "lmforge.training.launch", "join", "--run-dir", str(run_dir),
                             "--node-rank", str(node_rank), "--wait-s", "120"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _two_node_params(factory, run_dir: Path, launcher: str, **launch) -> dict:
    params = factory(run_dir, zero_stage=2, launcher=launcher, model={"preset": "debug", "overrides": {}})
    params["launch"].update({"nproc_per_node": 1, "nnodes": 2, "join_timeout_s": 60, **launch})
    return params


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_two_nodes_train_exactly_like_one_node_with_two_processes(
        launcher, marker, tmp_path, chain_pretrain_runs, chain_token_shards, chain_tokenizer_dir, deepspeed_templates,
        training_params_factory, pretrain_config_factory):
    from lmforge.training.jobs import run_pretraining

    _, _, one_node = chain_pretrain_runs(2)  # 1 node x 2 processes, torchrun, ZeRO-2, global batch 8
    run_dir = tmp_path / "run"
    launch = {}
    if launcher == "deepspeed":  # two names of this machine: with --no_ssh the runner only counts their slots
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("127.0.0.1 slots=1\nlocalhost slots=1\n")
        launch["hostfile"] = str(hostfile)
    params = _two_node_params(training_params_factory, run_dir, launcher, **launch)
    node1 = _join(run_dir, 1)
    try:
        _, metrics, two_nodes = run_pretraining(chain_token_shards, chain_tokenizer_dir, deepspeed_templates,
                                                pretrain_config_factory(params))
        node1_out, _ = node1.communicate(timeout=60)
    finally:
        node1.kill()
    assert node1.returncode == 0, node1_out
    assert "node 1 of 2 joins" in node1_out and "its part of the job is done" in node1_out

    assert metrics["world_size"] == 2
    assert [r["step"] for r in two_nodes] == [r["step"] for r in one_node]
    assert [r["loss"] for r in two_nodes] == [r["loss"] for r in one_node]  # bit for bit (module docstring)
    arrivals = sorted(p.name for p in (run_dir / "nodes").iterdir())
    assert arrivals == ["0.json", "1.json"]
    assert not (run_dir / "launch.json").exists()  # node 0 withdraws the job when it ends: no late join
    assert (run_dir / "train.node1.log").is_file()
    assert _survivors(marker) == []


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_a_node_that_never_arrives_is_named_with_the_timeout(launcher, marker, tmp_path, chain_token_shards,
                                                             chain_tokenizer_dir, deepspeed_templates,
                                                             training_params_factory, pretrain_config_factory):
    """torchrun's static rendezvous gives up by itself; the deepspeed launcher's rank 0 would wait 30 minutes in
    ``init_process_group``: node 0's own watch stops it (``timeout_s`` 60 fails this test instead of hanging)."""
    from lmforge.training.jobs import run_pretraining
    from lmforge.training.launch import NodeMissingError

    run_dir = tmp_path / "run"
    params = _two_node_params(training_params_factory, run_dir, launcher, join_timeout_s=3, timeout_s=60)
    t0 = time.monotonic()
    with pytest.raises(NodeMissingError) as err:
        run_pretraining(chain_token_shards, chain_tokenizer_dir, deepspeed_templates, pretrain_config_factory(params))
    elapsed = time.monotonic() - t0

    message = str(err.value)
    assert "\n" not in message
    assert "node 1 of 2 never arrived at the rendezvous 127.0.0.1:" in message
    assert "within 3 s" in message
    assert f"`python -m lmforge.training.launch join --run-dir {run_dir.resolve()} --node-rank 1` on node 1" in message
    assert elapsed < 30, f"node 0 gave up after {elapsed:.0f} s, its join timeout is 3 s"
    assert not (run_dir / "launch.json").exists()
    assert _survivors(marker) == []


def test_join_without_a_job_or_with_a_wrong_rank_says_what_to_do(tmp_path):
    from lmforge.errors import UserError
    from lmforge.training.config import LaunchArgs
    from lmforge.training.launch import join
    from lmforge.training.nodes import start_launch

    with pytest.raises(UserError, match="node 0 wrote no launch.json there within 0.2 s") as err:
        join(tmp_path, 1, wait_s=0.2)
    assert "start the job on node 0 first" in str(err.value)

    start_launch(tmp_path, LaunchArgs(nnodes=2, master_port=29999), "lmforge.training.pretrain")
    for rank in (0, 2):
        with pytest.raises(UserError, match=f"--node-rank {rank} is not a joining node of this 2-node job"):
            join(tmp_path, rank, wait_s=0.2)


def test_a_deepspeed_hostfile_must_give_every_node_its_processes(tmp_path):
    from lmforge.errors import UserError
    from lmforge.training.config import LaunchArgs
    from lmforge.training.nodes import check_hostfile

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two names of this machine\n127.0.0.1 slots=1\nlocalhost slots=1\n")
    check_hostfile(hostfile, LaunchArgs(launcher="deepspeed", nproc_per_node=1, nnodes=2))
    with pytest.raises(UserError, match=r"has slots \[1, 1\]; the job needs 2 hosts of launch.nproc_per_node 2"):
        check_hostfile(hostfile, LaunchArgs(launcher="deepspeed", nproc_per_node=2, nnodes=2))
    with pytest.raises(UserError, match="needs 3 hosts"):
        check_hostfile(hostfile, LaunchArgs(launcher="deepspeed", nproc_per_node=1, nnodes=3))
