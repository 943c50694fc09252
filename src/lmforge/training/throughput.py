"""Throughput, model FLOPs utilisation (MFU) and memory of a training step.

FLOPs per trained token (PaLM, appendix B; nanoGPT's ``estimate_mfu``):

    flops_per_token = 6 * N  +  12 * L * T * d_head * n_heads

- ``N``: parameters that take part in a matrix multiply = all parameters minus the input embedding
  when it is untied (a lookup costs no FLOPs; a tied embedding is the output head, so it counts).
  6 = 2 (multiply-add) x 3 (forward + backward computes two products per weight).
- ``12 * L * T * d_head * n_heads``: attention scores ``Q K^T`` and ``softmax(.) V`` over a sequence
  of width ``T`` in ``L`` layers, forward + backward, without discounting the causal mask.

MFU = tokens/s x flops_per_token / (peak FLOP/s x devices). Activation recomputation is *not* counted
as useful work (that would be HFU). The peak:
- GPU: the dense bf16/fp16 (or TF32 for fp32) tensor-core peak of the device, from ``GPU_PEAK_FLOPS``
  by device name; the metric is ``mfu``. Unknown devices report no MFU rather than a guess.
- CPU: there is no datasheet figure worth using, so each process measures a fp32 GEMM once at start
  (``measure_cpu_gemm_peak``, all ranks at the same time so they contend for the cores as training
  does); the metric is labelled ``mfu_cpu_measured_peak``.

In MLflow the per-step values are ``<stage>.step.tokens_per_s`` ... (``step_metrics_for_mlflow``): the
stage's summary (``<stage>.tokens_per_s``, the whole run's average) keeps the short name, so MLflow and
the metrics file show the same number.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from lmforge.tracking import step_metric_name

# Dense (no sparsity) peak FLOP/s per device by precision; matched by substring of the device name,
# first match wins (so "H100 PCIe" precedes "H100").
GPU_PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}),
    ("H100 PCIe", {"bf16": 756.0e12, "fp16": 756.0e12, "fp32": 378.0e12}),
    ("H100 NVL", {"bf16": 835.0e12, "fp16": 835.0e12, "fp32": 417.5e12}),
    ("H100", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}),
    ("GH200", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}),
    ("A100", {"bf16": 312.0e12, "fp16": 312.0e12, "fp32": 156.0e12}),
    ("L40S", {"bf16": 362.0e12, "fp16": 362.0e12, "fp32": 183.0e12}),
    ("L4", {"bf16": 121.0e12, "fp16": 121.0e12, "fp32": 60.0e12}),
    ("A10", {"bf16": 125.0e12, "fp16": 125.0e12, "fp32": 62.5e12}),
    ("RTX 4090", {"bf16": 165.2e12, "fp16": 165.2e12, "fp32": 82.6e12}),
]


def flops_per_token(model: Any, seq_len: int) -> float:
    """``6 N + 12 L T d_head n_heads`` for a transformers causal LM (see the module docstring)."""
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is None or head.weight is not emb:
        n_params -= emb.numel()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 6.0 * n_params + 12.0 * cfg.num_hidden_layers * seq_len * head_dim * cfg.num_attention_heads


def gpu_peak_flops(device_name: str, precision: str) -> float | None:
    """Datasheet peak of ``device_name`` at ``precision``, None when the device is not in the table."""
    for key, peaks in GPU_PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(precision)
    return None


def measure_cpu_gemm_peak(size: int = 512, seconds: float = 0.5) -> float:
    """FLOP/s of a fp32 ``size x size`` matmul on this process's threads (best of several timings)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):  # warm up the kernels and caches
        torch.matmul(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        best = max(best, 4 * 2.0 * size**3 / (time.perf_counter() - t0))
    return best


def peak_memory_mb() -> tuple[str, float]:
    """(metric name, MB): ``gpu_max_allocated_mb`` on a GPU, else this process's ``peak_rss_mb``."""
    import torch

    if torch.cuda.is_available():
        return "gpu_max_allocated_mb", torch.cuda.max_memory_allocated() / 2**20
    return "peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Throughput:
    """Per-device peak and the MFU metric's name, decided once per process at the start of a run."""

    def __init__(self, precision: str, *, world_size: int, cpu_peak: float | None = None):
        import torch

        self.world_size = world_size
        if torch.cuda.is_available():
            self.device = torch.cuda.get_device_name()
            self.peak = gpu_peak_flops(self.device, precision)
            self.mfu_name = "mfu"
        else:
            self.device = "cpu"
            self.peak = cpu_peak if cpu_peak is not None else measure_cpu_gemm_peak()
            self.mfu_name = "mfu_cpu_measured_peak"

    def step_metrics(self, tokens: int, flops: float, seconds: float) -> dict[str, float]:
        """tokens/s (all devices and per device), MFU and step time of one optimizer step."""
        out = {"tokens_per_s": tokens / seconds, "tokens_per_s_per_device": tokens / seconds / self.world_size,
               "step_time_s": seconds}
        if self.peak:
            out[self.mfu_name] = flops / seconds / (self.peak * self.world_size)
        return out


MODEL_STEP_METRICS = ("rewards_chosen", "rewards_rejected", "margin", "accuracy", "logratio_chosen",
                      "logratio_rejected")
"""A model's own per-step metrics (``out.metrics`` of its forward: the align stage's ``PreferenceModel``),
averaged over micro-batches and ranks, logged and kept in the loss curve beside loss and lr."""

STEP_CURVES = ("loss", "lr", "grad_norm", *MODEL_STEP_METRICS)
"""Per-step metrics logged under their own short names (``pretrain.loss``): no summary key is one of them."""


def step_metrics_for_mlflow(record: dict[str, float], prefix: str) -> dict[str, float]:
    """One step's record as MLflow metrics: ``<prefix>.loss`` ..., the rest under ``<prefix>.step.``.

    Throughput, MFU and memory are also summary keys of the stage (``summarize``), logged at the end
    under ``<prefix>.<key>``; their per-step values go under ``<prefix>.step.<key>`` so MLflow shows
    the summary (what the metrics file holds) as the run's value, and still draws the per-step curve.
    NaN values (no grad norm yet) are left out.
    """
    return {step_metric_name(prefix, k, STEP_CURVES): v for k, v in record.items() if k != "step" and v == v}


class GpuUtilization:
    """This process's GPU utilisation and memory from NVML (``nvidia-ml-py``), or nothing where absent.

    ``sample()`` gives ``{}`` when pynvml is not installed, NVML cannot start (no driver: every CPU
    machine) or the process has no GPU, so CPU runs log no GPU metrics and never fail on them. The
    Kedro process's MLflow system-metrics monitor samples every GPU of the node with the same library.
    """

    def __init__(self, device_index: int | None = None):
        self.handle: Any = None
        self.reason = ""
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            return
        self._nvml = pynvml
        if device_index is None:
            import torch

            if not torch.cuda.is_available():
                self.reason = "no CUDA device in this process"
                return
            device_index = torch.cuda.current_device()
        try:
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        except pynvml.NVMLError as err:
            self.reason = f"NVML unavailable ({err})"

    @property
    def available(self) -> bool:
        return self.handle is not None

    def sample(self) -> dict[str, float]:
        """``gpu_utilization_pct`` (kernel busy time since the last sample) and ``gpu_memory_used_mb``."""
        if self.handle is None:
            return {}
        try:
            util = self._nvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self.handle)
        except self._nvml.NVMLError:
            return {}
        return {"gpu_utilization_pct": float(util.gpu), "gpu_memory_used_mb": memory.used / 2**20}
