"""The one config builder and its inverses: typos rejected, round trips exact, YAML drift caught."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lmforge.config import build_dataclass, config_to_dict, default_mismatches, flatten_config


@dataclass
class Inner:
    # Learning rate.
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    tags: list[str] = field(default_factory=list)


def test_build_dataclass_recurses_by_annotation_and_names_typos_by_path():
    cfg = build_dataclass(Outer, {"name": "x", "inner": {"lr": 0.5}, "maybe": {"betas": [0.8, 0.9]}}, path="stage")

    assert cfg.inner == Inner(lr=0.5)
    assert isinstance(cfg.maybe, Inner) and list(cfg.maybe.betas) == [0.8, 0.9]
    with pytest.raises(ValueError, match=r"stage\.maybe\.l\b"):
        build_dataclass(Outer, {"name": "x", "maybe": {"l": 1}}, path="stage")


def test_config_to_dict_round_trips_through_build_dataclass():
    cfg = Outer(name="a", inner=Inner(lr=2.0, betas=(0.1, 0.2)), maybe=Inner(), tags=["t"])

    plain = config_to_dict(cfg)

    assert plain["inner"] == {"lr": 2.0, "betas": [0.1, 0.2]}
    rebuilt = build_dataclass(Outer, plain, path="x")
    assert config_to_dict(rebuilt) == plain


def test_flatten_config_gives_every_resolved_leaf_as_a_string():
    flat = flatten_config(Outer(name="a", tags=["t", "u"]), "stage")

    assert flat == {"stage.name": "a", "stage.inner.lr": "0.001", "stage.inner.betas": "[0.9, 0.95]",
                    "stage.maybe": "null", "stage.tags": '["t", "u"]'}


def test_default_mismatches_reports_drifted_and_unknown_leaves_only():
    yaml_section = {"inner": {"lr": 0.001, "betas": [0.9, 0.99]}, "tags": [], "bogus": 1, "name": "given"}

    problems = default_mismatches(Outer, yaml_section, path="stage")

    assert len(problems) == 2
    assert any(p.startswith("stage.inner.betas:") for p in problems)
    assert any(p.startswith("stage.bogus:") for p in problems)
