"""Operations metrics read back from a temporary sqlite MLflow store holding fake runs of the chain."""

from __future__ import annotations

import pytest

from lmforge.evaluation.operations import gather_operations
from lmforge.pipeline_registry import stages_before

STAGES = stages_before("evaluation")
"""What the evaluation node passes: the stages whose runs are finished when evaluation starts."""

T0 = 1_700_000_000_000  # ms


def _run(client, exp_id, stage, start_s, *, status="FINISHED", duration_s=10.0, system=None, metrics=None):
    run = client.create_run(exp_id, start_time=T0 + int(start_s * 1000), tags={"lmforge.pipelines": stage},
                            run_name=stage)
    from mlflow.entities import Metric

    run_id = run.info.run_id
    batch = [Metric(f"system/{key}", value, T0 + step, step)
             for key, values in (system or {}).items() for step, value in enumerate(values)]
    batch += [Metric(key, value, T0, 0) for key, value in (metrics or {}).items()]
    if batch:
        client.log_batch(run_id, metrics=batch)
    if status not in ("RUNNING",):
        client.set_terminated(run_id, status, end_time=T0 + int((start_s + duration_s) * 1000))
    return run_id


EXPERIMENT = "lmforge-operations-test"  # its own experiment in the session's store (created once: ~5 s)


