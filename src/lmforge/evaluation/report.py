"""Flatten base-vs-SFT evaluation results into stable metric names and add comparisons.

MLflow compares runs by metric name, so these names are an interface: change them only on purpose.

Input: for each model, a dict ``{split: {metric: value}}``, typically
``{"heldout": evaluate_lm_perplexity(...), "sft_pairs": evaluate_masked_perplexity(...)}``.
Deeper nesting is flattened with dots as well.

Output keys (all floats):

- ``base.<split>.<metric>`` and ``sft.<split>.<metric>``, e.g. ``base.heldout.perplexity``,
  ``sft.heldout.perplexity``, ``base.sft_pairs.perplexity``, ``sft.sft_pairs.perplexity``, with
  ``<metric>`` in ``loss``, ``perplexity``, ``bits_per_token``, ``tokens`` for the perplexity
  evaluators.
- For every split present in both models:
  ``<split>.perplexity_ratio`` = sft / base perplexity (< 1: SFT fits that split better;
  ``sft_pairs.perplexity_ratio`` is the headline SFT number, ``heldout.perplexity_ratio`` shows
  how much general LM ability SFT cost), and ``<split>.loss_delta`` = sft - base loss (nats/token).

Values that are not numbers (strings, lists) are left out with a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

MODEL_PREFIXES = ("base", "sft")
"""Top-level prefixes of the per-model metrics, in output order."""


def summarize_evaluation(base: Mapping[str, Any], sft: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``{name: float}`` of both models' metrics plus per-split SFT-vs-base comparisons."""
    summary: dict[str, float] = {}
    for prefix, results in zip(MODEL_PREFIXES, (base, sft), strict=True):
        summary.update(flatten_metrics(results, prefix=prefix))

    for split in sorted(set(base) & set(sft)):
        base_split, sft_split = base[split], sft[split]
        if not (isinstance(base_split, Mapping) and isinstance(sft_split, Mapping)):
            continue
        if _is_number(base_split.get("perplexity")) and _is_number(sft_split.get("perplexity")):
            summary[f"{split}.perplexity_ratio"] = _ratio(
                float(sft_split["perplexity"]), float(base_split["perplexity"])
            )
        if _is_number(base_split.get("loss")) and _is_number(sft_split.get("loss")):
            summary[f"{split}.loss_delta"] = float(sft_split["loss"]) - float(base_split["loss"])
    return summary


def flatten_metrics(metrics: Mapping[str, Any], *, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1.0}``; non-numeric leaves are dropped (logged)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=name))
        elif _is_number(value):
            flat[name] = float(value)
        else:
            logger.warning("skipping non-numeric metric %s (%s)", name, type(value).__name__)
    return flat


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return math.nan
    return numerator / denominator


def _is_number(value: Any) -> bool:
    """True for ints/floats and numpy/torch scalars (anything float() accepts that is not a str)."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
