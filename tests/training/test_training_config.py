"""Typed training config: unknown keys fail loudly, JobSpec survives the JSON trip to the ranks, YAML = defaults."""

from __future__ import annotations

import pytest
import yaml

from lmforge.config import build_dataclass, config_to_dict, default_mismatches
from lmforge.training.config import (
    DeepSpeedArgs,
    FaultInjection,
    JobData,
    JobModel,
    JobSpec,
    LaunchArgs,
    TrainArgs,
)
from lmforge.training.lora import LoraArgs
from lmforge.training.pretrain_config import ModelArgs, PretrainConfig
from lmforge.training.sft_config import SftConfig, SftTrainArgs


def test_train_args_fill_defaults_and_convert_betas():
    args = build_dataclass(TrainArgs, {"max_steps": 7, "betas": [0.8, 0.9]}, path="train")

    assert args.max_steps == 7
    assert args.betas == (0.8, 0.9)
    assert args.micro_batch_size == TrainArgs().micro_batch_size


def test_train_args_unknown_key_names_it_and_where():
    with pytest.raises(ValueError, match=r"pretrain\.train\.max_step\b"):
        build_dataclass(PretrainConfig, {"run_dir": "r", "train": {"max_step": 5}}, path="pretrain")


def test_launch_and_deepspeed_args_reject_unknown_keys():
    with pytest.raises(ValueError, match="nprocs"):
        build_dataclass(LaunchArgs, {"nprocs": 2}, path="launch")
    with pytest.raises(ValueError, match="stage"):
        build_dataclass(DeepSpeedArgs, {"stage": 2}, path="deepspeed")


def test_stage_configs_reject_unknown_top_level_keys_and_need_a_run_dir():
    with pytest.raises(ValueError, match=r"pretrain\.max_length"):
        build_dataclass(PretrainConfig, {"run_dir": "r", "max_length": 3}, path="pretrain")
    with pytest.raises(ValueError, match=r"sft\.max_lenght"):
        build_dataclass(SftConfig, {"run_dir": "r", "max_lenght": 3}, path="sft")
    with pytest.raises(TypeError, match="run_dir"):
        build_dataclass(SftConfig, {}, path="sft")


@pytest.mark.parametrize("bad", [{"precision": "fp8"}, {"max_steps": 0}, {"micro_batch_size": 0}])
def test_train_args_validate_values(bad):
    with pytest.raises(ValueError):
        TrainArgs(**bad)


def test_preset_overrides_are_checked_against_the_preset_when_parsed():
    assert ModelArgs(preset="debug", overrides={"n_layers": 1}).overrides == {"n_layers": 1}
    with pytest.raises(ValueError, match=r"pretrain\.model: .*n_layerz"):
        ModelArgs(preset="debug", overrides={"n_layerz": 1})
    with pytest.raises(ValueError, match=r"pretrain\.model: .*n_layers='two'"):
        ModelArgs(preset="debug", overrides={"n_layers": "two"})
    with pytest.raises(ValueError, match=r"pretrain\.model: .*huge"):
        ModelArgs(preset="huge")


def test_jobspec_save_load_round_trip(tmp_path):
    spec = JobSpec(kind="sft", model=JobModel(attn_implementation="eager", preset="debug", overrides={"n_layers": 1},
                                              lora=LoraArgs(r=4, target_modules=["q_proj"])),
                   init_from="/models/base", data=JobData(examples="/data/train.jsonl", pad_id=3, packing=True,
                                                          packing_length=256),
                   train=TrainArgs(max_steps=3, betas=(0.8, 0.99), lr=5e-4,
                                   fault_injection=FaultInjection(nan_at_steps=[2])),
                   deepspeed={"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 4},
                   output_dir=str(tmp_path / "export"), run_dir=str(tmp_path), metric_prefix="sft",
                   tokenizer_sha256="ab" * 32)
    path = tmp_path / "job.json"

    spec.save(path)
    loaded = JobSpec.load(path)

    assert loaded == spec
    assert isinstance(loaded.train, TrainArgs) and isinstance(loaded.model.lora, LoraArgs)
    assert isinstance(loaded.data, JobData) and isinstance(loaded.train.fault_injection, FaultInjection)
    assert loaded.train.betas == (0.8, 0.99)


def test_jobspec_load_rejects_an_unknown_key(tmp_path):
    import json

    path = tmp_path / "job.json"
    spec = JobSpec(kind="pretrain", model=JobModel(attn_implementation="sdpa", preset="debug"), init_from=None,
                   data=JobData(token_shards="/t"), train=TrainArgs(), deepspeed={}, output_dir="o", run_dir="r",
                   metric_prefix="pretrain")
    raw = config_to_dict(spec)
    raw["data"]["tokens"] = "/t"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"job\.data\.tokens"):
        JobSpec.load(path)


def test_deepspeed_args_default_overrides_are_not_shared():
    a, b = DeepSpeedArgs(), DeepSpeedArgs()
    a.overrides["x"] = 1

    assert b.overrides == {}


@pytest.mark.parametrize(("stage", "cls"), [("pretrain", PretrainConfig), ("sft", SftConfig)])
def test_shipped_yaml_equals_the_dataclass_defaults(project_root, stage, cls):
    """conf/base shows the library's defaults: every value the YAML gives is the field's default."""
    from lmforge.data.sft_mix import parse_sources

    params = yaml.safe_load((project_root / f"conf/base/parameters_{stage}.yml").read_text())[stage]
    if stage == "sft":
        # the YAML writes each source short ({name: identity}); compare the sources as parsed, every field filled
        params = {**params, "sources": [config_to_dict(s) for s in parse_sources(params["sources"])]}

    assert default_mismatches(cls, params, path=stage) == []
    config = build_dataclass(cls, params, path=stage)
    assert config == cls(run_dir=params["run_dir"])  # the YAML adds nothing but the run directory


def test_sft_training_defaults_complete_a_partial_mapping_with_sfts_own():
    config = build_dataclass(SftConfig, {"run_dir": "r", "train": {"lr": 1e-4}}, path="sft")

    assert isinstance(config.train, SftTrainArgs)
    assert (config.train.lr, config.train.max_steps, config.train.weight_decay) == (1e-4, 200, 0.0)
    assert PretrainConfig(run_dir="r").train.max_steps == 120 != TrainArgs().max_steps


def test_gpu_environment_merges_over_base_and_parses(project_root):
    from kedro.config import OmegaConfigLoader

    from lmforge.model.presets import Preset

    loader = OmegaConfigLoader(str(project_root / "conf"), base_env="base", default_run_env="local", env="gpu",
                               merge_strategy={"parameters": "soft"})
    params = loader["parameters"]
    for stage, cls in (("pretrain", PretrainConfig), ("sft", SftConfig)):
        config = build_dataclass(cls, params[stage], path=stage)
        assert config.train.precision == "bf16"
        assert config.train.betas == (0.9, 0.95)  # base values not listed in conf/gpu survive the merge
        assert config.launch.nproc_per_node == 0
        assert config.model.attn_implementation == "sdpa"
    assert Preset.from_name(params["pretrain"]["model"]["preset"]).d_model >= 768


def test_nproc_zero_means_one_process_per_gpu():
    import torch

    from lmforge.training.launch import resolve_nproc

    assert resolve_nproc(LaunchArgs(nproc_per_node=3)) == 3
    if torch.cuda.is_available():
        assert resolve_nproc(LaunchArgs(nproc_per_node=0)) == torch.cuda.device_count()
    else:
        with pytest.raises(ValueError, match="no GPU"):
            resolve_nproc(LaunchArgs(nproc_per_node=0))
