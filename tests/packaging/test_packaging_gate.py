"""Quality gate: bounds on the flat evaluation metrics; failures name metric, observed value and bound."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from lmforge.packaging.config import PackagingConfig
from lmforge.packaging.gate import DEFAULT_GATE, GateBound, GateError, check_gate, enforce_gate, parse_gate

METRICS = {"sft_pairs.perplexity_ratio": 0.70, "heldout.perplexity_ratio": 1.19, "sft.heldout.perplexity": 209.6,
           "sft.humaneval.pass_at_1": 0.0}


def test_passing_bounds():
    checks = check_gate(METRICS, parse_gate({"sft_pairs.perplexity_ratio": {"max": 1.0},
                                             "sft.heldout.perplexity": {"min": 1.0, "max": 1000}}))
    assert [(c.metric, c.bound, c.passed) for c in checks] == [
        ("sft_pairs.perplexity_ratio", "max", True), ("sft.heldout.perplexity", "min", True),
        ("sft.heldout.perplexity", "max", True)]
    enforce_gate(checks)  # no error


def test_failure_names_metric_value_and_bound():
    checks = check_gate(METRICS, parse_gate({"sft_pairs.perplexity_ratio": {"max": 0.5},
                                             "sft.humaneval.pass_at_1": {"min": 0.0}}))
    assert [c.passed for c in checks] == [False, True]
    with pytest.raises(GateError, match=r"sft_pairs\.perplexity_ratio = 0\.7 \(required <= 0\.5\): FAILED") as err:
        enforce_gate(checks)
    assert "pass_at_1" not in str(err.value)


def test_nan_fails_and_bounds_are_inclusive():
    checks = check_gate({**METRICS, "x": math.nan},
                        parse_gate({"x": {"min": 0}, "heldout.perplexity_ratio": {"max": 1.19}}))
    assert [c.passed for c in checks] == [False, True]


@pytest.mark.parametrize(("gate", "message"), [
    ({"sft.heldout.perplexty": {"max": 1}}, r"unknown metric 'sft\.heldout\.perplexty'.*sft\.heldout\.perplexity"),
    ({"sft.heldout.perplexity": {"below": 1}}, r"'min' and/or 'max'"),
    ({"sft.heldout.perplexity": 3.0}, r"'min' and/or 'max'"),
])
def test_config_errors(gate, message):
    with pytest.raises(ValueError, match=message):
        check_gate(METRICS, parse_gate(gate))


def test_default_gate_passes_on_the_default_chain_metrics(project_root: Path):
    """The shipped thresholds hold for what the default tiny chain measures (SFT fits instructions better)."""
    gate = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["gate"]
    assert "sft_pairs.perplexity_ratio" in gate
    # figures of the default tiny chain (data/08_reporting/evaluation.json of a `make run` on 2 CPU cores)
    chain = {"base.sft_pairs.perplexity": 265.8, "sft.sft_pairs.perplexity": 186.7, "sft_pairs.perplexity_ratio": 0.702,
             "base.heldout.perplexity": 175.4, "sft.heldout.perplexity": 209.6, "heldout.perplexity_ratio": 1.195}
    checks = check_gate(chain, parse_gate(gate))
    assert checks and all(c.passed for c in checks)
    worse = {**chain, "sft_pairs.perplexity_ratio": 1.05}  # SFT no better than base on instructions
    assert not all(c.passed for c in check_gate(worse, parse_gate(gate)))


def test_gate_is_typed_and_a_misspelt_bound_is_named_by_its_dotted_path():
    assert parse_gate({"sft.heldout.perplexity": {"min": 1, "max": 2.5}}) == {
        "sft.heldout.perplexity": GateBound(min=1, max=2.5)}
    assert parse_gate(None) == {} and parse_gate({}) == {}
    with pytest.raises(ValueError, match=r"gate\.sft\.heldout\.perplexity\.mx"):
        parse_gate({"sft.heldout.perplexity": {"mx": 3}})
    with pytest.raises(ValueError, match=r"gate\.x must set 'min' and/or 'max'"):
        parse_gate({"x": {"min": None}})


def test_shipped_gate_equals_the_dataclass_default(project_root: Path):
    """``gate:`` in parameters_evaluation.yml and DEFAULT_GATE (PackagingConfig().gate) say the same thing."""
    gate = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["gate"]
    assert parse_gate(gate) == DEFAULT_GATE == PackagingConfig().gate


def test_packaging_records_each_bound_of_the_decision():
    """packaging.json holds every bound's value, limit and outcome: the evaluation report points there."""
    from lmforge.packaging.gate import GateBound, check_gate
    from lmforge.packaging.release import gate_record

    checks = check_gate({"heldout.perplexity_ratio": 1.13, "sft.sft_pairs.perplexity": 0.5},
                        {"heldout.perplexity_ratio": GateBound(max=2.0), "sft.sft_pairs.perplexity": GateBound(min=1.0)})
    assert gate_record(checks) == {
        "gate.heldout.perplexity_ratio.max.value": 1.13, "gate.heldout.perplexity_ratio.max.limit": 2.0,
        "gate.heldout.perplexity_ratio.max.passed": 1.0,
        "gate.sft.sft_pairs.perplexity.min.value": 0.5, "gate.sft.sft_pairs.perplexity.min.limit": 1.0,
        "gate.sft.sft_pairs.perplexity.min.passed": 0.0}


def test_the_shipped_bounds_check_the_aligned_model_when_it_is_the_one_packaged():
    from lmforge.packaging.gate import gate_for_model

    metrics = {"sft.sft_pairs.perplexity": 80.0, "sft_pairs.perplexity_ratio": 0.8, "heldout.perplexity_ratio": 1.1,
               "aligned.sft_pairs.perplexity": 70.0, "aligned_vs_base.sft_pairs.perplexity_ratio": 0.7}
    gate = {**DEFAULT_GATE, "base.heldout.perplexity": GateBound(max=1e6)}
    assert gate_for_model(gate, metrics, "sft") == gate
    aligned = gate_for_model(gate, metrics, "aligned")
    assert list(aligned) == ["aligned_vs_base.sft_pairs.perplexity_ratio",
                             "heldout.perplexity_ratio",  # evaluation wrote no aligned_vs_base one: kept as it is
                             "aligned.sft_pairs.perplexity", "base.heldout.perplexity"]
    assert list(aligned.values()) == list(gate.values())
