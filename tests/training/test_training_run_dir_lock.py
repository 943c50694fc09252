"""One trainer per run directory: rank 0 locks it for the whole job, and a second job stops with one line naming
the holder (an orphaned trainer of a killed run, here a second process holding the lock) before it touches
the run directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_locks import hold_in_child

from lmforge.errors import one_line
from lmforge.locks import LockedError, OutputLock, run_dir_lock
from lmforge.training.config import JobData, JobModel, JobSpec, LaunchArgs, TrainArgs
from lmforge.training.launch import RunDirLockedError, TrainingError, launch_job


def tiny_spec(run_dir: Path) -> JobSpec:
    return JobSpec(kind="pretrain", model=JobModel(attn_implementation="sdpa", preset="debug"), init_from=None,
                   data=JobData(), train=TrainArgs(max_steps=1, micro_batch_size=1), deepspeed={},
                   output_dir=str(run_dir / "export"), run_dir=str(run_dir), metric_prefix="pretrain")


@pytest.fixture(autouse=True)
def short_wait(monkeypatch):
    import lmforge.training.launch as launch_module

    monkeypatch.setattr(launch_module, "RUN_DIR_WAIT_S", 0.3)


def test_a_job_on_a_locked_run_dir_is_not_started_and_names_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("the orphan's log\n")
    holder = hold_in_child(run_dir / "job.lock", f"the training run directory {run_dir}")
    try:
        with pytest.raises(TrainingError) as err:
            launch_job(tiny_spec(run_dir), LaunchArgs(launcher="torchrun", nproc_per_node=1, timeout_s=60))
    finally:
        holder.kill()
        holder.wait()
    line = one_line(err.value)
    assert isinstance(err.value, RunDirLockedError) and line.endswith(f"(wait for it, or stop it: kill {holder.pid})")
    assert line.startswith(f"pretrain job not started: the training run directory {run_dir} is being written by "
                           f"pid {holder.pid}"), line
    assert f"kill {holder.pid}" in line
    assert (run_dir / "train.log").read_text() == "the orphan's log\n" and not (run_dir / "job.json").exists()


def test_rank_0s_refusal_in_the_log_is_the_training_errors_line(tmp_path, monkeypatch):
    """Rank 0 lost the race for the lock (``loop.lock_run_dir``): its LockedError line is the message."""
    import lmforge.training.launch as launch_module

    refusal = "the training run directory R is being written by pid 42 (wait for it, or stop it: kill 42)"
    script = ("import sys; print('Traceback (most recent call last):'); "
              f"print('[rank0]: lmforge.locks.LockedError: {refusal}', flush=True); sys.exit(1)")
    monkeypatch.setattr(launch_module, "build_command", lambda *a, **k: [sys.executable, "-c", script])

    with pytest.raises(TrainingError) as err:
        launch_job(tiny_spec(tmp_path / "run"), LaunchArgs(launcher="torchrun", nproc_per_node=1))

    assert str(err.value).startswith(f"pretrain job refused: {refusal} (full log: {tmp_path / 'run/train.log'})")


@pytest.fixture
def one_process_group():
    import torch.distributed as dist

    import lmforge.training.run_lock as loop

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield loop
    if loop._run_dir_lock is not None:
        loop._run_dir_lock.release()
        loop._run_dir_lock = None
    dist.destroy_process_group()


def test_rank_0_holds_the_run_dir_lock_for_the_job_and_is_refused_a_held_one(tmp_path, one_process_group):
    loop = one_process_group
    held = tmp_path / "held"
    with OutputLock(held / "job.lock", "an orphan's run"):
        with pytest.raises(LockedError, match="is being written by pid"):
            loop.lock_run_dir(held, rank=0)
    assert loop._run_dir_lock is None

    loop.lock_run_dir(tmp_path / "free", rank=0)
    with pytest.raises(LockedError):  # the next job on this run directory
        run_dir_lock(tmp_path / "free").acquire()


def test_a_stage_rerun_stops_before_writing_into_a_locked_run_dir(tmp_path, deepspeed_templates, training_params_factory,
                                                                 pretrain_config_factory):
    """jobs._run writes the job's data and removes the old export before launching: the check comes first."""
    from lmforge.training import jobs

    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    config = pretrain_config_factory(training_params_factory(run_dir))
    written = []
    with OutputLock(run_dir / "job.lock", "an orphan's run"):
        with pytest.raises(TrainingError, match=r"^pretrain job not started: the training run directory .* is being written by pid"):
            jobs._run("pretrain", config, deepspeed_templates, model=JobModel(attn_implementation="sdpa", preset="debug"),
                      init_from=None, data=JobData(), tokenizer_sha256=None, write_data=lambda d: written.append(d) or {})
    assert written == [] and (run_dir / "export").is_dir()
