"""The sft stage's typed config, ``SftConfig`` (``params:sft``), built once by the pipeline's first node.

``build_dataclass(SftConfig, params, path="sft")`` rejects a typo by its dotted path; the object goes
whole to the sft nodes and the library (``lmforge.training.sft``, ``lmforge.training.jobs.run_sft``).
Every default lives on its field; conf/base/parameters_sft.yml shows the same values, which
tests/training/test_training_config.py checks with ``default_mismatches``. ``run_dir`` has no
default: where a stage writes is the configuration's choice, not the library's.

SFT's training defaults differ from pretraining's, so they are their own class (``SftTrainArgs``):
a partial ``sft.train`` mapping is completed with SFT's defaults, not pretraining's. Kept apart from
``pretrain_config.py`` because it imports the SFT data modules, which pretraining never runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lmforge.data.chat_config import ChatSourcesConfig
from lmforge.data.identity import IdentityConfig
from lmforge.data.instructions import InstructionConfig
from lmforge.data.sft_mix import SourceSpec, parse_sources
from lmforge.model.build import ATTN_IMPLEMENTATION
from lmforge.training.config import DeepSpeedArgs, LaunchArgs, TrainArgs
from lmforge.training.lora import LoraArgs

FINETUNING = ("full", "lora")


@dataclass
class SftTrainArgs(TrainArgs):
    """``sft.train``: ``TrainArgs`` with the sft stage's own defaults (the fields restated here).

    The CPU default fine-tunes a tiny model pretrained for minutes: a short warmup, no weight decay, lr
    1e-3 and 200 steps (~2.8 passes over the default mix): measured on the en/zh/ja/code chain, 60 steps
    left the identity probe at recall 0 in both languages, 200 steps gave 0.83 (en) / 1.0 (zh); lr 4e-4
    at 200 steps gave 0.08 / 0. conf/gpu/parameters_sft.yml holds
    the GPU values.
    """

    max_steps: int = 200
    lr: float = 1e-3
    warmup_steps: int = 5
    weight_decay: float = 0.0
    checkpoint_every: int = 50


@dataclass
class SftModelArgs:
    """``sft.model``: how the base model (a Hugging Face directory) is loaded."""

    # transformers attention kernel for the loaded base model.
    attn_implementation: str = ATTN_IMPLEMENTATION


@dataclass
class SftConfig:
    """``params:sft``: the instruction mix, its rendering, and the fine-tuning job (see parameters_sft.yml)."""

    # Scratch directory of the stage's job: job.json, train.log, result.json, checkpoints/ (the YAML gives it).
    run_dir: str
    # Instruction pairs from the corpus (signature + docstring -> body): the ``corpus_instructions`` source.
    data: InstructionConfig = field(default_factory=InstructionConfig)
    # Who the assistant says it is: the ``identity`` source (its default weight is ``identity.repeat``).
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    # The real chat sources (translation, dialogue, faq) read from the source cache (``lmforge.data.sft_sources``).
    chat: ChatSourcesConfig = field(default_factory=ChatSourcesConfig)
    # The training mix, concatenated in this order (``lmforge.data.sft_mix``): the built-in sources
    # and your own files, each with a weight or a cap. Default: ``sft_mix.DEFAULT_SOURCES`` (translation,
    # dialogue, faq, code capped at 500 per category, balanced per language, plus identity).
    sources: list[SourceSpec] = field(default_factory=lambda: parse_sources(None))
    # Seed of every random choice of the mix.
    mix_seed: int = 0
    # Longest example in tokens: longer conversations lose whole trailing turns (``training/sft_data.py``);
    # also the row length of packing.
    max_length: int = 384
    # Put labels on the prompt tokens too (default: assistant turns only).
    train_on_prompt: bool = False
    # Local Hugging Face model directory to fine-tune; None: the pretrain stage's checkpoint. Its own
    # tokenizer and chat template are used when it has them (``training.sft.resolve_sft_sources``).
    base_model: str | None = None
    # Built-in chat template (chatml, llama3, gemma, internlm2) for a tokenizer that has none; a
    # tokenizer with its own template keeps it (naming another is refused). None: the tokenizer's own.
    chat_template: str | None = None
    # Run Python shipped in base_model's directory (auto_map: InternLM2, Baichuan...); off, such a model is
    # refused with the reason.
    trust_remote_code: bool = False
    # Several examples per row of ``max_length`` tokens, positions restarting per example and no
    # attention across them (the same loss as unpacked).
    packing: bool = True
    # "full" (every parameter) or "lora" (adapters only; merged into the checkpoint, adapter kept beside it).
    finetuning: str = "full"
    # LoRA settings, used when ``finetuning`` is "lora".
    lora: LoraArgs = field(default_factory=LoraArgs)
    # How the base model is loaded (``SftModelArgs``).
    model: SftModelArgs = field(default_factory=SftModelArgs)
    # Optimisation, checkpoints and the non-finite-loss policy (``TrainArgs``, SFT's defaults).
    train: SftTrainArgs = field(default_factory=SftTrainArgs)
    # ZeRO stage, offload and raw DeepSpeed overrides (``DeepSpeedArgs``).
    deepspeed: DeepSpeedArgs = field(default_factory=DeepSpeedArgs)
    # Launcher, processes and nodes (``LaunchArgs``).
    launch: LaunchArgs = field(default_factory=LaunchArgs)

    def __post_init__(self) -> None:
        if self.sources is None or any(isinstance(s, Mapping) for s in self.sources):
            self.sources = parse_sources(self.sources, path="sft.sources")  # YAML gives mappings
        if self.finetuning not in FINETUNING:
            raise ValueError(f"sft.finetuning must be 'full' or 'lora', got {self.finetuning!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"sft.max_length must be an integer >= 1, got {self.max_length!r}")
