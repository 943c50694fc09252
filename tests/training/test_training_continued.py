"""Continued pretraining's own parts, without a training job: its schedule, the checks before the job and
what the checkpoint gets after it (the job itself: tests/pipelines/test_pipeline_pretrain.py, slow)."""

from __future__ import annotations

import json
import shutil

import pytest
from foreign_models import build_foreign_model

from lmforge.config import build_dataclass, config_to_dict
from lmforge.training.continued import check_continued_start, finish_continued_checkpoint
from lmforge.training.pretrain_config import PretrainConfig


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return build_foreign_model("qwen2", tmp_path_factory.mktemp("qwen2") / "model")


def test_a_base_model_trains_with_the_continued_schedule_not_the_scratch_one():
    scratch = PretrainConfig(run_dir="r")
    continued = build_dataclass(PretrainConfig, {"run_dir": "r", "base_model": "/m", "train": {"max_steps": 200}},
                                path="pretrain")

    assert (scratch.train.lr, scratch.train.warmup_steps) == (3e-3, 10)
    assert (continued.train.lr, continued.train.warmup_steps, continued.train.min_lr_ratio) == (2e-5, 6, 0.1)
    # what is logged and handed to the job is the schedule that runs; rebuilding it changes nothing
    assert build_dataclass(PretrainConfig, config_to_dict(continued), path="pretrain") == continued
    assert build_dataclass(PretrainConfig, {"run_dir": "r", "base_model": "/m", "train": {"max_steps": 10}},
                           path="pretrain").train.warmup_steps == 1  # at least one step
    with pytest.raises(ValueError, match=r"pretrain\.continued"):
        build_dataclass(PretrainConfig, {"run_dir": "r", "continued": {"warmup_ratio": 1.5}}, path="pretrain")


def test_shards_of_another_tokenizer_are_refused(qwen2, tmp_path):
    from lmforge.tokenizer.hf_encoder import build_model_token_shards_dir

    gemma = build_foreign_model("gemma", tmp_path / "gemma")
    build_model_token_shards_dir({"train": ["some text " * 20]}, gemma, tmp_path / "shards", seq_len=8,
                                 blocks_per_shard=4)

    with pytest.raises(ValueError, match="re-tokenize"):
        check_continued_start(str(qwen2), str(tmp_path / "shards"), trust_remote_code=False)


def test_the_checkpoint_gets_the_base_models_tokenizer_template_and_generation_config(qwen2, tmp_path):
    from transformers import AutoTokenizer

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    checkpoint = tmp_path / "export"  # what the workers export: weights and config only
    checkpoint.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(qwen2 / name, checkpoint / name)

    saved = finish_continued_checkpoint(checkpoint, qwen2, trust_remote_code=False)

    base, chat = ChatTokenizer.load(qwen2), ChatTokenizer.load(checkpoint)
    assert chat.template == base.template and saved["chat_template_sha256"] == base.template_sha256
    assert saved["end_of_turn"] == "<|im_end|>"
    assert AutoTokenizer.from_pretrained(str(checkpoint)).get_vocab() == base.tokenizer.get_vocab()
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    assert generation == json.loads((qwen2 / "generation_config.json").read_text())


def test_a_tokenizer_without_template_is_saved_as_it_is(tmp_path):
    from transformers import AutoTokenizer

    bloom = build_foreign_model("bloom", tmp_path / "bloom")
    (bloom / "generation_config.json").unlink()  # then it comes from config.json
    checkpoint = tmp_path / "export"
    checkpoint.mkdir()

    saved = finish_continued_checkpoint(checkpoint, bloom, trust_remote_code=False)

    assert saved == {"chat_template_sha256": None, "end_of_turn": None}
    assert not AutoTokenizer.from_pretrained(str(checkpoint)).chat_template
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    config = json.loads((bloom / "config.json").read_text())
    assert (generation["eos_token_id"], generation["bos_token_id"]) == (config["eos_token_id"], config["bos_token_id"])


def test_the_job_fingerprint_holds_the_base_models_identity(qwen2, tmp_path):
    """A checkpoint of a run from one base model is never resumed by a run from another (or a changed one)."""
    from lmforge.training.checkpoints import fingerprint_job
    from lmforge.training.config import JobData, JobModel, JobSpec, TrainArgs

    other = tmp_path / "other"
    shutil.copytree(qwen2, other)

    def fingerprint(base) -> str:
        spec = JobSpec(kind="pretrain", model=JobModel(attn_implementation="sdpa"), init_from=str(base),
                       data=JobData(), train=TrainArgs(), deepspeed={}, output_dir="o", run_dir="r",
                       metric_prefix="pretrain")
        return fingerprint_job(spec)

    assert fingerprint(other) == fingerprint(qwen2)  # the content counts, not the path
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint(other) != fingerprint(qwen2)


def test_a_scratch_value_set_with_a_base_model_is_named_as_ignored(caplog):
    with caplog.at_level("WARNING"):
        config = build_dataclass(PretrainConfig, {"run_dir": "r", "base_model": "/m", "train": {"lr": 1e-4}},
                                 path="pretrain")

    assert config.train.lr == 2e-5
    assert "train.lr=0.0001 ignored" in caplog.text and "pretrain.continued" in caplog.text
