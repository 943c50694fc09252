"""FLOPs per token, device peaks and the per-step throughput metrics."""

from __future__ import annotations

import pytest

from lmforge.training.throughput import Throughput, flops_per_token, gpu_peak_flops, measure_cpu_gemm_peak


def test_flops_per_token_is_6n_plus_attention_on_the_debug_preset():
    from lmforge.model.build import build_model, count_parameters
    from lmforge.model.presets import PRESETS

    preset = PRESETS["debug"]
    model = build_model(preset, vocab_size=400)
    counts = count_parameters(preset, vocab_size=400)
    matmul_params = counts["total_params"] - 400 * preset.d_model  # untied: the input lookup costs nothing
    attention = 12 * preset.n_layers * 64 * preset.head_dim * preset.n_heads

    assert flops_per_token(model, 64) == 6 * matmul_params + attention


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),
    ("NVIDIA H100 PCIe", "bf16", 756.0e12),
    ("NVIDIA H200", "bf16", 989.4e12),
    ("NVIDIA A100-SXM4-80GB", "fp32", 156.0e12),
    ("Some Future GPU", "bf16", None),
])
def test_gpu_peak_by_device_name(name, precision, peak):
    assert gpu_peak_flops(name, precision) == peak


def test_cpu_step_metrics_use_the_measured_peak_and_say_so():
    peak = measure_cpu_gemm_peak(size=128, seconds=0.05)
    assert peak > 1e7  # plausibility only: a 0.05 s sample on a saturated 2-core box failed a 1e8 bound

    meter = Throughput("fp32", world_size=2, cpu_peak=1e10)
    metrics = meter.step_metrics(tokens=1000, flops=1e10, seconds=2.0)

    assert meter.mfu_name == "mfu_cpu_measured_peak"
    assert metrics["tokens_per_s"] == 500 and metrics["tokens_per_s_per_device"] == 250
    assert metrics["mfu_cpu_measured_peak"] == pytest.approx(0.25)


def _fake_pynvml(*, init_error: bool):
    import types

    class NVMLError(Exception):
        pass

    def init():
        if init_error:
            raise NVMLError("NVML Shared Library Not Found")

    return types.SimpleNamespace(
        NVMLError=NVMLError, nvmlInit=init, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30))


def test_gpu_utilization_is_silent_without_nvml_and_says_why(monkeypatch):
    import sys

    from lmforge.training.throughput import GpuUtilization

    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import raises ImportError
    missing = GpuUtilization(device_index=0)
    assert not missing.available and missing.sample() == {} and "nvidia-ml-py" in missing.reason

    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error=True))  # installed, no driver (CPU box)
    no_driver = GpuUtilization(device_index=0)
    assert not no_driver.available and no_driver.sample() == {} and "Not Found" in no_driver.reason


def test_gpu_utilization_reads_nvml_when_present(monkeypatch):
    import sys

    from lmforge.training.throughput import GpuUtilization

    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error=False))
    gpu = GpuUtilization(device_index=1)
    assert gpu.available and gpu.handle == "gpu1"
    assert gpu.sample() == {"gpu_utilization_pct": 87.0, "gpu_memory_used_mb": 3 * 1024.0}


def test_gpu_utilization_on_this_machine_never_raises():
    import torch

    from lmforge.training.throughput import GpuUtilization

    gpu = GpuUtilization()
    assert gpu.available == bool(gpu.sample())
    if not torch.cuda.is_available():
        assert not gpu.available and gpu.reason
