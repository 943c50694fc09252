"""One GPU check: install, ~1B bf16 pretraining (tokens/s, MFU), SFT of gemma-2b, bus bandwidth, generation speed.

    make gpu-check                      # = .venv/bin/python bench/gpu_check.py
    .venv/bin/python bench/gpu_check.py [--device auto|cuda|cpu] [--out PATH]

Everything runs through the product's own paths, so the figures are the product's: the training jobs are
``JobSpec``s started by ``lmforge.training.launch.launch_job`` (torchrun, one process per GPU, the
``lmforge.training.pretrain`` / ``sft`` workers, DeepSpeed with the project's ``conf/base/deepspeed``
templates and the bf16 section ``deepspeed_config.build_deepspeed_config`` writes for ``precision: bf16``);
the throughput, MFU and bus bandwidth are the ones those jobs report in their ``result.json``
(``training/throughput.py``, ``training/bandwidth.py``); generation is ``lmforge.generation``'s batched
KV-cache loop as ``evaluation/speed.py`` times it for the evaluation stage.

Steps, in order, each timed (``wall_s``):
1. ``install``: Python, torch and its CUDA build, NCCL and cuDNN versions, DeepSpeed, transformers, every GPU's
   name, memory and bf16 support.
2. ``matmul_peak``: the measured peak of this device (CUDA: an 8192^3 bf16 matmul, best of 3 timings of 20 after
   a warm-up; CPU: ``throughput.measure_cpu_gemm_peak``, fp32) and the datasheet's dense bf16 peak by device name
   (``throughput.GPU_PEAK_FLOPS``: H100 SXM and H200 989.4 TFLOPS).
3. ``pretrain``: the ``japanese-large`` preset (0.83B parameters with its 32000-token vocabulary: the preset
   nearest 1B, ``python -m lmforge.model``) from scratch in bf16, ZeRO-2, on random token blocks of 2048
   (micro-batch 8 per GPU, 60 steps). ``tokens_per_s`` and ``mfu`` (against the datasheet peak) are the job's own
   averages over every step, the first included (its CUDA warm-up: a few % low over 60 steps);
   ``mfu_measured_peak`` is the same work against step 2's measured peak. Goal (issue 19): MFU >= 0.45.
4. ``bus_bandwidth``: the all-reduce bus bandwidth the pretraining job measured at its start on its NCCL group
   (64, 256, 1024 MiB; nccl-tests' busbw, Gbps). One GPU has no link: it then says so instead of a figure.
5. ``sft``: the ``gemma-2b`` preset (2.5B parameters; random weights, saved as a Hugging Face checkpoint in bf16)
   fine-tuned by the SFT worker in bf16, ZeRO-2, 10 steps of 4 examples of 1024 tokens per GPU (half of each
   example's tokens labelled, as a prompt + answer).
6. ``generation``: the pretrained checkpoint in bf16 on one GPU, 32 prompts of 64 random tokens, 128 new tokens
   each (no early stop), batches of 16: generated tokens/s.

On a machine without a GPU (or ``--device cpu``) the same steps run on the ``tiny`` preset (fp32, 2 gloo
processes for pretraining, one for SFT, a few steps; SFT of ``tiny`` for ``gemma-2b``): tests/test_gpu_check.py
runs it so the script cannot rot. Its JSON says ``"cpu_run": true`` and goes to ``bench/results/gpu_check_cpu.json``
(the CPU figures of the CI machine); ``bench/results/gpu_check.json`` is only ever written by a GPU run.
Expected on one H200: ~4 minutes, most of it starting processes and writing the 2.5B checkpoints; the budget
is 8 minutes (``budget_s``; the JSON says whether it held). Work files go to a temporary folder, removed at
the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
logger = logging.getLogger("bench.gpu_check")

BUDGET_S = 480
MFU_GOAL = 0.45


@dataclass(frozen=True)
class Plan:
    """What each step runs on one kind of machine."""

    pretrain_preset: str
    pretrain_steps: int
    pretrain_micro_batch: int
    seq_len: int
    sft_preset: str
    sft_steps: int
    sft_micro_batch: int
    sft_seq_len: int
    precision: str
    nproc_per_node: int  # 0: one process per GPU
    sft_nproc_per_node: int
    probe_sizes_mib: list[float] = field(default_factory=list)
    probe_iters: int = 5
    gen_prompts: int = 32
    gen_prompt_len: int = 64
    gen_new_tokens: int = 128
    gen_batch: int = 16
    matmul_size: int = 8192


PLANS = {
    "cuda": Plan(pretrain_preset="japanese-large", pretrain_steps=60, pretrain_micro_batch=8, seq_len=2048,
                 sft_preset="gemma-2b", sft_steps=10, sft_micro_batch=4, sft_seq_len=1024, precision="bf16",
                 nproc_per_node=0, sft_nproc_per_node=0, probe_sizes_mib=[64.0, 256.0, 1024.0], probe_iters=10),
    "cpu": Plan(pretrain_preset="tiny", pretrain_steps=4, pretrain_micro_batch=2, seq_len=128,
                sft_preset="tiny", sft_steps=2, sft_micro_batch=2, sft_seq_len=128, precision="fp32",
                nproc_per_node=2, sft_nproc_per_node=1, probe_sizes_mib=[1.0, 4.0], probe_iters=3, gen_prompts=4, gen_prompt_len=16,
                gen_new_tokens=8, gen_batch=4, matmul_size=512),
}
"""The GPU check, and the same steps sized for a CPU (CI): 2 gloo processes for pretraining (the bus bandwidth needs
two), one for SFT (the 2-core machine starts one process faster than two)."""


def check_install(device: str) -> dict[str, Any]:
    """Versions of the stack and every visible GPU (name, memory, bf16)."""
    import deepspeed
    import torch
    import transformers

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "deepspeed": deepspeed.__version__,
                           "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
                           "cpus": os.cpu_count()}
    if device == "cuda":
        nccl = torch.cuda.nccl.version()  # (2, 21, 5); an int in old torch builds
        out["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        out["cudnn"] = torch.backends.cudnn.version()
        out["bf16_supported"] = torch.cuda.is_bf16_supported()
        out["gpus"] = [{"name": torch.cuda.get_device_name(i),
                        "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                       for i in range(torch.cuda.device_count())]
    return out


def measure_matmul_peak(device: str, size: int, precision: str) -> dict[str, Any]:
    """Measured FLOP/s of a square matmul on this device, and the datasheet peak (by device name) beside it."""
    import torch

    from lmforge.training.throughput import gpu_peak_flops, measure_cpu_gemm_peak

    if device != "cuda":
        measured = measure_cpu_gemm_peak(size)
        return {"device": "cpu", "dtype": "float32", "size": size, "measured_flops": measured,
                "datasheet_flops": None, "datasheet_note": "no datasheet peak for a CPU (measured only)"}
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):  # cuBLAS picks its kernel, clocks ramp up
        torch.matmul(a, b)
    torch.cuda.synchronize()
    best, iters = 0.0, 20
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        best = max(best, iters * 2.0 * size**3 / (start.elapsed_time(end) / 1e3))
    del a, b
    torch.cuda.empty_cache()  # the training jobs get the whole GPU
    name = torch.cuda.get_device_name()
    datasheet = gpu_peak_flops(name, precision)
    return {"device": name, "dtype": "bfloat16", "size": size, "measured_flops": best, "datasheet_flops": datasheet,
            "measured_vs_datasheet": best / datasheet if datasheet else None,
            **({} if datasheet else {"datasheet_note": f"{name} is not in throughput.GPU_PEAK_FLOPS"})}


def write_token_shards(out_dir: Path, *, vocab_size: int, seq_len: int, n_blocks: int) -> str:
    """Random token blocks in the tokenizer stage's shard format (``tokenizer/shards.py``): throughput, not quality."""
    import numpy as np

    from lmforge.tokenizer.dtypes import choose_token_dtype
    from lmforge.tokenizer.shards import INDEX_FILE, ShardWriter

    out_dir.mkdir(parents=True)
    dtype = choose_token_dtype(vocab_size)
    writer = ShardWriter(out_dir, "train", seq_len=seq_len, blocks_per_shard=4096, dtype=dtype)
    writer.write(np.random.default_rng(0).integers(3, vocab_size, n_blocks * seq_len).astype(dtype))
    index = {"documents": {"train": n_blocks}, "seq_len": seq_len, "dtype": dtype, "tokenizer_sha256": None,
             "splits": {"train": writer.close()}}
    (out_dir / INDEX_FILE).write_text(json.dumps(index) + "\n")
    return str(out_dir)


