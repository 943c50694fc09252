"""The tokenizer stage's one typed config: the YAML shows the dataclass defaults, typos are rejected."""

from pathlib import Path

import pytest

from lmforge.config import build_dataclass, default_mismatches
from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.config import TokenizerConfig, TokenShardArgs
from lmforge.tokenizer.train import TokenizerTrainArgs

PARAMS = Path(__file__).resolve().parents[2] / "conf/base/parameters_tokenizer.yml"


def yaml_params() -> dict:
    """The YAML as Kedro resolves it (``executor: ${globals:executor}`` from conf/base/globals.yml)."""
    from kedro.config import OmegaConfigLoader

    return OmegaConfigLoader(str(PARAMS.parent.parent), base_env="base", default_run_env="base")["parameters"]["tokenizer"]


def test_yaml_and_dataclass_defaults_agree():
    assert default_mismatches(TokenizerConfig, yaml_params(), path="tokenizer") == []


def test_yaml_builds_the_default_config_with_the_one_chat_template():
    config = build_dataclass(TokenizerConfig, yaml_params(), path="tokenizer")

    assert config == TokenizerConfig()
    assert config.chat_template == DEFAULT_CHAT_TEMPLATE


def test_nested_args_are_typed_and_typos_named_by_path():
    config = build_dataclass(TokenizerConfig, {"train": {"vocab_size": 512}, "shards": {"seq_len": 8}}, path="tokenizer")

    assert config.train == TokenizerTrainArgs(vocab_size=512)
    assert config.shards == TokenShardArgs(seq_len=8)
    with pytest.raises(ValueError, match=r"tokenizer\.shards\.seqlen\b"):
        build_dataclass(TokenizerConfig, {"shards": {"seqlen": 8}}, path="tokenizer")
    with pytest.raises(ValueError, match="model_type must be one of"):
        build_dataclass(TokenizerConfig, {"train": {"model_type": "wordpiece"}}, path="tokenizer")
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        TokenShardArgs(validation_fraction=1.0)
