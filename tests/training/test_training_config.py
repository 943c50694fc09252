"""Typed training config: unknown keys fail loudly, JobSpec survives the JSON trip to the ranks."""

from __future__ import annotations

import pytest

from lmforge.training.config import (
    DeepSpeedArgs,
    JobSpec,
    TrainArgs,
    parse_deepspeed_args,
    parse_launch_args,
    parse_train_args,
)


def test_parse_train_args_fills_defaults_and_converts_betas():
    args = parse_train_args({"max_steps": 7, "betas": [0.8, 0.9]})

    assert args.max_steps == 7
    assert args.betas == (0.8, 0.9)
    assert args.micro_batch_size == TrainArgs().micro_batch_size


def test_parse_train_args_unknown_key_names_it_and_where():
    with pytest.raises(ValueError, match=r"pretrain\.train\.max_step\b"):
        parse_train_args({"max_step": 5}, "pretrain.train")


def test_parse_launch_and_deepspeed_args_reject_unknown_keys():
    with pytest.raises(ValueError, match="nprocs"):
        parse_launch_args({"nprocs": 2})
    with pytest.raises(ValueError, match="stage"):
        parse_deepspeed_args({"stage": 2})


@pytest.mark.parametrize("bad", [{"precision": "fp8"}, {"max_steps": 0}, {"micro_batch_size": 0}])
def test_train_args_validate_values(bad):
    with pytest.raises(ValueError):
        TrainArgs(**bad)


def test_jobspec_save_load_round_trip(tmp_path):
    spec = JobSpec(kind="sft", model={"preset": "debug", "overrides": {"n_layers": 1}}, init_from="/models/base",
                   data={"examples": "/data/train.jsonl", "pad_id": 3},
                   train=TrainArgs(max_steps=3, betas=(0.8, 0.99), lr=5e-4),
                   deepspeed={"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 4},
                   output_dir=str(tmp_path / "export"), run_dir=str(tmp_path), metric_prefix="sft",
                   tokenizer_sha256="ab" * 32)
    path = tmp_path / "job.json"

    spec.save(path)
    loaded = JobSpec.load(path)

    assert loaded == spec
    assert isinstance(loaded.train, TrainArgs)
    assert loaded.train.betas == (0.8, 0.99)


def test_deepspeed_args_default_overrides_are_not_shared():
    a, b = DeepSpeedArgs(), DeepSpeedArgs()
    a.overrides["x"] = 1

    assert b.overrides == {}


def test_gpu_environment_merges_over_base_and_parses(project_root):
    from kedro.config import OmegaConfigLoader

    from lmforge.model.presets import Preset

    loader = OmegaConfigLoader(str(project_root / "conf"), base_env="base", default_run_env="local", env="gpu",
                               merge_strategy={"parameters": "soft"})
    params = loader["parameters"]
    for stage in ("pretrain", "sft"):
        train = parse_train_args(params[stage]["train"])
        assert train.precision == "bf16"
        assert train.betas == (0.9, 0.95)  # base values not listed in conf/gpu survive the merge
        assert parse_launch_args(params[stage]["launch"]).nproc_per_node == 0
        assert params[stage]["model"]["attn_implementation"] == "sdpa"
    assert Preset.from_name(params["pretrain"]["model"]["preset"]).d_model >= 768


def test_nproc_zero_means_one_process_per_gpu():
    import torch

    from lmforge.training.config import LaunchArgs
    from lmforge.training.launch import resolve_nproc

    assert resolve_nproc(LaunchArgs(nproc_per_node=3)) == 3
    if torch.cuda.is_available():
        assert resolve_nproc(LaunchArgs(nproc_per_node=0)) == torch.cuda.device_count()
    else:
        with pytest.raises(ValueError, match="no GPU"):
            resolve_nproc(LaunchArgs(nproc_per_node=0))
