"""bench/gpu_check.py (`make gpu-check`) on a CPU: every step runs through the product's paths and the JSON holds
sane figures, so the GPU check cannot rot while no GPU runs it (~40 s on a quiet 2-core machine: two launches)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_cpu_run_of_the_gpu_check_writes_every_figure(tmp_path):
    gpu_check = load_gpu_check()
    out = tmp_path / "gpu_check.json"

    gpu_check.main(["--device", "cpu", "--out", str(out)])

    doc = json.loads(out.read_text())
    plan = gpu_check.PLANS["cpu"]
    assert doc["failed_steps"] == []
    assert doc["device"] == "cpu" and doc["cpu_run"] is True and doc["mfu_goal_met"] is None
    assert doc["install"]["torch"] and doc["install"]["cuda_available"] is False
    assert doc["matmul_peak"]["measured_flops"] > 1e8 and doc["matmul_peak"]["datasheet_flops"] is None
    pre = doc["pretrain"]
    assert (pre["preset"], pre["world_size"], pre["steps"]) == ("tiny", 2, plan.pretrain_steps)
    assert pre["tokens"] == plan.pretrain_steps * plan.pretrain_micro_batch * 2 * plan.seq_len
    assert pre["tokens_per_s"] > 0 and 0 < pre["mfu_cpu_measured_peak"] <= 1
    assert math.isfinite(pre["mfu_measured_peak"]) and pre["mfu_measured_peak"] > 0
    assert math.isfinite(pre["final_loss"]) and pre["model_params"] > 1e6
    # the pretraining job's own all-reduce probe on its 2 gloo ranks (training/bandwidth.py), in Gbps
    net = doc["bus_bandwidth"]
    assert net["allreduce_ranks"] == 2 and net["allreduce_busbw_gbps"] > 0
    assert set(net["allreduce_by_size"]) == {f"{s:g}mib" for s in plan.probe_sizes_mib}
    sft = doc["sft"]
    assert (sft["preset"], sft["world_size"], sft["steps"]) == ("tiny", 1, plan.sft_steps)
    assert sft["tokens_per_s"] > 0 and sft["base_params"] == pre["model_params"]
    gen = doc["generation"]
    assert gen["engine"] == "ours" and gen["new_tokens"] == plan.gen_prompts * plan.gen_new_tokens
    assert gen["tokens_per_s"] > 0
    assert doc["within_budget"] is True and 0 < doc["duration_s"] <= doc["budget_s"]
    # the work folder (shards, checkpoints) is gone
    assert not [p for p in Path(tempfile.gettempdir()).glob("lmforge-gpu-check-*") if f".{os.getpid()}." in p.name]


def test_the_gpu_plan_pretrains_the_preset_nearest_1b():
    from lmforge.model.build import count_parameters
    from lmforge.model.presets import PRESETS

    plan = load_gpu_check().PLANS["cuda"]
    totals = {name: count_parameters(preset)["total_params"] for name, preset in PRESETS.items()}

    assert min(totals, key=lambda name: abs(totals[name] - 1e9)) == plan.pretrain_preset
    assert plan.sft_preset == "gemma-2b" and plan.precision == "bf16" and plan.nproc_per_node == 0
