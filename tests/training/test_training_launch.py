"""Launcher command lines, the child environment, and a failed job's error message."""

from __future__ import annotations

import sys

import pytest

from lmforge.training.config import DeepSpeedArgs, JobData, JobModel, JobSpec, LaunchArgs, TrainArgs
from lmforge.training.deepspeed_config import build_deepspeed_config
from lmforge.training.launch import TrainingError, build_command, child_environment, launch_job


def test_torchrun_command_single_node(tmp_path):
    config = tmp_path / "job.json"

    cmd = build_command("lmforge.training.pretrain", config, LaunchArgs(launcher="torchrun", nproc_per_node=2), 29511)

    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert {"--nproc_per_node=2", "--nnodes=1", "--master_addr=127.0.0.1", "--master_port=29511"} <= set(cmd)
    assert not any(arg.startswith("--rdzv") for arg in cmd)
    assert cmd[-4:] == ["-m", "lmforge.training.pretrain", "--config", str(config)]


def test_torchrun_command_multi_node_uses_a_static_rendezvous_with_the_join_timeout():
    launch = LaunchArgs(launcher="torchrun", nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1",
                        join_timeout_s=45)

    cmd = build_command("lmforge.training.sft", "job.json", launch, 29600)

    assert "--nnodes=2" in cmd
    assert "--node_rank=1" in cmd  # static: node 1's ranks are 8..15 (c10d would number nodes by arrival)
    assert "--rdzv_backend=static" in cmd
    assert "--rdzv_endpoint=10.0.0.1:29600" in cmd
    assert "--rdzv_conf=timeout=45" in cmd
    assert cmd[-4:] == ["-m", "lmforge.training.sft", "--config", "job.json"]


def test_deepspeed_command_single_node():
    cmd = build_command("lmforge.training.pretrain", "job.json", LaunchArgs(launcher="deepspeed", nproc_per_node=2),
                        29512)

    assert cmd[:3] == [sys.executable, "-m", "deepspeed.launcher.runner"]
    assert {"--master_port=29512", "--master_addr=127.0.0.1", "--num_gpus=2"} <= set(cmd)
    assert cmd[-4:] == ["--module", "lmforge.training.pretrain", "--config", "job.json"]


def test_deepspeed_command_over_ssh_names_nodes_not_gpus():
    launch = LaunchArgs(launcher="deepspeed", nnodes=2, hostfile="/etc/hostfile", ssh=True)

    cmd = build_command("lmforge.training.pretrain", "job.json", launch, 29513)

    assert "--hostfile=/etc/hostfile" in cmd
    assert "--num_nodes=2" in cmd
    assert not any(arg.startswith(("--num_gpus", "--no_ssh", "--node_rank")) for arg in cmd)
    assert not any(arg.startswith("--master_addr") for arg in cmd)  # the runner takes the hostfile's first host

    named = build_command("lmforge.training.pretrain", "job.json",
                          LaunchArgs(launcher="deepspeed", nnodes=2, hostfile="/etc/hostfile", master_addr="node1",
                                     ssh=True), 1)
    assert "--master_addr=node1" in named


def test_deepspeed_command_of_a_joining_node_runs_without_ssh():
    launch = LaunchArgs(launcher="deepspeed", nnodes=2, node_rank=1, hostfile="/run/hostfile")

    cmd = build_command("lmforge.training.pretrain", "job.json", launch, 29514)

    assert {"--hostfile=/run/hostfile", "--num_nodes=2", "--no_ssh", "--node_rank=1", "--master_addr=127.0.0.1",
            "--master_port=29514"} <= set(cmd)
    with pytest.raises(ValueError, match="hostfile"):
        build_command("lmforge.training.pretrain", "job.json", LaunchArgs(launcher="deepspeed", nnodes=2), 1)


def test_node_rank_and_join_timeout_are_checked():
    with pytest.raises(ValueError, match="node_rank"):
        LaunchArgs(nnodes=2, node_rank=2)
    with pytest.raises(ValueError, match="join_timeout_s"):
        LaunchArgs(join_timeout_s=0)


def test_unknown_launcher_is_an_error():
    with pytest.raises(ValueError, match="mpirun"):
        build_command("m", "job.json", LaunchArgs(launcher="mpirun"), 1)


