"""The all-reduce bus-bandwidth probe (training/bandwidth.py) against nccl-tests' definition (doc/PERFORMANCE.md):
algbw = S / t, busbw = algbw * 2 (n - 1) / n, t the slowest rank's time; on a real 2-rank gloo group (~5-10 s: two
spawned ranks import torch). The same arithmetic on a pretraining job's own ranks: test_pipeline_pretrain.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.training.bandwidth import (
    AllReduceTiming,
    BandwidthProbeArgs,
    bandwidth_metrics,
    bus_bandwidth_gbps,
    probe_bus_bandwidth,
)

SIZES_MIB = [0.5, 2.0]


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    """One rank of the 2-process gloo group: the probe's timings and its metrics, as JSON."""
    import torch.distributed as dist

    from lmforge.processes import guard_process

    guard_process()  # ends with the test process, however it ends
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        args = BandwidthProbeArgs(sizes_mib=SIZES_MIB, warmup_iters=1, iters=3)
        from lmforge.training.bandwidth import time_allreduce

        timings = time_allreduce(args)
        metrics = bandwidth_metrics(timings, dist.get_world_size())
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
            "timings": [[t.nbytes, list(t.seconds_per_rank)] for t in timings], "metrics": metrics}))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_the_probe_on_two_gloo_ranks_reports_nccl_tests_bus_bandwidth(tmp_path):
    import torch.multiprocessing as mp

    # spawn, not fork: a child forked from a process whose OpenMP pool already ran (any earlier test's matmul) can
    # hang in its first parallel op; spawn pays a torch import per rank instead (~5 s on 2 idle cores)
    mp.spawn(_rank, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["timings"] == ranks[1]["timings"]  # every rank saw every rank's time
    net = ranks[0]["metrics"]["network"]
    assert [nbytes for nbytes, _ in ranks[0]["timings"]] == [int(s * 2**20) for s in SIZES_MIB]
    for nbytes, per_rank in ranks[0]["timings"]:
        row = net["allreduce_by_size"][f"{nbytes / 2**20:g}mib"]
        assert len(per_rank) == 2 and min(per_rank) > 0
        assert row["time_s"] == max(per_rank)  # the slowest rank's time
        algbw = nbytes * 8 / 1e9 / max(per_rank)  # nccl-tests: S / t, here in Gbps
        assert row["algbw_gbps"] == pytest.approx(algbw)
        assert row["busbw_gbps"] == pytest.approx(algbw * 2 * (2 - 1) / 2)
    largest = net["allreduce_by_size"]["2mib"]
    assert net["allreduce_busbw_gbps"] == largest["busbw_gbps"] > 0
    assert net["allreduce_bytes"] == 2 * 2**20 and net["allreduce_ranks"] == 2


@pytest.mark.parametrize(("ranks", "factor"), [(2, 1.0), (3, 4 / 3), (4, 1.5), (8, 1.75)])
def test_bus_bandwidth_is_algorithm_bandwidth_times_2_n_minus_1_over_n(ranks, factor):
    """PERFORMANCE.md's AllReduce factor, written out per rank count (2 ranks alone cannot tell 1 from 2(n-1)/n)."""
    algbw, busbw = bus_bandwidth_gbps(10**9, 0.5, ranks)  # 1 GB in 0.5 s: 2 GB/s = 16 Gbps

    assert algbw == pytest.approx(16.0)
    assert busbw == pytest.approx(16.0 * factor)


def test_the_largest_size_is_the_jobs_figure_and_the_slowest_rank_its_time():
    timings = [AllReduceTiming(2**20, (0.001, 0.002)), AllReduceTiming(4 * 2**20, (0.004, 0.003, 0.002, 0.001))]

    net = bandwidth_metrics(timings, 4)["network"]

    assert net["allreduce_time_s"] == 0.004 and net["allreduce_bytes"] == 4 * 2**20
    assert net["allreduce_busbw_gbps"] == pytest.approx(4 * 2**20 * 8 / 1e9 / 0.004 * 1.5)
    assert set(net["allreduce_by_size"]) == {"1mib", "4mib"}


def test_one_process_or_the_probe_off_reports_why_not():
    assert "one process" in probe_bus_bandwidth(BandwidthProbeArgs(), world_size=1, prefix="pretrain")[
        "network"]["allreduce_not_measured"]
    off = probe_bus_bandwidth(BandwidthProbeArgs(enabled=False), world_size=2, prefix="pretrain")
    assert off == {"network": {"allreduce_not_measured": "train.bandwidth_probe.enabled is false"}}
    with pytest.raises(ValueError, match="train.bandwidth_probe"):
        BandwidthProbeArgs(sizes_mib=[0])
