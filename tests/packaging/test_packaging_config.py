"""PackagingConfig: built once from params:packaging + params:gate, typos rejected, defaults equal to the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmforge.config import default_mismatches
from lmforge.packaging.config import EngineConfig, PackagingConfig, RegistryConfig, build_packaging_config
from lmforge.packaging.gate import GateBound


def _yaml(project_root: Path, name: str) -> dict:
    return yaml.safe_load((project_root / "conf/base" / name).read_text())


def test_dataclass_defaults_equal_the_yaml(project_root: Path):
    assert default_mismatches(PackagingConfig, _yaml(project_root, "parameters_packaging.yml")["packaging"],
                              path="packaging") == []


def test_build_from_the_shipped_yaml(project_root: Path):
    config = build_packaging_config(_yaml(project_root, "parameters_packaging.yml")["packaging"],
                                    _yaml(project_root, "parameters_evaluation.yml")["gate"])
    assert isinstance(config.registry, RegistryConfig)
    assert config.gate["sft_pairs.perplexity_ratio"] == GateBound(max=1.0)
    assert config == PackagingConfig()
    # one name: the registered model is the package's unless registry.model_name says otherwise (as today)
    assert config.registered_model_name == config.model_name == "lmforge-chat-tiny"
    assert build_packaging_config({"registry": {"model_name": "other"}}, {}).registered_model_name == "other"


@pytest.mark.parametrize(("params", "gate", "message"), [
    ({"model_nme": "x"}, {}, r"packaging\.model_nme"),
    ({"registry": {"promte": False}}, {}, r"packaging\.registry\.promte"),
    ({"engine": {"n_token": 3}}, {}, r"packaging\.engine\.n_token"),
    ({"engine": {"ollama_format": "q2_k"}}, {}, r"packaging\.engine\.ollama_format: 'q2_k' is not one of"),
    ({}, {"sft_pairs.perplexity_ratio": {"maximum": 1.0}}, r"gate\.sft_pairs\.perplexity_ratio\.maximum"),
    ({"gate": {}}, {}, r"packaging\.gate: the quality gate is `gate:` in conf/base/parameters_evaluation\.yml"),
])
def test_typos_are_rejected_by_dotted_path(params, gate, message):
    with pytest.raises(ValueError, match=message):
        build_packaging_config(params, gate)


def test_no_untyped_fields():
    from dataclasses import fields
    from typing import get_type_hints

    for cls in (PackagingConfig, RegistryConfig, EngineConfig, GateBound):
        hints = get_type_hints(cls)
        assert all("Any" not in str(hints[f.name]) for f in fields(cls)), cls
