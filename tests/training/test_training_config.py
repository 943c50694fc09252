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
