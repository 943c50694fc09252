"""Typed training configuration, shared by the Kedro nodes and the launched training processes.

The stage configs (``PretrainConfig`` in ``pretrain_config.py``, ``SftConfig`` in ``sft_config.py``)
are built from ``params:pretrain`` / ``params:sft`` at the node and hold the parts declared here
(``TrainArgs``, ``DeepSpeedArgs``, ``LaunchArgs``). ``lmforge.training.jobs`` turns one into a ``JobSpec`` (with its
``JobModel`` and ``JobData``), writes it as ``<run_dir>/job.json`` with ``config_to_dict`` and
launches ``python -m lmforge.training.<kind> --config <run_dir>/job.json`` on every rank, which parses
it back with the same class (``JobSpec.load``: ``build_dataclass``, unknown keys rejected). Each field
is documented where it is declared.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.align.loss_args import LossArgs
from lmforge.config import build_dataclass, config_to_dict
from lmforge.model.presets import PresetOverrides
from lmforge.training.bandwidth import BandwidthProbeArgs
from lmforge.training.lora import LoraArgs

# A JSON value. The resolved DeepSpeed config is DeepSpeed's own document (hundreds of keys, its schema
# versioned by DeepSpeed and read by ``deepspeed.initialize``): it stays a JSON document here, typed as
# JSON, rather than a copy of DeepSpeed's schema that would drift from the installed version.
JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]
# A DeepSpeed config (or a part of one merged over a template: ``deepspeed.overrides``).
DeepSpeedJSON = dict[str, JSONValue]


@dataclass
class FaultInjection:
    """Faults to inject and what to record, for the tests of resume and non-finite losses (``train.fault_injection``).

    Empty by default and never set by the shipped YAML. Kept out of the job's fingerprint
    (``checkpoints.fingerprint_job``): a run killed by ``kill_after_checkpoint_step`` is resumed by the
    same job without it.
    """

    # Optimizer steps whose loss is made NaN (every rank), to exercise ``train.nan_policy``.
    nan_at_steps: list[int] = field(default_factory=list)
    # SIGKILL the whole job (every rank and the launcher) right after the checkpoint of this step is
    # complete: what a lost machine looks like to the next run. None: never.
    kill_after_checkpoint_step: int | None = None
    # Directory where each rank of a pretraining job appends the sample ids of every micro-batch
    # (``rank<r>.jsonl``: step, micro, rank, ids), to check which data a resumed run consumed. None: off.
    sample_log_dir: str | None = None

    def __post_init__(self) -> None:
        self.nan_at_steps = [int(s) for s in self.nan_at_steps]


@dataclass
class TrainArgs:
    """Optimisation settings (one optimizer step = micro_batch_size x grad accumulation x ranks).

    These defaults serve a job put together by hand (benchmarks, tests); each stage completes its
    ``train`` mapping with its own defaults where they differ: ``PretrainTrainArgs``, ``SftTrainArgs``.
    """

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
    # Test-only faults and records; see ``FaultInjection`` (not part of the job's fingerprint).
    fault_injection: FaultInjection = field(default_factory=FaultInjection)
    # The all-reduce bus-bandwidth probe at training start (``BandwidthProbeArgs``; not part of the fingerprint).
    bandwidth_probe: BandwidthProbeArgs = field(default_factory=BandwidthProbeArgs)

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
    """How the training job is started (see ``lmforge.training.launch``; multi-node: ``lmforge.training.nodes``)."""

    # "torchrun" or "deepspeed".
    launcher: str = "torchrun"
    # Processes per node (one per GPU; on CPU, processes sharing the cores). 0 = one per visible GPU.
    # deepspeed multi-node with a hostfile: the hostfile's slots.
    nproc_per_node: int = 2
    # Nodes. Node 0 is the ``kedro run``; every other node runs
    # ``python -m lmforge.training.launch join --run-dir <run_dir> --node-rank <r>`` (the run directory is shared).
    nnodes: int = 1
    # This node's rank, 0..nnodes-1. Leave it 0 in the YAML: the join command sets it on the other nodes.
    node_rank: int = 0
    # DeepSpeed hostfile for multi-node runs (one "<host> slots=<processes>" line per node, node 0 first).
    # None with nnodes > 1: node 0 writes <run_dir>/hostfile with nproc_per_node slots per node.
    hostfile: str | None = None
    # Rendezvous address (node 0's, reachable from every node) and port; the port is picked free when None
    # and written to <run_dir>/launch.json, where the joining nodes read it.
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    # Multi-node: seconds each node waits for all the others to arrive at the rendezvous before it stops
    # its launcher and names the nodes that never came (also torchrun's rendezvous timeout).
    join_timeout_s: int = 300
    # deepspeed multi-node: True = the runner on node 0 starts every hostfile host over passwordless ssh
    # (pdsh); False = every node starts its own part with the join command (the runner's --no_ssh).
    ssh: bool = False
    # Hard limit for the whole job in seconds (0 = none).
    timeout_s: int = 0

    def __post_init__(self) -> None:
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"launch.nnodes must be >= 1 and launch.node_rank in 0..nnodes-1, got nnodes "
                             f"{self.nnodes}, node_rank {self.node_rank}")
        if self.join_timeout_s <= 0:
            raise ValueError(f"launch.join_timeout_s must be > 0 seconds, got {self.join_timeout_s}")


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
    # DeepSpeed keys merged over the template after the automatic values (escape hatch for any DS option),
    # e.g. {zero_optimization: {reduce_bucket_size: 50000000}}.
    overrides: DeepSpeedJSON = field(default_factory=dict)

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
class JobModel:
    """The model a job trains: built from a preset (pretrain) or loaded from ``JobSpec.init_from`` (sft, and
    pretrain with ``pretrain.base_model``: continued pretraining)."""

    # transformers attention kernel: sdpa, eager or flash_attention_2.
    attn_implementation: str
    # Preset name (``lmforge.model.presets``) and its overrides; None when the job starts from init_from.
    preset: str | None = None
    overrides: PresetOverrides = field(default_factory=dict)
    # Vocabulary size and special-token ids of the trained tokenizer (pretrain builds the embedding for it).
    vocab_size: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    # LoRA adapters to train (only they train, merged into the output checkpoint); None: every parameter.
    lora: LoraArgs | None = None
    # Let transformers run Python shipped in the init_from directory (``<stage>.trust_remote_code``).
    trust_remote_code: bool = False


@dataclass
class JobData:
    """What a job reads: packed token shards (pretrain) or tokenized example files (sft)."""

    # Token-shard directory (pretrain): the tokenizer stage's, or the base model's own (pretrain_token_shards).
    token_shards: str | None = None
    # JSONL of tokenized training examples {"id", "input_ids", "labels"} (sft), or of tokenized preference
    # pairs {"id", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"} (align).
    examples: str | None = None
    # JSONL of held-out examples scored before and after training: the validation loss (sft), the held-out
    # preference accuracy (align).
    validation_examples: str | None = None
    # Padding token id of the tokenizer (sft batches are padded with it).
    pad_id: int | None = None
    # Pack several examples per row of ``packing_length`` tokens (sft.packing, sft.max_length).
    packing: bool = False
    packing_length: int = 0


@dataclass
class JobSpec:
    """Everything a training process needs, serialised as JSON for the launched ranks."""

    # "pretrain", "sft" or "align" (the worker module ``lmforge.training.<kind>``).
    kind: str
    # The model to build or load (see ``JobModel``).
    model: JobModel
    # Hugging Face model directory to start from (sft; pretrain.base_model), None to build from the preset.
    init_from: str | None
    # The data to read (see ``JobData``).
    data: JobData
    # Optimisation settings of the stage (its ``TrainArgs``, possibly rebatched to resume on another world size).
    train: TrainArgs
    # Fully resolved DeepSpeed config (DeepSpeed's own JSON document; see ``DeepSpeedJSON``).
    deepspeed: DeepSpeedJSON
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
    # The preference loss of an align job (method, beta...); None for pretrain and sft.
    preference: LossArgs | None = None
    # Added to the step number of every per-step metric logged to MLflow (an align round after the first
    # continues the curve of the rounds before it). Not part of the fingerprint.
    log_step_offset: int = 0

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(config_to_dict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> JobSpec:
        return build_dataclass(cls, json.loads(Path(path).read_text()), path="job")


def load_job_spec(description: str, argv: list[str] | None = None) -> JobSpec:
    """Parse a training worker's command line (``--config job.json``) and load its ``JobSpec``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="path of the job.json written by the launcher")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return JobSpec.load(parser.parse_args(argv).config)
