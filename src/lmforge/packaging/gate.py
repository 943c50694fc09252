"""The quality gate: typed bounds on the flat evaluation metrics, checked before a model is packaged or registered.

``gate: {metric: {min: x, max: y}}`` (a top-level key of ``conf/base/parameters_evaluation.yml``, so that
changing a threshold reruns only packaging) is parsed once, at the packaging node, into
``{metric: GateBound}`` by `parse_gate`: a typo in a bound (``mx:``) is rejected with its dotted path.
`check_gate` compares the bounds with the evaluation metrics (``sft_pairs.perplexity_ratio``,
``sft.heldout.perplexity``...); a model outside a bound is refused with the metric, its observed value
and the bound.

Its own module because both `lmforge.packaging.release` (which enforces the gate before packaging) and
`lmforge.packaging.registry` (which refuses to register a model that failed it, and tags the version with
the report) need these types; neither imports the other.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

GATE_HINT = "thresholds: `gate:` in conf/base/parameters_evaluation.yml"
"""Where a refused model's user changes the bounds (appended to every gate error)."""


class GateError(RuntimeError):
    """The model fails the quality gate: it must not be registered."""


@dataclass(frozen=True)
class GateBound:
    """The bounds of one evaluation metric; at least one is set. Both are inclusive."""

    min: float | None = None
    """The metric must be >= this (None: no lower bound)."""
    max: float | None = None
    """The metric must be <= this (None: no upper bound)."""

    def limits(self) -> list[tuple[str, float]]:
        """``[("min", x), ("max", y)]`` for the bounds that are set, lower first."""
        return [(name, float(value)) for name, value in (("min", self.min), ("max", self.max)) if value is not None]


DEFAULT_GATE = {
    "sft_pairs.perplexity_ratio": GateBound(max=1.0),
    "heldout.perplexity_ratio": GateBound(max=3.0),
    "sft.sft_pairs.perplexity": GateBound(min=1.0),
}
"""The shipped gate (what ``gate:`` in parameters_evaluation.yml says; a test keeps the two equal)."""


def parse_gate(mapping: Mapping[str, Any] | None, *, path: str = "gate") -> dict[str, GateBound]:
    """``{metric: GateBound}`` from the YAML's ``{metric: {min|max: value}}``; None or ``{}`` is no gate.

    Raises ValueError for anything but a mapping with ``min`` and/or ``max`` per metric, naming the
    offending key by its dotted path (``gate.sft.heldout.perplexity.mx``).
    """
    from lmforge.config import build_dataclass

    gate: dict[str, GateBound] = {}
    for metric, bounds in (mapping or {}).items():
        where = f"{path}.{metric}"
        if not isinstance(bounds, Mapping) or not bounds:
            raise ValueError(f"{where} must be a mapping with 'min' and/or 'max', got {bounds!r}")
        try:
            bound = build_dataclass(GateBound, bounds, path=where)
        except ValueError as err:
            raise ValueError(f"{where} must be a mapping with 'min' and/or 'max': {err}") from None
        if not bound.limits():
            raise ValueError(f"{where} must set 'min' and/or 'max', got {bounds!r}")
        gate[str(metric)] = bound
    return gate


@dataclass(frozen=True)
class GateCheck:
    """One bound of the quality gate and how the model did against it."""

    metric: str
    bound: str
    """``"min"`` (observed must be >= limit) or ``"max"`` (observed must be <= limit)."""
    limit: float
    observed: float
    passed: bool

    def describe(self) -> str:
        op = ">=" if self.bound == "min" else "<="
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.metric} = {self.observed:.6g} (required {op} {self.limit:g}): {verdict}"


def check_gate(metrics: Mapping[str, Any], gate: Mapping[str, GateBound]) -> list[GateCheck]:
    """Evaluate every bound of ``gate`` (see `parse_gate`) against the flat evaluation ``metrics``.

    Raises ValueError for a metric name the metrics do not have (the message lists the available
    names). A NaN observation fails its bound.
    """
    checks: list[GateCheck] = []
    for metric, bound in gate.items():
        if metric not in metrics:
            raise ValueError(f"gate: unknown metric {metric!r}; the evaluation metrics are: "
                             f"{', '.join(sorted(metrics))} (fix `gate:` in conf/base/parameters_evaluation.yml)")
        observed = float(metrics[metric])
        for name, limit in bound.limits():
            ok = not math.isnan(observed) and (observed >= limit if name == "min" else observed <= limit)
            checks.append(GateCheck(metric, name, limit, observed, ok))
    return checks


def gate_for_model(gate: Mapping[str, GateBound], metrics: Mapping[str, Any], model: str) -> dict[str, GateBound]:
    """The bounds as they apply to the packaged ``model`` (``"sft"`` or ``"aligned"``, ``resolve_chat_model``).

    The shipped bounds are written for the SFT model: its own numbers (``sft.<metric>``) and its
    comparisons with base (``sft_pairs.perplexity_ratio``). For the aligned model the same bound checks
    the aligned model's number (``aligned.<metric>``) and its comparison with base
    (``aligned_vs_base.<metric>``, when evaluation wrote it); bounds on anything else are kept as they are.
    """
    if model == "sft":
        return dict(gate)
    renamed = {}
    for metric, bound in gate.items():
        if metric.startswith("sft."):
            metric = f"{model}.{metric.removeprefix('sft.')}"
        elif f"{model}_vs_base.{metric}" in metrics:
            metric = f"{model}_vs_base.{metric}"
        renamed[metric] = bound
    return renamed


def enforce_gate(checks: Sequence[GateCheck]) -> None:
    """Raise `GateError` naming every failed bound (metric, observed value, bound)."""
    failed = [c for c in checks if not c.passed]
    for check in checks:
        logger.info("gate: %s", check.describe())
    if failed:
        raise GateError("model refused by the quality gate: " + "; ".join(c.describe() for c in failed)
                        + f" ({GATE_HINT})")
