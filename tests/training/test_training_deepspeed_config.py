"""build_deepspeed_config: templates + TrainArgs -> a complete DeepSpeed config."""

from __future__ import annotations

import copy

import pytest

from lmforge.training.config import DeepSpeedArgs, TrainArgs
from lmforge.training.deepspeed_config import build_deepspeed_config


def find_auto(node, path=""):
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in find_auto(v, f"{path}.{k}")]
    return [path] if node == "auto" else []


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_auto_values_are_filled_from_train_args(deepspeed_templates, stage):
    before = copy.deepcopy(deepspeed_templates)
    train = TrainArgs(micro_batch_size=3, gradient_accumulation_steps=5, grad_clip=0.5, precision="bf16")

    config = build_deepspeed_config(deepspeed_templates, train, DeepSpeedArgs(zero_stage=stage))

    assert find_auto(config) == []
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 5
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"] == {"enabled": True}
    assert config["fp16"] == {"enabled": False}
    assert config["zero_optimization"]["stage"] == stage
    assert deepspeed_templates == before  # templates are not modified


def test_keys_missing_from_the_template_are_still_set():
    templates = {"zero1": {"zero_optimization": {"stage": 1}}}

    config = build_deepspeed_config(templates, TrainArgs(micro_batch_size=2), DeepSpeedArgs(zero_stage=1))

    assert config["train_micro_batch_size_per_gpu"] == 2
    assert config["fp16"] == {"enabled": False}


def test_missing_template_is_an_error_naming_it(deepspeed_templates):
    templates = {k: v for k, v in deepspeed_templates.items() if k != "zero3"}

    with pytest.raises(ValueError, match="zero3"):
        build_deepspeed_config(templates, TrainArgs(), DeepSpeedArgs(zero_stage=3))


def test_template_declaring_another_stage_is_an_error():
    templates = {"zero2": {"zero_optimization": {"stage": 3}}}

    with pytest.raises(ValueError, match="stage 3, expected 2"):
        build_deepspeed_config(templates, TrainArgs(), DeepSpeedArgs(zero_stage=2))


def test_auto_without_a_source_is_an_error():
    templates = {"zero2": {"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}}}

    with pytest.raises(ValueError, match="no automatic source"):
        build_deepspeed_config(templates, TrainArgs(), DeepSpeedArgs(zero_stage=2))


def test_overrides_are_merged_deeply_over_the_filled_template(deepspeed_templates):
    ds = DeepSpeedArgs(zero_stage=2, overrides={"zero_optimization": {"overlap_comm": True},
                                                "steps_per_print": 10, "gradient_clipping": 2.0})

    config = build_deepspeed_config(deepspeed_templates, TrainArgs(grad_clip=1.0), ds)

    zero = config["zero_optimization"]
    assert zero["overlap_comm"] is True
    assert zero["stage"] == 2
    assert zero["contiguous_gradients"] == deepspeed_templates["zero2"]["zero_optimization"]["contiguous_gradients"]
    assert config["steps_per_print"] == 10
    assert config["gradient_clipping"] == 2.0


@pytest.mark.parametrize("stage, optimizer, param", [(1, "cpu", "none"), (2, "cpu", "none"), (3, "cpu", "cpu"),
                                                     (3, "none", "cpu")])
def test_offload_from_params_lands_in_zero_optimization(deepspeed_templates, stage, optimizer, param):
    from lmforge.training.deepspeed_config import offloads_optimizer

    ds = DeepSpeedArgs(zero_stage=stage, offload_optimizer=optimizer, offload_param=param, offload_pin_memory=False)
    zero = build_deepspeed_config(deepspeed_templates, TrainArgs(), ds)["zero_optimization"]

    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == (optimizer == "cpu")
    assert ("offload_param" in zero) == (param == "cpu")
    for key in ("offload_optimizer", "offload_param"):
        if key in zero:
            assert zero[key] == {"device": "cpu", "pin_memory": False}
    assert offloads_optimizer({"zero_optimization": zero}) == (optimizer == "cpu")


def test_default_config_offloads_nothing(deepspeed_templates):
    from lmforge.training.deepspeed_config import offloads_optimizer

    config = build_deepspeed_config(deepspeed_templates, TrainArgs(), DeepSpeedArgs(zero_stage=2))
    assert not {"offload_optimizer", "offload_param"} & set(config["zero_optimization"])
    assert not offloads_optimizer(config)


@pytest.mark.parametrize("kwargs, match", [
    ({"zero_stage": 0, "offload_optimizer": "cpu"}, "offload_optimizer needs zero_stage 1, 2 or 3"),
    ({"zero_stage": 2, "offload_param": "cpu"}, "offload_param needs zero_stage 3"),
    ({"zero_stage": 3, "offload_param": "gpu"}, "must be 'none' or 'cpu'"),
])
def test_impossible_offload_settings_are_refused_with_what_to_set(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepSpeedArgs(**kwargs)


@pytest.mark.parametrize("stage, world_size, expected", [(0, 1, False), (0, 2, True), (1, 1, True), (2, 1, True),
                                                          (3, 1, True), (2, 2, True)])
def test_gradient_allreduce_is_skipped_only_for_one_process_without_zero(deepspeed_templates, stage, world_size,
                                                                          expected):
    from lmforge.training.deepspeed_config import needs_gradient_allreduce

    config = build_deepspeed_config(deepspeed_templates, TrainArgs(), DeepSpeedArgs(zero_stage=stage))
    assert needs_gradient_allreduce(config, world_size) is expected
