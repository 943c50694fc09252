"""Packaging round trip: the package loads with Auto classes, matches the source, and is atomic."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from lmforge.packaging.export import (
    ModelCardInfo,
    PackageVerificationError,
    package_model,
    verify_package,
)

CARD = ModelCardInfo(
    model_name="tiny-chat",
    preset="debug",
    parameter_counts={"total": 20_000},
    base_model="runs/pretrain-abc",
    training={"sft.lr": 2e-5, "sft.epochs": 2},
    data={"records": 12, "tokens": 3456, "hashes": {"train": "d41d8cd98f00b204"}},
    evaluation={"sft.sft_pairs.perplexity": 12.5, "sft_pairs.perplexity_ratio": 0.42},
    git_commit="0123abcd4567",
    hardware="2 CPU cores",
)


@pytest.fixture(scope="module")
def package_dir(tiny_model_dir, tiny_tokenizer_dir, tmp_path_factory):
    return package_model(tiny_model_dir, tiny_tokenizer_dir, tmp_path_factory.mktemp("pkg") / "tiny-chat", card=CARD)


def test_package_is_self_contained_and_matches_source(package_dir, tiny_model_dir, tiny_tokenizer_dir):
    names = {path.name for path in package_dir.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= names
    assert not any(p.name.startswith(".") for p in package_dir.parent.iterdir())  # no staging left

    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    packaged = AutoModelForCausalLM.from_pretrained(package_dir, local_files_only=True)
    inputs = torch.tensor([[0, 3, 17, 42, 99, 4, 3, 250]])
    with torch.no_grad():
        expected, actual = source(inputs).logits, packaged(inputs).logits
    assert packaged.dtype == torch.float32
    assert torch.allclose(actual, expected, atol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(package_dir, local_files_only=True)
    source_tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = "def add(a, b):\n    return a + b"
    assert tokenizer(text)["input_ids"] == source_tokenizer(text)["input_ids"]
    assert tokenizer.chat_template == source_tokenizer.chat_template


def test_generation_config_ids_follow_the_tokenizer(package_dir):
    config = json.loads((package_dir / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(package_dir, local_files_only=True)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert config["eos_token_id"] == [tokenizer.eos_token_id, im_end]
    assert config["bos_token_id"] == tokenizer.bos_token_id
    assert config["pad_token_id"] == tokenizer.pad_token_id
    model_config = json.loads((package_dir / "config.json").read_text())
    assert model_config["eos_token_id"] == config["eos_token_id"]


def test_packaged_model_stops_at_end_of_turn_by_default(package_dir):
    model = AutoModelForCausalLM.from_pretrained(package_dir, local_files_only=True)
    im_end = AutoTokenizer.from_pretrained(package_dir).convert_tokens_to_ids("<|im_end|>")

    def boost(module, inputs, logits):
        logits = logits.clone()
        logits[..., im_end] += 1e4
        return logits

    model.lm_head.register_forward_hook(boost)
    output = model.generate(torch.tensor([[0, 3, 17, 4]]), max_new_tokens=5)  # no eos/pad passed
    assert output[0].tolist() == [0, 3, 17, 4, im_end]


def test_verify_package_generates(package_dir):
    result = verify_package(package_dir, max_new_tokens=4)
    assert result["loads"] is True
    assert 1 <= result["generated_tokens"] <= 4
    assert isinstance(result["sample"], str)


def test_card_mentions_commit_metrics_and_hashes(package_dir):
    card = (package_dir / "README.md").read_text()
    assert "0123abcd4567" in card
    assert "sft.sft_pairs.perplexity | 12.5" in card
    assert "d41d8cd98f00b204" in card


def test_card_usage_snippet_runs_against_the_package(package_dir, capsys):
    card = (package_dir / "README.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)
    snippet = snippet.replace('"tiny-chat"', repr(str(package_dir))).replace("max_new_tokens=64", "max_new_tokens=3")
    exec(compile(snippet, "model-card-snippet", "exec"), {})
    capsys.readouterr()


def test_failure_mid_write_keeps_previous_package(package_dir, tiny_model_dir, tiny_tokenizer_dir, monkeypatch):
    before = {p.name: p.read_bytes() for p in package_dir.iterdir()}

    def save_then_crash(self, save_directory, *args, **kwargs):
        (save_directory / "model.safetensors").write_bytes(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_then_crash)
    new_card = ModelCardInfo(model_name="tiny-chat", git_commit="ffffffff")
    with pytest.raises(OSError, match="disk full"):
        package_model(tiny_model_dir, tiny_tokenizer_dir, package_dir, card=new_card)

    assert {p.name: p.read_bytes() for p in package_dir.iterdir()} == before
    assert not any(p.name.startswith(".") for p in package_dir.parent.iterdir())


def test_repackaging_replaces_the_previous_package(tiny_model_dir, tiny_tokenizer_dir, tmp_path):
    out = tmp_path / "pkg"
    package_model(tiny_model_dir, tiny_tokenizer_dir, out, card=CARD)
    (out / "stale.txt").write_text("from an older package")
    package_model(tiny_model_dir, tiny_tokenizer_dir, out, card=ModelCardInfo("tiny-chat", git_commit="feedbeef"))
    assert not (out / "stale.txt").exists()
    assert "feedbeef" in (out / "README.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_package_refuses_bad_inputs(tiny_model_dir, tiny_tokenizer_dir, tmp_path, build_model):
    with pytest.raises(FileNotFoundError, match="missing_model"):
        package_model(tmp_path / "missing_model", tiny_tokenizer_dir, tmp_path / "out", card=CARD)
    with pytest.raises(ValueError, match="must differ"):
        package_model(tiny_model_dir, tiny_tokenizer_dir, tiny_model_dir, card=CARD)

    small_model = build_model(tmp_path / "small", vocab_size=100)
    with pytest.raises(ValueError, match="embeds only 100"):
        package_model(small_model, tiny_tokenizer_dir, tmp_path / "out", card=CARD)
    assert not (tmp_path / "out").exists()


def test_verify_package_raises_when_it_cannot_load(tmp_path):
    with pytest.raises(FileNotFoundError):
        verify_package(tmp_path / "absent")
    (tmp_path / "README.md").write_text("not a model")
    with pytest.raises(PackageVerificationError, match="does not load"):
        verify_package(tmp_path)
