"""All-reduce bus bandwidth of a training job's own process group, measured once at training start.

The seed's "network bandwidth for inter-node communication (Gbps)" is the speed of the links the
gradients cross, which the interface counters of the Kedro process (``ops.<stage>.network_mb_per_s``,
``evaluation/operations.py``) do not isolate: they count every interface, loopback included, over
the whole stage. This probe times ``torch.distributed.all_reduce`` on the job's real process group
(gloo on CPU, NCCL on GPU: whatever ``deepspeed.init_distributed`` chose) and reports nccl-tests'
figures (NVIDIA/nccl-tests, doc/PERFORMANCE.md, and ``AllReduceGetBw`` in src/all_reduce.cu):

    algbw = S / t                     S: bytes of the reduced array, t: time of one all-reduce
    busbw = algbw * 2 (n - 1) / n     n: ranks; an all-reduce moves each element 2 (n - 1) times over n links

busbw is comparable with the hardware's link bandwidth whatever the number of ranks. nccl-tests prints
GB/s (1e9 bytes/s); the seed asks for Gbps, so the figures here are bits: ``* 8 / 1e9``. As in nccl-tests,
each size runs ``warmup_iters`` untimed all-reduces, then ``iters`` timed ones between a barrier and a
device sync; the time of a size is the slowest rank's (nccl-tests' ``-a 3``; its default averages the
ranks), since an all-reduce ends for the job when it ends on every rank. float32 elements, as nccl-tests'
default ``-d float``. The job's figure (``network.allreduce_busbw_gbps``) is that of the largest size,
the one closest to the link's peak; every size is kept under ``network.allreduce_by_size``.

One process has no link to measure: the figure is then absent and ``network.allreduce_not_measured``
says why (as it does when ``train.bandwidth_probe.enabled`` is false). Measured on the 2-core CI
machine, 2 gloo ranks over loopback, the defaults (1, 4 and 16 MiB, 2 + 5 iterations) take ~0.3 s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("lmforge.training")

BYTES_PER_ELEMENT = 4  # float32


@dataclass
class BandwidthProbeArgs:
    """The all-reduce bus-bandwidth probe run at training start (``train.bandwidth_probe``; see ``bandwidth.py``)."""

    # Run the probe (off: the job reports ``network.allreduce_not_measured`` instead of a figure).
    enabled: bool = True
    # Sizes of the reduced float32 array in MiB; the job's figure is the largest size's. The CPU defaults cost
    # ~0.3 s on 2 gloo ranks; on GPUs NCCL needs hundreds of MiB to reach its peak (bench/gpu_check.py: 256, 1024).
    sizes_mib: list[float] = field(default_factory=lambda: [1.0, 4.0, 16.0])
    # Untimed all-reduces per size before the timed ones (connection setup, NCCL's first-call costs).
    warmup_iters: int = 2
    # Timed all-reduces per size; their mean is the time of one.
    iters: int = 5

    def __post_init__(self) -> None:
        self.sizes_mib = [float(s) for s in self.sizes_mib]
        if not self.sizes_mib or min(self.sizes_mib) <= 0 or self.iters < 1 or self.warmup_iters < 0:
            raise ValueError(f"train.bandwidth_probe: sizes_mib must be positive (got {self.sizes_mib}), iters >= 1 "
                             f"(got {self.iters}) and warmup_iters >= 0 (got {self.warmup_iters})")

    def measure(self, *, world_size: int, prefix: str, device: Any = None) -> dict[str, Any]:
        """``probe_bus_bandwidth`` with these settings (every rank calls it: the training loop's one line)."""
        return probe_bus_bandwidth(self, world_size=world_size, prefix=prefix, device=device)


@dataclass(frozen=True)
class AllReduceTiming:
    """One size of the probe: bytes reduced, and the mean time of one all-reduce on every rank."""

    nbytes: int
    seconds_per_rank: tuple[float, ...]

    @property
    def seconds(self) -> float:
        """The slowest rank's time: the all-reduce is done for the job when it is done everywhere."""
        return max(self.seconds_per_rank)


def bus_bandwidth_gbps(nbytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in Gbps of an all-reduce of ``nbytes`` taking ``seconds`` on ``world_size`` ranks (nccl-tests)."""
    algbw = nbytes * 8 / seconds / 1e9
    return algbw, algbw * 2 * (world_size - 1) / world_size


def time_allreduce(args: BandwidthProbeArgs, device: Any = None) -> list[AllReduceTiming]:
    """Time ``all_reduce`` of each size on the default process group; every rank calls it (a collective)."""
    import torch
    import torch.distributed as dist

    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    world = dist.get_world_size()
    timings = []
    for size in args.sizes_mib:
        n = max(1, int(size * 2**20) // BYTES_PER_ELEMENT)
        buf = torch.zeros(n, dtype=torch.float32, device=device)  # zeros: the sums stay finite however many calls
        for _ in range(args.warmup_iters):
            dist.all_reduce(buf)
        sync()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(buf)
        sync()
        own = torch.tensor([(time.perf_counter() - t0) / args.iters], dtype=torch.float64, device=device)
        every = [torch.zeros_like(own) for _ in range(world)]
        dist.all_gather(every, own)
        timings.append(AllReduceTiming(n * BYTES_PER_ELEMENT, tuple(float(t) for t in every)))
        del buf
    return timings


def bandwidth_metrics(timings: list[AllReduceTiming], world_size: int) -> dict[str, Any]:
    """``{"network": {...}}`` for the job's result: the largest size's busbw/algbw in Gbps, and every size's."""
    by_size = {}
    for timing in timings:
        algbw, busbw = bus_bandwidth_gbps(timing.nbytes, timing.seconds, world_size)
        by_size[f"{timing.nbytes / 2**20:g}mib"] = {"bytes": timing.nbytes, "time_s": timing.seconds,
                                                    "algbw_gbps": algbw, "busbw_gbps": busbw}
    top = max(timings, key=lambda t: t.nbytes)
    head = by_size[f"{top.nbytes / 2**20:g}mib"]
    return {"network": {"allreduce_busbw_gbps": head["busbw_gbps"], "allreduce_algbw_gbps": head["algbw_gbps"],
                        "allreduce_bytes": head["bytes"], "allreduce_time_s": head["time_s"],
                        "allreduce_ranks": world_size, "allreduce_by_size": by_size}}


def probe_bus_bandwidth(args: BandwidthProbeArgs, *, world_size: int, prefix: str, device: Any = None) -> dict[str, Any]:
    """Run the probe on the job's process group (every rank) and return its metrics (see the module docstring)."""
    import torch.distributed as dist

    if not args.enabled:
        return {"network": {"allreduce_not_measured": "train.bandwidth_probe.enabled is false"}}
    if world_size < 2:
        return {"network": {"allreduce_not_measured": "one process: no link between ranks to measure"}}
    started = time.perf_counter()
    metrics = bandwidth_metrics(time_allreduce(args, device), world_size)
    net = metrics["network"]
    logger.info("%s: all-reduce bus bandwidth %.3g Gbps (%s, %d ranks, %.3g MiB in %.3g ms; probe %.2f s)",
                prefix, net["allreduce_busbw_gbps"], dist.get_backend(), world_size, net["allreduce_bytes"] / 2**20,
                net["allreduce_time_s"] * 1e3, time.perf_counter() - started)
    return metrics
