"""The data-processing stage's one typed config: the YAML shows the dataclass defaults, typos are rejected."""

from pathlib import Path

import pytest

from lmforge.config import build_dataclass, default_mismatches
from lmforge.data.decontamination import EvalSetSpec
from lmforge.data.ingest import SourceConfig
from lmforge.data.process import DataProcessingConfig

PARAMS = Path(__file__).resolve().parents[2] / "conf/base/parameters_data_processing.yml"


def yaml_params() -> dict:
    """The YAML as Kedro resolves it (``executor: ${globals:executor}`` from conf/base/globals.yml)."""
    from kedro.config import OmegaConfigLoader

    return OmegaConfigLoader(str(PARAMS.parent.parent), base_env="base", default_run_env="base")["parameters"]["data_processing"]


def test_yaml_and_dataclass_defaults_agree():
    assert default_mismatches(DataProcessingConfig, yaml_params(), path="data_processing") == []


def test_yaml_builds_the_default_config():
    assert build_dataclass(DataProcessingConfig, yaml_params(), path="data_processing") == DataProcessingConfig()


def test_sources_and_eval_sets_become_typed_specs():
    config = DataProcessingConfig.from_dict({
        "sources": [{"name": "ext", "format": "jsonl", "path": "x.jsonl"}],
        "decontamination": {"eval_sets": ["humaneval", {"path": "qa.jsonl", "text_fields": ["q", "a"]}]},
    })

    assert config.sources == [SourceConfig(name="ext", format="jsonl", path="x.jsonl")]
    assert config.decontamination.eval_sets == ["humaneval", EvalSetSpec(path="qa.jsonl", text_fields=["q", "a"])]


def test_typos_are_named_by_their_path():
    with pytest.raises(ValueError, match=r"data_processing\.sources\[ext\]\.pth"):
        DataProcessingConfig.from_dict({"sources": [{"name": "ext", "format": "jsonl", "pth": "x"}]})
    with pytest.raises(ValueError, match=r"data_processing\.cleaning\.min_char\b"):
        DataProcessingConfig.from_dict({"cleaning": {"min_char": 1}})
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        DataProcessingConfig(shard_size=0)


def test_the_stdlib_env_replaces_the_sources_and_keeps_the_rest():
    """`kedro run --env stdlib`: the stdlib-only corpus (no package to fetch), every other key from conf/base."""
    from kedro.config import OmegaConfigLoader

    from lmforge.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(PARAMS.parents[1]), env="stdlib", **{
        k: v for k, v in CONFIG_LOADER_ARGS.items() if k in ("base_env", "merge_strategy", "config_patterns")})
    params = loader["parameters"]["data_processing"]
    config = build_dataclass(DataProcessingConfig, params, path="data_processing")

    assert [(s.name, s.package, s.max_bytes) for s in config.sources] == [("python-stdlib", None, None)]
    assert config.fetch.extra_packages == [] and config.cleaning.allowed_languages == ["en"]
    assert config.near_dedup == DataProcessingConfig().near_dedup and config.shard_size == yaml_params()["shard_size"]
