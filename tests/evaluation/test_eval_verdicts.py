"""Verdicts of SFT against base: the paired-bootstrap noise and better / worse / within noise by direction."""

from __future__ import annotations

import math

import pytest

from lmforge.evaluation.verdicts import (
    BETTER,
    WITHIN_NOISE,
    WORSE,
    build_verdicts,
    judge,
    paired_bootstrap_se,
    record_noise,
    token_weighted_loss,
    verdict_metrics,
)


def test_paired_bootstrap_is_seeded_and_pairs_the_items():
    base = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert paired_bootstrap_se(base, base, mean) == 0.0  # a model against itself: no noise
    shifted = [x + 0.5 for x in base]  # the same items, uniformly better: pairing removes the items' spread
    assert paired_bootstrap_se(base, shifted, mean) == pytest.approx(0.0, abs=1e-12)
    other = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    se = paired_bootstrap_se(base, other, mean)
    assert se == paired_bootstrap_se(base, other, mean) > 0  # seeded: the report does not change run to run
    diffs = [b - a for a, b in zip(base, other, strict=True)]
    analytic = math.sqrt(sum((d - mean(diffs)) ** 2 for d in diffs) / len(diffs) / len(diffs))
    assert se == pytest.approx(analytic, rel=0.1)  # the bootstrap SE of a mean matches sd/sqrt(n)
    with pytest.raises(ValueError, match="differ"):
        paired_bootstrap_se(base, other[:3], mean)


def test_token_weighted_loss_weights_by_tokens():
    assert token_weighted_loss([(10.0, 10.0), (1.0, 1.0)]) == 1.0
    assert token_weighted_loss([(30.0, 10.0), (0.0, 0.0)]) == 3.0


@pytest.mark.parametrize(("difference", "se", "better", "expected"), [
    (0.12, 0.02, "lower", WORSE),       # perplexity up by more than 2 SE: a regression
    (-0.12, 0.02, "lower", BETTER),
    (0.03, 0.02, "lower", WITHIN_NOISE),
    (0.2, 0.05, "higher", BETTER),      # F1 up
    (-0.2, 0.05, "higher", WORSE),
    (0.0, 0.0, "higher", WITHIN_NOISE),  # identical answers: no difference, no noise
    (0.1, None, "higher", None),         # no items: no verdict rather than a guess
])
def test_judge_by_direction_and_noise(difference, se, better, expected):
    assert judge(difference, se, better) == expected


def _records(f1s):
    return [{"id": str(i), "exact_match": float(f == 1.0), "token_f1": f} for i, f in enumerate(f1s)]


def test_verdicts_of_the_newcomers_run():
    """Held-out perplexity 183.6 -> 207.9 with a small noise is a regression; SFT pairs improved; F1 within noise."""
    metrics = {"base.heldout.perplexity": 183.6, "sft.heldout.perplexity": 207.9,
               "heldout.loss_delta": math.log(207.9 / 183.6), "heldout.loss_delta_se": 0.02, "heldout_blocks": 64.0,
               "base.heldout.bits_per_byte": 2.0, "sft.heldout.bits_per_byte": 2.05,
               "base.heldout.tokens": 1000.0, "base.heldout.bytes": 3000.0,
               "base.sft_pairs.perplexity": 30.0, "sft_pairs.loss_delta": -0.36, "sft.sft_pairs.perplexity": 21.0,
               "base.heldout_pairs.token_f1": 0.1, "sft.heldout_pairs.token_f1": 0.12,
               "base.heldout_pairs.exact_match": 0.0, "sft.heldout_pairs.exact_match": 0.0}
    generations = {"base.heldout_pairs": _records([0.1, 0.0, 0.2, 0.1]),
                   "sft.heldout_pairs": _records([0.0, 0.2, 0.1, 0.18])}
    verdicts = {v.metric: v for v in build_verdicts(metrics, generations)}
    assert verdicts["heldout.perplexity"].verdict == WORSE and verdicts["heldout.perplexity"].word == "worse"
    assert verdicts["heldout.perplexity"].items == 64 and verdicts["heldout.perplexity"].noise_unit.startswith("loss")
    assert verdicts["heldout.bits_per_byte"].verdict == WORSE
    assert verdicts["heldout.bits_per_byte"].noise_se == pytest.approx(0.02 * 1000 / (3000 * math.log(2)))
    assert verdicts["sft_pairs.perplexity"].verdict is None  # the suite wrote no sft_pairs.loss_delta_se
    assert verdicts["heldout_pairs.token_f1"].verdict == WITHIN_NOISE and verdicts["heldout_pairs.token_f1"].items == 4
    assert verdicts["heldout_pairs.exact_match"].verdict == WITHIN_NOISE  # 0 vs 0
    flat = verdict_metrics(verdicts.values())
    assert flat["verdict.heldout.perplexity"] == -1.0 and flat["verdict.heldout_pairs.token_f1"] == 0.0
    assert "noise.heldout.perplexity" not in flat  # its noise is heldout.loss_delta_se, in loss units
    assert flat["noise.heldout.bits_per_byte"] == pytest.approx(verdicts["heldout.bits_per_byte"].noise_se)
    assert "verdict.sft_pairs.perplexity" not in flat


def test_record_noise_of_humaneval_and_identity():
    generations = {
        "base.humaneval": [{"task_id": str(i), "passed": 0, "samples": 1} for i in range(5)],
        "sft.humaneval": [{"task_id": str(i), "passed": int(i < 2), "samples": 1} for i in range(5)],
        "base.identity_probe": [{"kind": k, "claims_identity": False} for k in ("direct", "foreign", "control")] * 3,
        "sft.identity_probe": [{"kind": k, "claims_identity": k == "direct"} for k in ("direct", "foreign", "control")]
        * 3,
        "sft.heldout_pairs": _records([0.5]),  # base has none: no noise for the pairs
    }
    noise = record_noise(generations)
    assert noise["humaneval.pass_at_1"][1] == 5 and noise["humaneval.pass_at_1"][0] > 0
    assert set(noise) == {"humaneval.pass_at_1", "identity.precision", "identity.recall", "identity.f1"}
    assert noise["identity.f1"][1] == 9


def test_aligned_against_sft_is_judged_on_its_own_comparison_keys():
    metrics = {"sft.heldout.perplexity": 10.0, "aligned.heldout.perplexity": 12.0, "base.heldout.perplexity": 30.0,
               "heldout.loss_delta": -1.1, "heldout.loss_delta_se": 0.01,  # SFT against base: better
               "aligned_vs_sft.heldout.loss_delta": math.log(1.2), "aligned_vs_sft.heldout.loss_delta_se": 0.01,
               "heldout_blocks": 6.0}
    [sft] = build_verdicts(metrics)
    [aligned] = build_verdicts(metrics, None, "sft", "aligned", prefix="aligned_vs_sft.")
    assert (sft.base, sft.other, sft.verdict) == (30.0, 10.0, BETTER)
    assert (aligned.base, aligned.other, aligned.verdict) == (10.0, 12.0, WORSE)  # higher perplexity than SFT
    assert aligned.noise_se == 0.01 and aligned.items == 6
    assert verdict_metrics([aligned], prefix="aligned_vs_sft.") == {"verdict.aligned_vs_sft.heldout.perplexity": -1.0}
