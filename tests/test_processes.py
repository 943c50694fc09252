"""Every process lmforge starts dies with the process that started it (``lmforge.processes``), checked with real
SIGKILLs and /proc: the guard of a single process, a pool's workers, the sandboxed program, a stage under a
``dvc`` process and a real 2-rank torchrun training job whose caller (Kedro's place) is SIGKILLed mid-training.

Processes are found by a marker in their environment (``LMFORGE_TEST_MARKER``, inherited by every descendant)
and named by (pid, start ticks), so a recycled pid never passes for a survivor; survivors are SIGKILLed at
teardown so a failing test leaves no orphan behind. Each test fails when its mechanism is removed (checked
once by hand: without ``die_with`` and the ranks' ``guard_process`` the torchrun launcher and both ranks were
still running 10 s after the SIGKILL; without the pool initializer, the runner's PDEATHSIG or the dvc stage
guard, the workers / the program / the stage were still running after 3 s).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from proc_helpers import cmdline, marked

from lmforge.processes import OWNER_ENV, owner_alive, owner_token, parent_pid, start_ticks

MARKER_ENV = "LMFORGE_TEST_MARKER"
SRC = str(Path(__file__).resolve().parents[1] / "src")
logger = logging.getLogger(__name__)


def _env(marker: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH", "")) if p)
    return {**env, MARKER_ENV: marker, **extra}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().decode("ascii", "replace").rsplit(")", 1)[-1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _wait_gone(procs: dict[int, int], timeout_s: float) -> float:
    """Seconds until every (pid, ticks) in ``procs`` is gone; fails naming the survivors after ``timeout_s``."""
    t0 = time.monotonic()
    while True:
        alive = {pid: t for pid, t in procs.items() if start_ticks(pid) == t}
        if not alive:
            elapsed = time.monotonic() - t0
            logger.info("gone %.2f s after the owner's SIGKILL: %s", elapsed, ", ".join(map(str, procs)))
            return elapsed
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"still running {timeout_s:.0f} s after the owner's SIGKILL: "
                                 + "; ".join(f"{pid} {cmdline(pid)}" for pid in alive))
        time.sleep(0.05)


def _wait_for(predicate, timeout_s: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture
def marker():
    """A fresh marker; whatever still carries it at teardown is SIGKILLed (and reported by the test itself)."""
    value = uuid.uuid4().hex
    yield value
    for pid, ticks in marked(MARKER_ENV, value).items():
        if start_ticks(pid) == ticks and pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


GUARDED = textwrap.dedent("""
    import ctypes, sys, time
    from lmforge.processes import guard_process
    guard_process(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None)
    if len(sys.argv) > 2 and sys.argv[2] == "no-pdeathsig":  # as a uid change would: only the watch is left
        ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
    print("ready", flush=True)
    time.sleep(60)
""")


def _start_guarded(marker: str, owner: str = "", mode: str = "") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", GUARDED, owner, mode], env=_env(marker), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_guard_ends_a_process_whose_owner_is_sigkilled(marker):
    owner = subprocess.Popen(["sleep", "60"])  # the owner is not the guarded process's parent: no PDEATHSIG here
    child = _start_guarded(marker, owner_token(owner.pid))

    owner.kill()
    owner.wait()

    assert _wait_gone({child.pid: start_ticks(child.pid)}, timeout_s=3) < 3
    assert child.wait() == -signal.SIGKILL
    assert "the process that owns its job" in child.stderr.read()


@pytest.mark.parametrize("mode", ["", "no-pdeathsig"])
def test_guard_ends_a_reparented_process(marker, mode):
    # a middle process starts the guarded one and is SIGKILLed: PDEATHSIG ends the child at once; without it
    # (cleared, as a uid change clears it) the guard thread sees the reparenting within its interval.
    middle = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {GUARDED!r}, "", {mode!r}], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        print(child.pid, flush=True)
        time.sleep(60)
    """)], env=_env(marker), stdout=subprocess.PIPE, text=True)
    pid = int(middle.stdout.readline())
    child = {pid: start_ticks(pid)}

    middle.kill()
    middle.wait()

    assert _wait_gone(child, timeout_s=3) < 3


def test_a_recycled_pid_is_not_taken_for_the_owner(marker):
    me = os.getpid()
    host = socket.gethostname()
    assert owner_alive(owner_token()) is True
    assert owner_alive(f"{host}:{me}:{start_ticks(me) + 1}") is False  # same pid, another process's start time
    assert owner_alive(f"not-{host}:{me}:{start_ticks(me)}") is None  # another host: cannot tell

    child = _start_guarded(marker, f"{host}:{me}:{start_ticks(me) + 1}")  # our pid, alive, but not that owner

    assert child.wait(timeout=3) == -signal.SIGKILL


POOL_OWNER = textwrap.dedent("""
    import sys, time
    kind = sys.argv[1]
    # every worker busy in a long task when its owner is killed (an idle spawn worker would see its task
    # queue close and exit by itself; a busy one, or any fork worker, would not)
    if kind == "encode":
        from lmforge.tokenizer.artifact import load_tokenizer
        from lmforge.data.executor import ExecutorConfig
        from lmforge.tokenizer.encode import encode_documents
        tokenizer, _ = load_tokenizer(sys.argv[2])
        texts = iter(lambda: "a text to encode " * 60000, None)  # endless 1 MB texts, 16 MB (seconds) per batch
        print("ready", flush=True)
        for _ in encode_documents(texts, tokenizer, executor=ExecutorConfig(kind="local", workers=2),
                                     batch_bytes=16 << 20):
            pass
    else:
        from lmforge.data.executor import ExecutorConfig, map_in_order
        print("ready", flush=True)
        list(map_in_order(time.sleep, [60] * 4, ExecutorConfig(kind="local", workers=2, start_method=kind)))
""")