@pytest.fixture(scope="module")
def store(mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    uri = mlflow_tracking_uri
    client = MlflowClient(uri)
    exp_id = client.create_experiment(EXPERIMENT)
    # step 0 of the CPU is what MLflow really logs first: psutil's first cpu_percent() of its monitor thread, 0.0
    cpu = {"cpu_utilization_percentage": [0.0, 50.0, 70.0], "system_memory_usage_megabytes": [1000.0, 1500.0],
           "disk_usage_megabytes": [100.0, 130.0], "network_receive_megabytes": [1.0, 3.0],
           "network_transmit_megabytes": [0.5, 1.0]}
    _run(client, exp_id, "data_processing", 0, duration_s=10, system=cpu,
         metrics={"io.disk_read_mb": 12.0, "io.disk_write_mb": 8.0, "io.disk_mb_per_s": 2.0})
    _run(client, exp_id, "tokenizer", 20, status="FAILED", duration_s=2)
    _run(client, exp_id, "tokenizer", 30, duration_s=4, system=cpu)
    _run(client, exp_id, "pretrain", 40, status="RUNNING")  # its process died: a newer pretrain run started
    _run(client, exp_id, "pretrain", 50, duration_s=100,
         system={**cpu, "gpu_0_utilization_percentage": [80.0, 90.0], "gpu_1_utilization_percentage": [60.0, 70.0],
                 "gpu_0_memory_usage_megabytes": [1000.0, 2000.0]})
    _run(client, exp_id, "sft", 200, status="KILLED", duration_s=1)
    _run(client, exp_id, "sft", 210, duration_s=20, metrics={"sft.restart_count": 1.0, "sft.tokens_per_s": 500.0,
                                                              "sft.network.allreduce_busbw_gbps": 2.5})
    current = _run(client, exp_id, "__default__", 300, status="RUNNING")  # the evaluation's own run
    return uri, current


def test_operations_from_the_runs(store):
    uri, current = store
    ops = gather_operations({"pretrain": {"time_per_epoch_s": 12.0, "tokens_per_s": 1000.0, "restart_count": 2,
                                          "peak_rss_mb": 900.0, "network": {"allreduce_busbw_gbps": 7.5}}},
                            tracking_uri=uri, experiment=EXPERIMENT, exclude_run_ids=[current], exclude_active=False,
                            stages=STAGES)
    m, missing = ops["metrics"], ops["not_measured"]
    assert m["ops.data_processing.runs"] == 1 and m["ops.data_processing.duration_s"] == pytest.approx(10.0)
    assert m["ops.data_processing.cpu_utilization_pct"] == pytest.approx(60.0)
    assert m["ops.data_processing.memory_used_mb_max"] == 1500.0
    assert m["ops.data_processing.disk_usage_delta_mb"] == pytest.approx(30.0)
    assert (m["ops.data_processing.disk_read_mb"], m["ops.data_processing.disk_write_mb"],
            m["ops.data_processing.disk_mb_per_s"]) == (12.0, 8.0, 2.0)  # hooks.DiskIOHooks
    assert "ops.data_processing.disk_read_mb" not in missing and "ops.tokenizer.disk_read_mb" in missing
    assert m["ops.data_processing.network_receive_mb"] == 3.0 and m["ops.data_processing.network_transmit_mb"] == 1.0
    assert m["ops.data_processing.network_mb_per_s"] == pytest.approx(4.0 / 10.0)
    assert "ops.data_processing.gpu_utilization_pct" in missing and "no GPU" in missing[
        "ops.data_processing.gpu_utilization_pct"]
    # statuses: FAILED -> error, KILLED or superseded RUNNING -> crash
    assert m["ops.tokenizer.failed_runs"] == 1 and m["ops.tokenizer.error_rate"] == 0.5
    assert m["ops.tokenizer.duration_s"] == pytest.approx(4.0)
    assert m["ops.pretrain.crashed_runs"] == 1 and m["ops.pretrain.crash_rate"] == 0.5
    assert m["ops.sft.crashed_runs"] == 1 and m["ops.sft.failed_runs"] == 0
    # GPUs: mean over samples of every GPU, max memory
    assert m["ops.pretrain.gpu_utilization_pct"] == pytest.approx(75.0) and m["ops.pretrain.gpu_count"] == 2
    assert m["ops.pretrain.gpu_memory_used_mb_max"] == 2000.0
    # training: the metrics file first, the run's metrics otherwise
    assert m["ops.pretrain.time_per_epoch_s"] == 12.0 and m["ops.pretrain.restart_count"] == 2
    assert m["ops.pretrain.peak_memory_mb"] == 900.0
    assert m["ops.sft.restart_count"] == 1 and m["ops.sft.tokens_per_s"] == 500.0
    assert "ops.sft.time_per_epoch_s" in missing
    # the all-reduce bus bandwidth (training/bandwidth.py): the metrics file's network.*, else the run's
    assert m["ops.pretrain.allreduce_busbw_gbps"] == 7.5 and m["ops.sft.allreduce_busbw_gbps"] == 2.5
    assert "ops.sft.system" in missing  # the finished sft run has no system metrics
    # chain totals (the excluded current run counts nowhere)
    assert m["ops.chain.stages"] == len(STAGES) == 5  # the totals cover the stages before evaluation (align too)
    assert m["ops.chain.runs"] == 7 and m["ops.chain.failed_runs"] == 1 and m["ops.chain.crashed_runs"] == 2
    assert m["ops.chain.crash_rate"] == pytest.approx(2 / 7) and m["ops.chain.restart_count"] == 3
    assert m["ops.chain.duration_s"] == pytest.approx(10 + 4 + 100 + 20)
    assert all(isinstance(v, float) for v in m.values())


def test_default_run_counts_for_every_stage_unless_excluded(store):
    uri, current = store
    m = gather_operations({}, tracking_uri=uri, experiment=EXPERIMENT, exclude_active=False, stages=STAGES)["metrics"]
    assert m["ops.data_processing.runs"] == 2  # the still-open __default__ run is the newest: not a crash
    assert m["ops.data_processing.crashed_runs"] == 0


def test_missing_experiment_is_reported_not_raised(store):
    uri, _ = store
    ops = gather_operations({}, tracking_uri=uri, experiment="nowhere", exclude_active=False, stages=STAGES)
    assert ops["metrics"]["ops.chain.runs"] == 0
    assert "ops.chain.restart_count" not in ops["metrics"]  # none reported: absent, not 0
    for stage in ("data_processing", "tokenizer", "pretrain", "sft"):
        assert "nowhere" in ops["not_measured"][f"ops.{stage}"]
    assert "ops.pretrain.restart_count" in ops["not_measured"]


def test_a_run_with_only_the_first_cpu_sample_has_no_cpu_figure(mlflow_tracking_uri):
    """A stage shorter than two sampling intervals logs only psutil's first, meaningless 0.0: not 0% CPU."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_tracking_uri)
    exp_id = client.create_experiment("lmforge-operations-short-stage")
    _run(client, exp_id, "data_processing", 0, duration_s=6,
         system={"cpu_utilization_percentage": [0.0], "system_memory_usage_megabytes": [1000.0]})
    ops = gather_operations({}, tracking_uri=mlflow_tracking_uri, experiment="lmforge-operations-short-stage",
                            exclude_active=False, stages=STAGES)
    assert "ops.data_processing.cpu_utilization_pct" not in ops["metrics"]
    assert "less than two sampling intervals" in ops["not_measured"]["ops.data_processing.cpu_utilization_pct"]
    assert ops["metrics"]["ops.data_processing.memory_used_mb_max"] == 1000.0
    assert ops["metrics"]["ops.chain.stages"] == 5 and ops["metrics"]["ops.chain.runs"] == 1


def test_align_is_a_training_stage_and_when_switched_off_says_so_once(store):
    uri, _ = store
    on = gather_operations({"align": {"enabled": True, "tokens_per_s": 300.0, "restart_count": 0, "peak_rss_mb": 700.0}},
                           tracking_uri=uri, experiment=EXPERIMENT, exclude_active=False, stages=("sft", "align"))
    assert on["metrics"]["ops.align.tokens_per_s"] == 300.0 and on["metrics"]["ops.align.peak_memory_mb"] == 700.0
    assert on["metrics"]["ops.chain.restart_count"] == 1.0  # sft's 1 + align's 0: align counts as training
    off = gather_operations({"align": {"enabled": False, "method": "dpo"}}, tracking_uri=uri, experiment=EXPERIMENT,
                            exclude_active=False, stages=("align",))
    training = [f"ops.align.{key}" for key in ("tokens_per_s", "time_per_epoch_s", "restart_count", "peak_memory_mb")]
    assert not any(k in off["metrics"] for k in training)  # nothing trained
    assert [k for k in training if k in off["not_measured"]] == ["ops.align.tokens_per_s"]  # said once
    assert "align.enabled: false" in off["not_measured"]["ops.align.tokens_per_s"]
    one = gather_operations({"align": {"enabled": True, "network": {"allreduce_not_measured": "one process: no link"}}},
                            tracking_uri=uri, experiment=EXPERIMENT, exclude_active=False, stages=("align",))
    assert one["not_measured"]["ops.align.allreduce_busbw_gbps"] == "align: one process: no link"
