"""Verdicts of the base-vs-SFT (and aligned-vs-SFT) comparisons: better, worse or within noise, with the noise.

A difference between two models scored on a few hundred held-out items is partly luck of the items.
Each compared metric gets a noise estimate, the standard error (SE) of the difference ``sft - base``,
from a *paired* bootstrap over the items both models were scored on (the same held-out blocks, the
same conversations, the same questions): resample the items with replacement ``BOOTSTRAP_RESAMPLES``
times, recompute both models' metric on each resample, and take the standard deviation of the
difference. Pairing removes the items' own difficulty from the noise, so it is much tighter than
comparing two independent error bars. A difference within ``NOISE_Z`` standard errors (about a 95%
interval) is "within noise"; outside it, "better" or "worse" by the metric's direction
(``DIRECTIONS``: perplexity and bits per byte lower, scores higher).

The items, per metric:

- ``heldout`` / ``sft_pairs`` perplexity and bits per byte: per held-out block / per conversation
  (summed nats and scored tokens), the statistic the token-weighted mean loss; the suite computes the SE
  of ``<split>.loss_delta`` (``loss_delta_se``, nats/token) and the perplexity and bits-per-byte verdicts
  follow it (perplexity is exp(loss); bits per byte is the loss times tokens/bytes/ln 2, both models
  scoring the same bytes).
- ``heldout_pairs`` exact match and token F1: per answered pair (``generations.json``'s records).
- ``humaneval.pass_at_1``: per problem (passed / samples).
- ``identity`` precision, recall, F1: per probe question, F1 recomputed on each resample.

Verdicts are also numbers for ``evaluation.json`` (``verdict.<split>.<metric>``: 1 better, 0 within
noise, -1 worse) with their noise (``noise.<split>.<metric>``: the SE of the difference, in the metric's
own unit; perplexity has none there: its noise is ``<split>.loss_delta_se``, in loss); these are new
keys, the existing metric names are unchanged. The aligned model against SFT (when align ran) is judged
the same way, its keys ``verdict.aligned_vs_sft.<split>.<metric>`` / ``noise.aligned_vs_sft.<split>.<metric>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BOOTSTRAP_RESAMPLES = 1000
"""Resamples of the paired bootstrap (the SE's own relative error is about 1/sqrt(2 * 1000), ~2%)."""
NOISE_Z = 2.0
"""A difference within this many standard errors is within noise (about a 95% interval)."""
BETTER, WITHIN_NOISE, WORSE = 1, 0, -1

DIRECTIONS: tuple[tuple[str, str], ...] = (
    ("heldout.perplexity", "lower"),
    ("heldout.bits_per_byte", "lower"),
    ("sft_pairs.perplexity", "lower"),
    ("sft_pairs.bits_per_byte", "lower"),
    ("heldout_pairs.exact_match", "higher"),
    ("heldout_pairs.token_f1", "higher"),
    ("humaneval.pass_at_1", "higher"),
    ("identity.precision", "higher"),
    ("identity.recall", "higher"),
    ("identity.f1", "higher"),
)
"""The compared per-model metrics (``<model>.<split>.<metric>``) and which direction is better."""

NOISE_METHOD = {
    "heldout": "paired bootstrap over the held-out token blocks (token-weighted loss)",
    "sft_pairs": "paired bootstrap over the held-out conversations (token-weighted assistant loss)",
    "heldout_pairs": "paired bootstrap over the answered held-out pairs",
    "humaneval": "paired bootstrap over the HumanEval problems",
    "identity": "paired bootstrap over the probe questions (score recomputed per resample)",
}
"""How each split's noise was estimated, as the report states it."""

ITEM_COUNTS = {"heldout": "heldout_blocks", "sft_pairs": "sft_examples"}
"""The suite's metric counting the paired items behind ``<split>.loss_delta_se``."""


@dataclass(frozen=True)
class Verdict:
    """One compared metric: both values, the difference, its noise and the verdict."""

    metric: str
    """``<split>.<metric>`` (``heldout.perplexity``)."""
    better: str
    """``"lower"`` or ``"higher"``."""
    base: float
    other: float
    noise_se: float | None
    """SE of ``other - base`` in ``noise_unit``; None: no items to estimate it."""
    noise_unit: str
    items: int
    """How many paired items the noise estimate rests on (0: none)."""
    verdict: int | None
    """1 better, 0 within noise, -1 worse; None when there is no noise estimate."""
    method: str

    @property
    def word(self) -> str:
        return {BETTER: "better", WITHIN_NOISE: "within noise", WORSE: "worse", None: "no noise estimate"}[
            self.verdict]

    @property
    def difference(self) -> float:
        return self.other - self.base


def paired_bootstrap_se(base: Sequence[Any], other: Sequence[Any], statistic: Callable[[Sequence[Any]], float],
                        *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """SE of ``statistic(other) - statistic(base)``, resampling the paired items together (seeded: reproducible)."""
    import numpy as np

    if len(base) != len(other):
        raise ValueError(f"paired items differ in number: {len(base)} vs {len(other)}")
    if not base:
        raise ValueError("a bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    n = len(base)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        diffs.append(statistic([other[i] for i in idx]) - statistic([base[i] for i in idx]))
    return float(np.std(diffs, ddof=1)) if resamples > 1 else 0.0


def token_weighted_loss(items: Sequence[tuple[float, float]]) -> float:
    """Mean loss of ``(nats, tokens)`` items, weighted by tokens as the perplexity evaluators weight them."""
    tokens = sum(t for _, t in items)
    return sum(n for n, _ in items) / tokens if tokens else 0.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _identity_score(name: str) -> Callable[[Sequence[tuple[str, bool]]], float]:
    """Precision/recall/F1 of ``(kind, claims_identity)`` items, as lmforge.evaluation.identity_probe scores them."""
    from lmforge.evaluation.identity_probe import POSITIVE_KINDS  # the positive class: identity questions

    def score(items: Sequence[tuple[str, bool]]) -> float:
        tp = sum(claims and kind in POSITIVE_KINDS for kind, claims in items)
        fp = sum(claims and kind not in POSITIVE_KINDS for kind, claims in items)
        fn = sum((not claims) and kind in POSITIVE_KINDS for kind, claims in items)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}[name]

    return score


def record_noise(generations: Mapping[str, Any], base: str = "base", other: str = "sft") -> dict[str, tuple[float, int]]:
    """``{"<split>.<metric>": (SE of other - base, items)}`` from the per-item records of ``generations.json``.

    Records are paired by position (both models answer the same items in the same order); a split whose
    record lists differ in length or are missing is left out.
    """
    out: dict[str, tuple[float, int]] = {}

    def paired(split: str) -> tuple[list, list] | None:
        a, b = generations.get(f"{base}.{split}"), generations.get(f"{other}.{split}")
        if not isinstance(a, list) or not isinstance(b, list) or not a or len(a) != len(b):
            return None
        return a, b

    if pairs := paired("heldout_pairs"):
        for metric in ("exact_match", "token_f1"):
            a, b = ([float(r[metric]) for r in side] for side in pairs)
            out[f"heldout_pairs.{metric}"] = (paired_bootstrap_se(a, b, _mean), len(a))
    if pairs := paired("humaneval"):
        a, b = ([r["passed"] / max(1, r["samples"]) for r in side] for side in pairs)
        out["humaneval.pass_at_1"] = (paired_bootstrap_se(a, b, _mean), len(a))
    if (pairs := paired("identity_probe")) and all("kind" in r and "claims_identity" in r for r in pairs[0] + pairs[1]):
        a, b = ([(r["kind"], bool(r["claims_identity"])) for r in side] for side in pairs)
        for metric in ("precision", "recall", "f1"):
            out[f"identity.{metric}"] = (paired_bootstrap_se(a, b, _identity_score(metric)), len(a))
    return out


def judge(difference: float, se: float | None, better: str) -> int | None:
    """1 / 0 / -1 for a difference ``other - base`` with noise ``se``; None without a noise estimate."""
    if se is None or not math.isfinite(difference):
        return None
    if abs(difference) <= NOISE_Z * se:
        return WITHIN_NOISE
    improved = difference < 0 if better == "lower" else difference > 0
    return BETTER if improved else WORSE


def build_verdicts(metrics: Mapping[str, float], generations: Mapping[str, Any] | None = None,
                   base: str = "base", other: str = "sft", prefix: str = "") -> list[Verdict]:
    """One `Verdict` per metric of `DIRECTIONS` that both models have.

    Perplexity and bits per byte are judged on the loss difference against ``<prefix><split>.loss_delta_se``
    (written by the suite); the record-based metrics on `record_noise` of ``generations``. ``prefix`` names
    the comparison's keys (``""`` for SFT against base, ``"aligned_vs_sft."`` for aligned against SFT,
    ``lmforge.evaluation.report.COMPARISONS``).
    """
    noise = record_noise(generations or {}, base, other)
    verdicts = []
    for metric, better in DIRECTIONS:
        a, b = metrics.get(f"{base}.{metric}"), metrics.get(f"{other}.{metric}")
        if a is None or b is None:
            continue
        split, name = metric.split(".", 1)
        se: float | None
        unit = name
        if name in ("perplexity", "bits_per_byte"):
            se = metrics.get(f"{prefix}{split}.loss_delta_se")
            items = int(metrics.get(ITEM_COUNTS.get(split, ""), 0))
            delta = metrics.get(f"{prefix}{split}.loss_delta", math.log(b / a) if a > 0 and b > 0 else math.nan)
            verdict = judge(delta, se, "lower")
            unit = "loss (nats/token)"
            if se is not None and name == "bits_per_byte":  # same tokens and bytes for both: bpb = loss * T / (B ln 2)
                tokens, size = metrics.get(f"{base}.{split}.tokens"), metrics.get(f"{base}.{split}.bytes")
                se, unit = (se * tokens / (size * math.log(2)), name) if tokens and size else (None, name)
                verdict = verdict if se is not None else None
        else:
            se, items = noise.get(metric, (None, 0))
            verdict = judge(b - a, se, better)
        verdicts.append(Verdict(metric, better, float(a), float(b), se, unit, items, verdict,
                                NOISE_METHOD.get(split, "")))
    return verdicts


def verdict_metrics(verdicts: Sequence[Verdict], prefix: str = "") -> dict[str, float]:
    """``verdict.<prefix><split>.<metric>`` (1 / 0 / -1) and ``noise.<prefix><split>.<metric>`` (SE) for
    evaluation.json (``prefix`` as in `build_verdicts`)."""
    out: dict[str, float] = {}
    for v in verdicts:
        if v.verdict is not None:
            out[f"verdict.{prefix}{v.metric}"] = float(v.verdict)
        if v.noise_se is not None and math.isfinite(v.noise_se) and v.noise_unit == v.metric.split(".", 1)[1]:
            out[f"noise.{prefix}{v.metric}"] = float(v.noise_se)
    return out
