"""Faults injected into real parts: a SIGKILLed run's MLflow run, a tracking store that goes away, a full disk
under a checkpoint or a token shard, a corrupted newest checkpoint, an input file that turns unreadable.

Each test checks what the user sees (one line naming the file and what to do) and that nothing is lost.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import uuid

import pytest

from lmforge import processes, tracking


@pytest.fixture
def store(tmp_path_factory, mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_tracking_uri)
    return client, client.create_experiment(f"faults-{uuid.uuid4().hex[:8]}")


def test_a_sigkilled_run_is_closed_as_killed_and_counted_as_a_crash(store, mlflow_tracking_uri, caplog):
    from lmforge.evaluation.operations import gather_operations

    client, exp_id = store
    # the owner of a run as a `kedro run` tags it (tracking.tag_owner): a real process, then SIGKILLed
    owner = subprocess.Popen(["sleep", "60"])
    token = processes.owner_token(owner.pid)
    killed_run = client.create_run(exp_id, tags={tracking.OWNER_TAG: token, "lmforge.pipelines": "pretrain"}).info.run_id
    client.log_metric(killed_run, "pretrain.loss", 3.5, step=7)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    assert client.get_run(killed_run).info.status == "RUNNING"  # what a SIGKILL leaves behind
    other_host = client.create_run(exp_id, tags={tracking.OWNER_TAG: "elsewhere:1:1",
                                                 "lmforge.pipelines": "pretrain"}).info.run_id
    finished = client.create_run(exp_id, tags={"lmforge.pipelines": "pretrain"}).info.run_id
    client.set_terminated(finished, "FINISHED")

    with caplog.at_level(logging.WARNING, logger="lmforge.tracking"):
        closed = tracking.close_dead_runs(client, exp_id, closed_by="run-now")

    assert closed == [killed_run]
    run = client.get_run(killed_run)
    assert run.info.status == "KILLED"
    assert run.info.end_time == client.get_metric_history(killed_run, "pretrain.loss")[0].timestamp
    assert run.data.tags[tracking.ENDED_BY_TAG] == f"owner {token} gone; closed by run run-now"
    assert f"MLflow run {killed_run} was left RUNNING by {token}, which is gone (killed): marked KILLED" in caplog.text
    assert client.get_run(other_host).info.status == "RUNNING"  # its owner cannot be checked from here
    assert tracking.close_dead_runs(client, exp_id) == []  # closed once

    name = client.get_experiment(exp_id).name
    ops = gather_operations(tracking_uri=mlflow_tracking_uri, experiment=name, stages=["pretrain"],
                            exclude_active=False)["metrics"]
    # 3 runs, 2 crashed: the killed one (KILLED) and the other host's (owner unknown: open although a newer run
    # of the stage started, the rule for untagged runs), not the finished one
    assert ops["ops.pretrain.runs"] == 3.0
    assert ops["ops.pretrain.crashed_runs"] == 2.0
    assert ops["ops.pretrain.crash_rate"] == pytest.approx(2 / 3)
    assert ops["ops.chain.crash_rate"] == pytest.approx(2 / 3)


def test_a_live_owners_open_run_is_not_a_crash(store, mlflow_tracking_uri):
    from lmforge.evaluation.operations import gather_operations

    client, exp_id = store
    client.create_run(exp_id, tags={tracking.OWNER_TAG: processes.owner_token(), "lmforge.pipelines": "sft"})
    done = client.create_run(exp_id, tags={"lmforge.pipelines": "sft"}).info.run_id
    client.set_terminated(done, "FINISHED")

    assert tracking.close_dead_runs(client, exp_id) == []  # its owner (this process) is alive
    ops = gather_operations(tracking_uri=mlflow_tracking_uri, experiment=client.get_experiment(exp_id).name,
                            stages=["sft"], exclude_active=False)["metrics"]
    assert ops["ops.sft.crashed_runs"] == 0.0


def test_the_run_owner_hook_tags_the_run_and_closes_dead_owners_runs(mlflow_tracking_uri):
    from mlflow_helpers import isolated_run

    from lmforge.hooks import RunOwnerHooks

    with isolated_run(mlflow_tracking_uri, "faults-hook") as run:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_tracking_uri)
        exp_id = run.info.experiment_id
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = client.create_run(exp_id, tags={tracking.OWNER_TAG: f"{processes.owner_token().rsplit(':', 2)[0]}:"
                                                                    f"{dead.pid}:1"}).info.run_id
        RunOwnerHooks().before_pipeline_run(run_params={}, pipeline=None, catalog=None)

        assert client.get_run(run.info.run_id).data.tags[tracking.OWNER_TAG] == processes.owner_token()
        assert client.get_run(stale).info.status == "KILLED"
        assert client.get_run(stale).data.tags[tracking.ENDED_BY_TAG].endswith(f"closed by run {run.info.run_id}")
