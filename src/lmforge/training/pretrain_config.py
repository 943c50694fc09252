"""The pretrain stage's typed config, ``PretrainConfig`` (``params:pretrain``), built once at the node.

``build_dataclass(PretrainConfig, params, path="pretrain")`` rejects a typo by its dotted path; the
object goes whole to ``lmforge.training.jobs.run_pretraining``. Every default lives on its field (the
shared parts, ``TrainArgs``, ``DeepSpeedArgs`` and ``LaunchArgs``, in ``training/config.py``; the
training defaults that are pretraining's own in ``PretrainTrainArgs``, so a partial ``pretrain.train``
mapping is completed with them); the shipped conf/base/parameters_pretrain.yml shows the same values,
which tests/training/test_training_config.py checks with ``default_mismatches``. ``run_dir`` has no
default: where a stage writes is the configuration's choice, not the library's.

Continued pretraining (``base_model``: a local Hugging Face causal LM instead of a preset) starts from
trained weights, which the from-scratch schedule (``train.lr`` 3e-3 for the tiny CPU model) would
wreck in a few steps. So it has its own schedule, ``ContinuedTrainArgs`` (``pretrain.continued``),
whose defaults follow XTuner's full-parameter continued-pretraining config for InternLM2
(``internlm2_7b_full_custom_pretrain_e1.py``: lr 2e-5, warmup_ratio 0.03, cosine decay; full-parameter
recipes of other tools keep the peak within 1e-5..5e-5), decaying to 10% of the peak as the scratch
schedule does rather than to zero. The learning rate is re-warmed from zero because the optimizer
state of the base model's own run is not available and Adam's moments start empty. With
``base_model`` set, ``__post_init__`` writes these into ``train`` (``lr``, ``warmup_steps``,
``min_lr_ratio``), so the job, the MLflow params and the model card all show the schedule that ran;
``train.lr``/``warmup_steps``/``min_lr_ratio`` are the from-scratch schedule only (one set to another
value alongside ``base_model`` is named in a warning as ignored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from lmforge.model.build import ATTN_IMPLEMENTATION
from lmforge.model.presets import Preset, PresetOverrides
from lmforge.training.config import DeepSpeedArgs, LaunchArgs, TrainArgs

logger = logging.getLogger(__name__)


@dataclass
class ModelArgs:
    """The model pretraining builds: a named preset and the fields it changes (``pretrain.model``)."""

    # A row of the preset table (``python -m lmforge.model`` lists them); "debug" is the test size.
    preset: str = "tiny"
    # Preset fields to change, e.g. {n_layers: 2}; names and types are checked against the table here.
    overrides: PresetOverrides = field(default_factory=dict)
    # transformers attention kernel: sdpa, eager (or flash_attention_2 where flash-attn is installed).
    attn_implementation: str = ATTN_IMPLEMENTATION

    def __post_init__(self) -> None:
        self.overrides = dict(self.overrides or {})
        try:
            Preset.from_name(self.preset, **self.overrides)
        except (KeyError, ValueError) as err:
            raise ValueError(f"pretrain.model: {err.args[0]}") from None


@dataclass
class PretrainTrainArgs(TrainArgs):
    """``pretrain.train``: ``TrainArgs`` with the pretrain stage's own defaults (the fields restated here):
    the tiny CPU model trained from scratch takes a high learning rate; a checkpoint every third of the run."""

    max_steps: int = 120
    lr: float = 3e-3
    checkpoint_every: int = 40


@dataclass
class ContinuedTrainArgs:
    """``pretrain.continued``: the schedule of continued pretraining (``base_model`` set); replaces the
    ``train`` fields of the same meaning for such a run (see the module docstring)."""

    # Peak learning rate for a trained model (XTuner's InternLM2 full continued pretraining: 2e-5).
    lr: float = 2e-5
    # Linear warmup as a share of train.max_steps (at least one step): re-warm from zero, ~3% of the run.
    warmup_ratio: float = 0.03
    # Final learning rate as a fraction of the peak (cosine decay).
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not (self.lr > 0 and 0.0 <= self.warmup_ratio < 1.0 and 0.0 <= self.min_lr_ratio <= 1.0):
            raise ValueError(f"pretrain.continued: lr must be > 0, warmup_ratio in [0, 1) and min_lr_ratio in "
                             f"[0, 1], got {self.lr}, {self.warmup_ratio}, {self.min_lr_ratio}")

    def warmup_steps(self, max_steps: int) -> int:
        """Warmup steps for a run of ``max_steps``: ``warmup_ratio`` of it, rounded, at least one."""
        return max(1, round(self.warmup_ratio * max_steps))


@dataclass
class PretrainConfig:
    """``params:pretrain``: a preset model trained from scratch, or a local Hugging Face causal LM trained
    further (``base_model``), on packed token shards with DeepSpeed, several processes."""

    # Scratch directory of the stage's job: job.json, train.log, result.json, checkpoints/ (the YAML gives it).
    run_dir: str
    # Local Hugging Face causal LM directory (what save_pretrained writes) to continue pretraining from,
    # with its own tokenizer: the cleaned corpus is re-tokenized with it (``pretrain_token_shards``) and the
    # ``continued`` schedule applies. None: the ``model`` preset, from scratch, on the tokenizer stage's shards.
    base_model: str | None = None
    # Let transformers run Python shipped in base_model's directory (``auto_map``, e.g. InternLM2, Baichuan).
    # Off: such a model is refused with the reason (``lmforge.model.base_model.check_base_model``).
    trust_remote_code: bool = False
    # The preset model to build when base_model is None (``ModelArgs``).
    model: ModelArgs = field(default_factory=ModelArgs)
    # Optimisation, checkpoints and the non-finite-loss policy (``TrainArgs``, pretraining's defaults).
    train: PretrainTrainArgs = field(default_factory=PretrainTrainArgs)
    # ZeRO stage, offload and raw DeepSpeed overrides (``DeepSpeedArgs``).
    deepspeed: DeepSpeedArgs = field(default_factory=DeepSpeedArgs)
    # Launcher, processes and nodes (``LaunchArgs``).
    launch: LaunchArgs = field(default_factory=LaunchArgs)
    # The learning-rate schedule of continued pretraining (``ContinuedTrainArgs``), used when base_model is set.
    continued: ContinuedTrainArgs = field(default_factory=ContinuedTrainArgs)

    def __post_init__(self) -> None:
        if not self.base_model:
            return
        # idempotent: a config rebuilt from its own dict resolves to the same schedule
        resolved = {"lr": self.continued.lr, "min_lr_ratio": self.continued.min_lr_ratio,
                    "warmup_steps": self.continued.warmup_steps(self.train.max_steps)}
        scratch = PretrainTrainArgs()
        ignored = [f"train.{k}={getattr(self.train, k)}" for k, v in resolved.items()
                   if getattr(self.train, k) not in (v, getattr(scratch, k))]
        if ignored:  # the user set a from-scratch value that continued pretraining does not use
            logger.warning("pretrain.base_model is set, so pretrain.continued decides the schedule: %s ignored "
                           "(set pretrain.continued.lr / warmup_ratio / min_lr_ratio instead)", ", ".join(ignored))
        self.train = replace(self.train, **resolved)
