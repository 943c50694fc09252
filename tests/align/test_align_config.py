"""AlignConfig (the YAML shows its defaults; typos refused) and resolve_chat_model: the one rule for which model
evaluation's third column, the gate and packaging take."""

from __future__ import annotations

import pytest

from lmforge.align.chat_model import DISABLED_MARKER, resolve_chat_model


def test_an_align_checkpoint_with_a_model_is_the_chat_model(tmp_path):
    (tmp_path / "align").mkdir()
    (tmp_path / "align/config.json").write_text("{}")
    assert resolve_chat_model(str(tmp_path / "align"), str(tmp_path / "sft")) == (str(tmp_path / "align"), "aligned")


def test_the_disabled_marker_alone_means_the_sft_model(tmp_path):
    (tmp_path / "align").mkdir()
    (tmp_path / "align" / DISABLED_MARKER).write_text("align.enabled is false")
    assert resolve_chat_model(str(tmp_path / "align"), str(tmp_path / "sft")) == (str(tmp_path / "sft"), "sft")


def test_a_missing_align_output_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"kedro run --pipeline align"):
        resolve_chat_model(str(tmp_path / "absent"), str(tmp_path / "sft"))


def test_a_directory_with_neither_is_refused(tmp_path):
    (tmp_path / "align").mkdir()
    with pytest.raises(ValueError, match=DISABLED_MARKER):
        resolve_chat_model(str(tmp_path / "align"), str(tmp_path / "sft"))


def test_shipped_yaml_equals_the_dataclass_defaults(project_root):
    """conf/base/parameters_align.yml shows AlignConfig's defaults, field by field, and nothing else."""
    import yaml

    from lmforge.align.config import AlignConfig
    from lmforge.config import build_dataclass, default_mismatches

    params = yaml.safe_load((project_root / "conf/base/parameters_align.yml").read_text())["align"]
    assert default_mismatches(AlignConfig, params, path="align") == []
    assert build_dataclass(AlignConfig, params, path="align") == AlignConfig(run_dir=params["run_dir"])


def test_typos_and_bad_values_are_refused():
    from lmforge.align.config import AlignConfig
    from lmforge.config import build_dataclass

    with pytest.raises(ValueError, match=r"align\.on_policy\.round\b"):
        build_dataclass(AlignConfig, {"run_dir": "r", "on_policy": {"round": 2}}, path="align")
    with pytest.raises(ValueError, match="method"):
        build_dataclass(AlignConfig, {"run_dir": "r", "loss": {"method": "kto"}}, path="align")
    with pytest.raises(ValueError, match="max_prompt_length"):
        AlignConfig(run_dir="r", max_length=64, max_prompt_length=64)
    config = build_dataclass(AlignConfig, {"run_dir": "r", "sources": [{"name": "hh", "path": "x.jsonl"}]},
                             path="align")
    assert config.sources[0].name == "hh" and config.sources[0].format == "auto"