def test_child_environment_puts_src_on_pythonpath_and_keeps_extras(monkeypatch, project_root):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")

    env = child_environment({"MLFLOW_RUN_ID": "abc"})

    assert env["PYTHONPATH"].split(":")[:2] == [str(project_root / "src"), "/elsewhere"]
    assert env["MLFLOW_RUN_ID"] == "abc"
    assert env["DS_ACCELERATOR"] == "cpu"  # these machines have no GPU


@pytest.mark.slow
def test_failed_job_raises_training_error_with_the_log_tail(tmp_path, deepspeed_templates):

    missing = tmp_path / "no_such_shards"
    train = TrainArgs(max_steps=2, micro_batch_size=2)
    spec = JobSpec(kind="pretrain", model=JobModel(attn_implementation="sdpa", preset="debug"), init_from=None,
                   data=JobData(token_shards=str(missing)), train=train,
                   deepspeed=build_deepspeed_config(deepspeed_templates, train, DeepSpeedArgs(zero_stage=2)),
                   output_dir=str(tmp_path / "run/export"), run_dir=str(tmp_path / "run"), metric_prefix="pretrain")

    with pytest.raises(TrainingError) as err:
        launch_job(spec, LaunchArgs(launcher="torchrun", nproc_per_node=1, timeout_s=180))

    message = str(err.value)
    assert "pretrain job failed" in message
    assert "exit code 0)" not in message
    assert str(tmp_path / "run/train.log") in message
    assert f"Token shard folder {missing} does not exist" in message  # the worker's error, from the log tail
    assert (tmp_path / "run/job.json").is_file()
    assert not (tmp_path / "run/result.json").exists()


def _fake_job(tmp_path, monkeypatch, script: str) -> JobSpec:
    """A 'job' whose launcher command is ``script`` (run with this interpreter in the run dir)."""
    import lmforge.training.launch as launch_module

    monkeypatch.setattr(launch_module, "build_command", lambda *a, **k: [sys.executable, "-c", script])
    run_dir = tmp_path / "run"
    train = TrainArgs(max_steps=1, micro_batch_size=1)
    return JobSpec(kind="pretrain", model=JobModel(attn_implementation="sdpa", preset="debug"), init_from=None,
                   data=JobData(), train=train, deepspeed={}, output_dir=str(run_dir / "export"), run_dir=str(run_dir),
                   metric_prefix="pretrain")


def test_crash_at_exit_after_every_rank_finished_keeps_the_result(tmp_path, monkeypatch, caplog):
    script = ("import os, pathlib, sys; d = pathlib.Path('{d}'); (d / 'result.json').write_text('{{\"final_loss\": 1.5}}');"
              " (d / 'complete').write_text('done'); print(\"terminate called after throwing an instance of "
              "'gloo::IoException'\", flush=True); os.abort()").format(d=tmp_path / "run")
    spec = _fake_job(tmp_path, monkeypatch, script)

    with caplog.at_level("WARNING", logger="lmforge.training.launch"):
        result = launch_job(spec, LaunchArgs(launcher="torchrun", nproc_per_node=1))

    assert result == {"final_loss": 1.5}
    assert "failed while exiting" in caplog.text and "gloo::IoException" in caplog.text


def test_crash_before_the_end_names_the_ranks_first_error_not_only_the_tail(tmp_path, monkeypatch):
    # result.json written (rank 0 got that far) but no completion marker: the job failed.
    script = ("import os, pathlib; d = pathlib.Path('{d}'); (d / 'result.json').write_text('{{}}');"
              " print(\"what():  [gloo/transport/tcp/pair.cc:534] Connection closed by peer\", flush=True);"
              " [print('launcher noise', i) for i in range(100)]; os.abort()").format(d=tmp_path / "run")
    spec = _fake_job(tmp_path, monkeypatch, script)
    (tmp_path / "run").mkdir()
    (tmp_path / "run/complete").write_text("left over from the previous run")  # must not count

    with pytest.raises(TrainingError) as err:
        launch_job(spec, LaunchArgs(launcher="torchrun", nproc_per_node=1))

    message = str(err.value)
    assert "Connection closed by peer" in message  # 100 lines before the end: outside the 40-line tail
    assert "launcher noise 99" in message