@pytest.mark.parametrize("kind", ["fork", "spawn", "encode"])
def test_pool_workers_end_when_the_pool_owner_is_sigkilled(marker, kind, request):
    args = [request.getfixturevalue("chain_tokenizer_dir")] if kind == "encode" else []
    owner = subprocess.Popen([sys.executable, "-c", POOL_OWNER, kind, *args], env=_env(marker),
                             stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "ready"
    # both workers up, and past their initializer (a worker's own pid appears once it has run a task)
    workers = _wait_for(lambda: (w := {p: t for p, t in marked(MARKER_ENV, marker).items() if p != owner.pid}) and len(w) >= 2
                        and w, 30, "the pool's workers")
    if kind == "encode":  # both workers into encoding a batch (their start takes < 1 CPU second)
        busy = [p for p in workers if "resource_tracker" not in cmdline(p)]
        _wait_for(lambda: all(_cpu_s(p) > 1.0 for p in busy), 60, "the workers encoding")
    else:
        time.sleep(0.5)

    owner.kill()
    owner.wait()

    assert _wait_gone(workers, timeout_s=3) < 3


def test_sandboxed_program_ends_when_the_evaluator_is_sigkilled(marker):
    evaluator = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        from lmforge.evaluation.sandbox import SandboxLimits, run_program
        run_program("import time\\ntime.sleep(60)", SandboxLimits(timeout_s=60))
    """)], env=_env(marker))
    # the sandbox scrubs the environment: find the runner as the evaluator's child
    runner = _wait_for(lambda: [int(p) for p in os.listdir("/proc") if p.isdigit()
                                and parent_pid(int(p)) == evaluator.pid and "-I" in cmdline(int(p))],
                       30, "the sandboxed program")[0]
    runner_ticks = start_ticks(runner)
    time.sleep(0.5)  # past the runner's set-up (uid drop, PDEATHSIG set again): the program is running

    evaluator.kill()
    evaluator.wait()

    assert _wait_gone({runner: runner_ticks}, timeout_s=3) < 3


def test_a_stage_under_dvc_ends_when_dvc_alone_is_sigkilled(marker, tmp_path):
    # The process tree of `dvc repro` (checked on a real one): dvc -> /bin/bash -c "<cmd>" -> the stage's command.
    # A stand-in `dvc` program makes the same tree; the stage guards itself as the Kedro hook does.
    stage = tmp_path / "stage.py"
    stage.write_text("import time\nfrom lmforge.processes import guard_dvc_stage\n"
                     "assert guard_dvc_stage() is not None\nprint('ready', flush=True)\ntime.sleep(60)\n")
    dvc = tmp_path / "dvc"
    dvc.write_text(f"#!{sys.executable}\nimport subprocess, sys, time\n"
                   f"subprocess.run(['/bin/bash', '--noprofile', '--norc', '-c', "
                   f"{sys.executable!r} + ' {stage} && echo done'])\n")
    dvc.chmod(0o755)
    proc = subprocess.Popen([str(dvc), "repro"], env=_env(marker), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    stage_procs = {p: t for p, t in marked(MARKER_ENV, marker).items() if p != proc.pid}

    proc.kill()  # dvc alone, not its process group
    proc.wait()

    assert _wait_gone(stage_procs, timeout_s=3) < 3

    # a command started from a shell (no dvc above it) is not guarded: `nohup kedro run &` keeps running
    plain = subprocess.run([sys.executable, "-c", "from lmforge.processes import guard_dvc_stage as g; print(g())"],
                           env=_env(marker), capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "None"


KEDRO_STAND_IN = textwrap.dedent("""
    import json, sys
    from lmforge.training.jobs import run_pretraining
    args = json.loads(open(sys.argv[1]).read())
    from lmforge.config import build_dataclass
    from lmforge.training.pretrain_config import PretrainConfig
    run_pretraining(args["shards"], args["tokenizer"], args["templates"],
                    build_dataclass(PretrainConfig, args["params"], path="pretrain"))
""")


@pytest.mark.slow
def test_sigkill_of_the_launching_process_ends_the_torchrun_launcher_and_both_ranks(
        marker, tmp_path, chain_token_shards, chain_tokenizer_dir, deepspeed_templates, training_params_factory):
    # The test plays the user, a child process plays Kedro (it calls launch_job through run_pretraining).
    run_dir = tmp_path / "run"
    params = training_params_factory(run_dir, steps=10_000, model={"preset": "debug", "overrides": {}})
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"shards": chain_token_shards, "tokenizer": chain_tokenizer_dir,
                                "templates": deepspeed_templates, "params": params}))
    with open(tmp_path / "kedro.log", "w") as kedro_log:
        kedro = subprocess.Popen([sys.executable, "-c", KEDRO_STAND_IN, str(args)], env=_env(marker),
                                 stdout=kedro_log, stderr=subprocess.STDOUT)
    log = run_dir / "train.log"
    _wait_for(lambda: (log.exists() and "pretrain step 1/" in log.read_text()) or kedro.poll() is not None, 120,
              "training step 1 in train.log")
    assert kedro.poll() is None, (tmp_path / "kedro.log").read_text()[-3000:]
    job = {p: t for p, t in marked(MARKER_ENV, marker).items() if p != kedro.pid}
    commands = [cmdline(p) for p in job]
    assert sum("torch.distributed.run" in c for c in commands) == 1, commands
    assert sum("lmforge.training.pretrain" in c and "torch.distributed.run" not in c for c in commands) == 2, commands

    kedro.kill()
    kedro.wait()
    elapsed = _wait_gone(job, timeout_s=10)

    assert elapsed < 10
