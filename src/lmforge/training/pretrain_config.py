"""The pretrain stage's typed config, ``PretrainConfig`` (``params:pretrain``), built once at the node.

``build_dataclass(PretrainConfig, params, path="pretrain")`` rejects a typo by its dotted path; the
object goes whole to ``lmforge.training.jobs.run_pretraining``. Every default lives on its field (the
shared parts, ``TrainArgs``, ``DeepSpeedArgs`` and ``LaunchArgs``, in ``training/config.py``; the
training defaults that are pretraining's own in ``PretrainTrainArgs``, so a partial ``pretrain.train``
mapping is completed with them); the shipped conf/base/parameters_pretrain.yml shows the same values,
which tests/training/test_training_config.py checks with ``default_mismatches``. ``run_dir`` has no
default: where a stage writes is the configuration's choice, not the library's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.model.build import ATTN_IMPLEMENTATION
from lmforge.model.presets import Preset, PresetOverrides
from lmforge.training.config import DeepSpeedArgs, LaunchArgs, TrainArgs


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
class PretrainConfig:
    """``params:pretrain``: a preset model trained on the packed token shards with DeepSpeed, several processes."""

    # Scratch directory of the stage's job: job.json, train.log, result.json, checkpoints/ (the YAML gives it).
    run_dir: str
    # The preset model to build (``ModelArgs``).
    model: ModelArgs = field(default_factory=ModelArgs)
    # Optimisation, checkpoints and the non-finite-loss policy (``TrainArgs``, pretraining's defaults).
    train: PretrainTrainArgs = field(default_factory=PretrainTrainArgs)
    # ZeRO stage, offload and raw DeepSpeed overrides (``DeepSpeedArgs``).
    deepspeed: DeepSpeedArgs = field(default_factory=DeepSpeedArgs)
    # Launcher, processes and nodes (``LaunchArgs``).
    launch: LaunchArgs = field(default_factory=LaunchArgs)
