"""Typed training configuration, shared by the Kedro nodes and the launched training processes.

A node turns ``params:pretrain`` / ``params:sft`` into a ``JobSpec``, writes it as JSON into the run
directory and launches ``python -m lmforge.training.<kind> --config <run_dir>/job.json`` on every
rank. Each field is documented where it is declared; ``from_dict`` rejects unknown keys so a typo in
YAML fails loudly instead of being ignored.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import build_dataclass


@dataclass
class TrainArgs:
    """Optimisation settings (one optimizer step = micro_batch_size x grad accumulation x ranks)."""

    # Optimizer steps to run.
    max_steps: int = 100
    # Sequences per rank per forward pass.
    micro_batch_size: int = 4
    # Micro-batches accumulated per optimizer step.
    gradient_accumulation_steps: int = 1
    # Peak learning rate (AdamW).
    lr: float = 1e-3
    # Final learning rate as a fraction of the peak (cosine decay).
    min_lr_ratio: float = 0.1
    # Linear warmup steps.
    warmup_steps: int = 10
    # AdamW decoupled weight decay.
    weight_decay: float = 0.1
    # AdamW betas.
    betas: tuple[float, float] = (0.9, 0.95)
    # Gradient norm clipping (0 disables).
    grad_clip: float = 1.0
    # Seed for initialisation and data order.
    seed: int = 0
    # Log metrics every N optimizer steps.
    log_every: int = 1
    # "fp32" (CPU), "bf16" or "fp16" (GPU).
    precision: str = "fp32"
    # Save a resumable checkpoint every N optimizer steps into <run_dir>/checkpoints (0 disables).
    # A rerun of the same job resumes from the newest complete one; see training/checkpoints.py.
    checkpoint_every: int = 50
    # Complete checkpoints kept on disk (older ones are deleted after each save).
    keep_checkpoints: int = 2
    # How a checkpoint is verified before resuming: "sha256" (every file hashed; catches corruption)
    # or "size" (file sizes only; catches truncation, cheaper for very large checkpoints).
    checkpoint_verify: str = "sha256"
    # Non-finite loss: "stop" raises with a clear message; "skip" drops that step's update
    # (learning rate 0 for the step) and counts it in ``skipped_steps``. "skip" needs ZeRO <= 2.
    nan_policy: str = "stop"
    # Recompute activations in the backward pass (less memory, ~30% more compute).
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML/JSON give lists
        if self.precision not in {"fp32", "bf16", "fp16"}:
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.nan_policy not in {"stop", "skip"}:
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {self.nan_policy!r}")
        if self.checkpoint_verify not in {"sha256", "size"}:
            raise ValueError(f"checkpoint_verify must be 'sha256' or 'size', got {self.checkpoint_verify!r}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every must be >= 0 and keep_checkpoints >= 1")
        if self.max_steps < 1 or self.micro_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("max_steps, micro_batch_size and gradient_accumulation_steps must be >= 1")


@dataclass
class LaunchArgs:
    """How the training job is started (see ``lmforge.training.launch``)."""

    # "torchrun" or "deepspeed".
    launcher: str = "torchrun"
    # Processes per node (one per GPU; on CPU, processes sharing the cores). 0 = one per visible GPU.
    nproc_per_node: int = 2
    # Nodes (multi-node needs a hostfile for deepspeed, or master_addr for torchrun).
    nnodes: int = 1
    # DeepSpeed hostfile for multi-node runs.
    hostfile: str | None = None
    # Rendezvous address/port; the port is picked free when None.
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    # Hard limit for the whole job in seconds (0 = none).
    timeout_s: int = 0


@dataclass
class DeepSpeedArgs:
    """ZeRO stage and the template it starts from (conf/base/deepspeed/zero<stage>.json)."""

    # ZeRO stage 0, 1, 2 or 3.
    zero_stage: int = 2
    # Keep the optimizer state (fp32 master weights, Adam moments) and run the Adam step on the CPU:
    # "none" or "cpu" (ZeRO 1-3). Uses DeepSpeedCPUAdam, a C++ op built on first use (~5 min on 2 cores;
    # ``python -m lmforge.training.prebuild --cpu-adam`` builds it ahead).
    offload_optimizer: str = "none"
    # Keep the parameters in CPU memory between uses: "none" or "cpu" (ZeRO-3 only).
    offload_param: str = "none"
    # Page-locked host buffers for offload (faster copies to the GPU; more pinned RAM).
    offload_pin_memory: bool = True
    # Keys merged over the template after the automatic values (escape hatch for any DS option).
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("offload_optimizer", "offload_param"):
            if getattr(self, name) not in {"none", "cpu"}:
                raise ValueError(f"deepspeed.{name} must be 'none' or 'cpu', got {getattr(self, name)!r}")
        if self.offload_optimizer != "none" and self.zero_stage < 1:
            raise ValueError("deepspeed.offload_optimizer needs zero_stage 1, 2 or 3 (ZeRO-Offload partitions "
                             f"the optimizer), got zero_stage {self.zero_stage}")
        if self.offload_param != "none" and self.zero_stage != 3:
            raise ValueError("deepspeed.offload_param needs zero_stage 3 (only ZeRO-3 partitions the parameters), "
                             f"got zero_stage {self.zero_stage}; use offload_optimizer with stage 1-2")


@dataclass
class JobSpec:
    """Everything a training process needs, serialised as JSON for the launched ranks."""

    # "pretrain" or "sft".
    kind: str
    # Preset name and overrides (pretrain), or ignored when init_from is set (sft).
    model: dict[str, Any]
    # Hugging Face model directory to start from (sft), None to build from the preset.
    init_from: str | None
    # Data location(s): {"token_shards": dir} or {"examples": jsonl, "pad_id": int}.
    data: dict[str, Any]
    train: TrainArgs
    # Fully resolved DeepSpeed config.
    deepspeed: dict[str, Any]
    # Where the final Hugging Face checkpoint is written.
    output_dir: str
    # Scratch directory of this run (logs, result.json).
    run_dir: str
    # Metric name prefix in MLflow ("pretrain" -> "pretrain.loss").
    metric_prefix: str
    # Tokenizer fingerprint the data was built with; checked at load.
    tokenizer_sha256: str | None = None
    # Hash of everything that determines the trained weights (``checkpoints.fingerprint_job``);
    # a checkpoint is resumed only by a job with the same fingerprint.
    fingerprint: str | None = None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        raw = json.loads(Path(path).read_text())
        raw["train"] = TrainArgs(**raw["train"])
        return cls(**raw)


def parse_train_args(data: dict[str, Any] | None, where: str = "train") -> TrainArgs:
    return build_dataclass(TrainArgs, data or {}, path=where)


def parse_launch_args(data: dict[str, Any] | None, where: str = "launch") -> LaunchArgs:
    return build_dataclass(LaunchArgs, data or {}, path=where)


def parse_deepspeed_args(data: dict[str, Any] | None, where: str = "deepspeed") -> DeepSpeedArgs:
    return build_dataclass(DeepSpeedArgs, data or {}, path=where)


def load_job_spec(description: str, argv: list[str] | None = None) -> JobSpec:
    """Parse a training worker's command line (``--config job.json``) and load its ``JobSpec``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="path of the job.json written by the launcher")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return JobSpec.load(parser.parse_args(argv).config)
