"""The align stage's typed config, ``AlignConfig`` (``params:align``).

``build_dataclass(AlignConfig, params, path="align")`` rejects a typo by its dotted path; the object goes whole
to ``lmforge.align.stage`` and the job (``lmforge.training.jobs.run_align``). Every default lives on its field;
conf/base/parameters_align.yml repeats them (tests/align/test_align_config.py checks it with
``default_mismatches``). ``run_dir`` has no default: where a stage writes is the configuration's choice.

The stage can be switched off (``align.enabled: false``): it then writes only ``DISABLED_MARKER`` into its
checkpoint directory, and ``resolve_chat_model`` (``chat_model.py``) hands evaluation, the gate and packaging
the SFT model, as before the stage existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lmforge.align.chat_model import DISABLED_MARKER, resolve_chat_model
from lmforge.align.loss_args import METHODS, LossArgs
from lmforge.align.on_policy import OnPolicyArgs
from lmforge.data.preferences import PreferenceSource
from lmforge.model.build import ATTN_IMPLEMENTATION
from lmforge.training.config import DeepSpeedArgs, LaunchArgs, TrainArgs
from lmforge.training.lora import LoraArgs

FINETUNING = ("full", "lora")
__all__ = ["DISABLED_MARKER", "AlignConfig", "AlignModelArgs", "AlignTrainArgs", "resolve_chat_model"]


@dataclass
class AlignTrainArgs(TrainArgs):
    """``align.train``: ``TrainArgs`` with the align stage's defaults (the fields restated here).

    One optimizer step takes ``micro_batch_size`` pairs per process (each pair is two sequences, chosen and
    rejected, in one forward). The CPU default is sized for the tiny SFT model of the default chain: 40 steps
    per round at lr 5e-5 (20x under SFT's 1e-3: preference tuning moves a trained model, it does not teach it
    from scratch; DPO recipes for 7B models use 5e-7). Measured on the default chain: at 1e-4 the aligned
    model's held-out perplexity drifted to 1.25x SFT's (3.07x the base model's, past the quality gate's 3.0).
    """

    max_steps: int = 40
    micro_batch_size: int = 4
    lr: float = 5e-5
    warmup_steps: int = 4
    weight_decay: float = 0.0
    checkpoint_every: int = 10


@dataclass
class AlignModelArgs:
    """``align.model``: how the SFT model is loaded."""

    # transformers attention kernel.
    attn_implementation: str = ATTN_IMPLEMENTATION


@dataclass
class AlignConfig:
    """``params:align``: preference pairs, the loss, on-policy rounds and the training job (parameters_align.yml)."""

    # Scratch directory of the stage: one sub-directory per round (job.json, train.log, checkpoints/).
    run_dir: str
    # Run the stage; false: evaluation and packaging take the SFT model (``resolve_chat_model``).
    enabled: bool = True
    # The loss: dpo (sigmoid, with label_smoothing), ipo, simpo or orpo (reference-free) and their constants
    # (``lmforge.align.losses.LossArgs``).
    loss: LossArgs = field(default_factory=LossArgs)
    # Preference files ({prompt, chosen, rejected} or messages + chosen/rejected; JSONL, JSON or Parquet).
    sources: list[PreferenceSource] = field(default_factory=list)
    # Built-in identity pairs (chosen: the sft.identity answer; rejected: a claim to be another assistant).
    identity_pairs: bool = True
    # Languages of the identity pairs.
    identity_languages: list[str] = field(default_factory=lambda: ["en", "zh"])
    # On-policy rounds: sample from the policy, score with a verifiable reward, pair best vs worst, train.
    on_policy: OnPolicyArgs = field(default_factory=OnPolicyArgs)
    # Share of the offline pairs held out (by prompt) for the held-out preference accuracy.
    validation_fraction: float = 0.2
    # Seed of the held-out split.
    split_seed: int = 0
    # Longest pair sequence (prompt + response) in tokens; responses are cut from the right to fit.
    max_length: int = 384
    # Longest prompt in tokens: leading turns are dropped first; a last turn still longer is quarantined.
    max_prompt_length: int = 256
    # "full" (every parameter) or "lora" (adapters only, merged; the reference is the model without them).
    finetuning: str = "full"
    # LoRA settings, used when ``finetuning`` is "lora".
    lora: LoraArgs = field(default_factory=LoraArgs)
    # How the SFT model is loaded.
    model: AlignModelArgs = field(default_factory=AlignModelArgs)
    # Optimisation, checkpoints and the non-finite-loss policy, per round (``AlignTrainArgs``).
    train: AlignTrainArgs = field(default_factory=AlignTrainArgs)
    # ZeRO stage, offload and raw DeepSpeed overrides.
    deepspeed: DeepSpeedArgs = field(default_factory=DeepSpeedArgs)
    # Launcher, processes and nodes.
    launch: LaunchArgs = field(default_factory=LaunchArgs)

    def __post_init__(self) -> None:
        from lmforge.config import build_dataclass

        self.sources = [build_dataclass(PreferenceSource, s, path=f"align.sources[{i}]") if isinstance(s, Mapping)
                        else s for i, s in enumerate(self.sources or [])]
        self.identity_languages = list(self.identity_languages)
        if self.loss.method not in METHODS:
            raise ValueError(f"align.loss.method must be one of {', '.join(METHODS)}, got {self.loss.method!r}")
        if self.finetuning not in FINETUNING:
            raise ValueError(f"align.finetuning must be 'full' or 'lora', got {self.finetuning!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"align.validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if not 1 <= self.max_prompt_length < self.max_length:
            raise ValueError(f"align.max_prompt_length ({self.max_prompt_length}) must be >= 1 and below "
                             f"align.max_length ({self.max_length}): the responses need room")