def write_sft_examples(path: Path, *, vocab_size: int, seq_len: int, n: int) -> str:
    """SFT examples as the sft stage writes them ({id, input_ids, labels}); the first half (the prompt) unlabelled."""
    import numpy as np

    rng = np.random.default_rng(1)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            ids = rng.integers(3, vocab_size, seq_len).tolist()
            labels = [-100] * (seq_len // 2) + ids[seq_len // 2:]
            fh.write(json.dumps({"id": f"ex{i}", "input_ids": ids, "labels": labels}) + "\n")
    return str(path)


def build_hf_checkpoint(preset_name: str, out_dir: Path, device: str) -> int:
    """A freshly initialised preset saved as a Hugging Face checkpoint (bf16 on a GPU); returns its parameter count."""
    import torch

    from lmforge.model.build import build_model
    from lmforge.model.presets import Preset

    with torch.device("cuda" if device == "cuda" else "cpu"):  # a 2.5B init on the GPU: seconds, not minutes
        model = build_model(Preset.from_name(preset_name), bos_id=1, eos_id=2, pad_id=0)
    n_params = sum(p.numel() for p in model.parameters())
    if device == "cuda":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir, safe_serialization=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return n_params


def run_job(kind: str, plan: Plan, work: Path, *, nproc: int, steps: int, micro_batch: int, model: Any,
            init_from: str | None, data: Any) -> dict[str, Any]:
    """One training job through ``launch_job``, as the pretrain/sft stages start theirs; its result dict."""
    from lmforge.training.bandwidth import BandwidthProbeArgs
    from lmforge.training.config import DeepSpeedArgs, JobSpec, LaunchArgs, TrainArgs
    from lmforge.training.deepspeed_config import build_deepspeed_config
    from lmforge.training.launch import launch_job

    templates = {p.stem: json.loads(p.read_text()) for p in (ROOT / "conf/base/deepspeed").glob("*.json")}
    train = TrainArgs(max_steps=steps, micro_batch_size=micro_batch, lr=3e-4, warmup_steps=min(5, steps),
                      precision=plan.precision, checkpoint_every=0, log_every=1,
                      bandwidth_probe=BandwidthProbeArgs(enabled=kind == "pretrain", sizes_mib=plan.probe_sizes_mib,
                                                         iters=plan.probe_iters))
    ds = build_deepspeed_config(templates, train, DeepSpeedArgs(zero_stage=2))
    run_dir = work / f"{kind}_run"
    spec = JobSpec(kind=kind, model=model, init_from=init_from, data=data, train=train, deepspeed=ds,
                   output_dir=str(run_dir / "export"), run_dir=str(run_dir), metric_prefix=kind)
    return launch_job(spec, LaunchArgs(nproc_per_node=nproc, timeout_s=BUDGET_S))


def training_figures(result: dict[str, Any], peak: dict[str, Any]) -> dict[str, Any]:
    """The job's own throughput and MFU, plus its MFU against the measured matmul peak."""
    keep = ("steps", "world_size", "model_params", "tokens", "train_time_s", "tokens_per_s",
            "tokens_per_s_per_process", "mfu", "mfu_cpu_measured_peak", "initial_loss", "final_loss",
            "gpu_max_allocated_mb", "peak_rss_mb", "device", "zero_stage")
    out = {k: result[k] for k in keep if k in result}
    if peak.get("measured_flops"):
        out["mfu_measured_peak"] = result["flops"] / result["train_time_s"] / (peak["measured_flops"] * result["world_size"])
    return out


def measure_generation(checkpoint: str, plan: Plan, device: str) -> dict[str, Any]:
    """Generated tokens/s of ``lmforge.generation``'s batched loop (evaluation/speed.py's measurement)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.evaluation.speed import measure_speed_ids

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype, local_files_only=True)
    model = model.to("cuda" if device == "cuda" else "cpu").eval()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, vocab, (plan.gen_prompt_len,), generator=gen).tolist() for _ in range(plan.gen_prompts)]
    speed = measure_speed_ids(model, prompts, plan.gen_new_tokens, plan.gen_batch, stop_ids=[], pad_id=0,
                              min_new_tokens=plan.gen_new_tokens)
    speed.pop("completions")
    return {"model": checkpoint.rsplit("/", 2)[-2], "dtype": str(dtype).removeprefix("torch."), **speed}


def run_check(device: str, work: Path) -> dict[str, Any]:
    """Every step of the check on ``device`` ("cuda" or "cpu"); the JSON document."""
    from lmforge.model.presets import Preset
    from lmforge.training.config import JobData, JobModel, LaunchArgs
    from lmforge.training.launch import resolve_nproc

    plan = PLANS[device]
    started = time.perf_counter()
    report: dict[str, Any] = {"what": __doc__.splitlines()[0], "device": device, "cpu_run": device != "cuda",
                              "budget_s": BUDGET_S, "mfu_goal": MFU_GOAL, "plan": plan.__dict__}

    def step(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one step; a failure is recorded (``{"error": ...}``) and the steps that do not need it still run:
        a GPU hour is too dear to lose every figure to one out-of-memory."""
        t0 = time.perf_counter()
        logger.info("gpu check: %s ...", name)
        try:
            value = fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - recorded in the JSON, and main() fails the command at the end
            logger.exception("gpu check: %s failed", name)
            report[name] = {"error": f"{type(err).__name__}: {str(err)[:2000]}",
                            "wall_s": round(time.perf_counter() - t0, 2)}
            return None
        report[name] = {**value, "wall_s": round(time.perf_counter() - t0, 2)}
        logger.info("gpu check: %s done in %.1f s", name, time.perf_counter() - t0)
        return value

    step("install", check_install, device)
    peak = step("matmul_peak", measure_matmul_peak, device, plan.matmul_size, plan.precision) or {}
    world = resolve_nproc(LaunchArgs(nproc_per_node=plan.nproc_per_node))

    def pretrain() -> dict[str, Any]:
        preset = Preset.from_name(plan.pretrain_preset)
        shards = write_token_shards(work / "shards", vocab_size=preset.vocab_size, seq_len=plan.seq_len,
                                    n_blocks=plan.pretrain_steps * plan.pretrain_micro_batch * world)
        model = JobModel(attn_implementation="sdpa", preset=plan.pretrain_preset, vocab_size=preset.vocab_size,
                         bos_id=1, eos_id=2, pad_id=0)
        result = run_job("pretrain", plan, work, nproc=plan.nproc_per_node, steps=plan.pretrain_steps,
                         micro_batch=plan.pretrain_micro_batch, model=model, init_from=None,
                         data=JobData(token_shards=shards))
        report["bus_bandwidth"] = result.get("network", {})
        return {"preset": plan.pretrain_preset, "precision": plan.precision, "seq_len": plan.seq_len,
                "micro_batch_per_process": plan.pretrain_micro_batch, **training_figures(result, peak)}

    figures = step("pretrain", pretrain) or {}
    mfu = figures.get("mfu")
    report["mfu_goal_met"] = None if mfu is None or device != "cuda" else mfu >= MFU_GOAL

    def sft() -> dict[str, Any]:
        preset = Preset.from_name(plan.sft_preset)
        base = work / "sft_base"
        n_params = build_hf_checkpoint(plan.sft_preset, base, device)
        sft_world = resolve_nproc(LaunchArgs(nproc_per_node=plan.sft_nproc_per_node))
        examples = write_sft_examples(work / "sft_examples.jsonl", vocab_size=preset.vocab_size,
                                      seq_len=plan.sft_seq_len, n=plan.sft_steps * plan.sft_micro_batch * sft_world)
        result = run_job("sft", plan, work, nproc=plan.sft_nproc_per_node, steps=plan.sft_steps,
                         micro_batch=plan.sft_micro_batch, model=JobModel(attn_implementation="sdpa"), init_from=str(base),
                         data=JobData(examples=examples, pad_id=0, packing=False, packing_length=plan.sft_seq_len))
        shutil.rmtree(base, ignore_errors=True)  # 5 GB on a GPU run: the disk for the next step
        return {"preset": plan.sft_preset, "precision": plan.precision, "seq_len": plan.sft_seq_len,
                "micro_batch_per_process": plan.sft_micro_batch, "base_params": n_params,
                **training_figures(result, peak)}

    step("sft", sft)
    if figures:  # generation runs the pretrained checkpoint
        step("generation", measure_generation, str(work / "pretrain_run" / "export"), plan, device)
    report["failed_steps"] = [name for name, value in report.items() if isinstance(value, dict) and "error" in value]
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["within_budget"] = report["duration_s"] <= BUDGET_S
    report["load_average_after"] = os.getloadavg()  # the CPU run shares its machine: how busy it was
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: cuda when a GPU is visible, else the CPU run")
    parser.add_argument("--out", help="default: bench/results/gpu_check.json (GPU) or gpu_check_cpu.json (CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from lmforge.locks import owned_tempdir

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from lmforge.errors import UserError

        raise UserError("--device cuda: torch sees no GPU (torch.cuda.is_available() is False, torch "
                        f"{torch.__version__}, CUDA build {torch.version.cuda})",
                        "install a CUDA build of torch, or run without --device for the CPU run")
    out = Path(args.out or ROOT / "bench/results" / ("gpu_check.json" if device == "cuda" else "gpu_check_cpu.json"))
    work = owned_tempdir("lmforge-gpu-check-")
    try:
        report = run_check(device, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if report["failed_steps"]:
        from lmforge.errors import UserError

        raise UserError(f"gpu check: step(s) {', '.join(report['failed_steps'])} failed (the error of each is in {out})",
                        "fix the cause and run `make gpu-check` again; the steps that ran have their figures there")
    pre, net = report["pretrain"], report.get("bus_bandwidth", {})
    mfu = pre.get("mfu", pre.get("mfu_cpu_measured_peak"))
    logger.info("gpu check (%s) in %.0f s: pretrain %s %.0f tokens/s, MFU %s (measured peak %.3f); bus bandwidth %s; "
                "sft %.0f tokens/s; generation %.0f tokens/s -> %s", device, report["duration_s"], pre["preset"],
                pre["tokens_per_s"], "n/a" if mfu is None else f"{mfu:.3f}", pre["mfu_measured_peak"],
                f"{net['allreduce_busbw_gbps']:.3g} Gbps" if "allreduce_busbw_gbps" in net else
                net.get("allreduce_not_measured"), report["sft"]["tokens_per_s"],
                report["generation"]["tokens_per_s"], out)


if __name__ == "__main__":
    from lmforge.errors import run_cli

    run_cli(main, "bench/gpu_check.py")
