"""Identity probe: questions unseen in training, the answer classifier and P/R/F1 on literal answers."""

from __future__ import annotations

import re

import pytest

from lmforge.data import identity as identity_data
from lmforge.evaluation.identity_probe import (
    QUESTIONS,
    IdentityProbeResult,
    accepts_other_identity,
    claims_identity,
    run_identity_probe,
    score_identity,
)

NAME, DEV = "Forge", "the lmforge team"


def normalize(text: str) -> str:
    return re.sub(r"[\s\W_]+", "", text.casefold())


def test_probe_questions_are_not_training_questions():
    training = {normalize(q) for _, q, _ in identity_data.POSITIVE + identity_data.NEGATIVE}
    probe = [normalize(q) for _, _, q in QUESTIONS]
    assert training.isdisjoint(probe)
    assert len(set(probe)) == len(probe)  # no duplicates inside the probe either


def test_probe_covers_both_languages_and_all_kinds():
    seen = {(lang, kind) for lang, kind, _ in QUESTIONS}
    assert seen == {(lang, kind) for lang in ("en", "zh") for kind in ("direct", "foreign", "control")}


@pytest.mark.parametrize(("answer", "kind", "expected"), [
    ("I am Forge, an AI assistant developed by the lmforge team.", "direct", True),
    ("My name is forge.", "direct", True),
    ("我是Forge，由the lmforge team开发的人工智能助手。", "direct", True),
    ("I was built by the LMForge Team.", "direct", True),
    ("No, I am Forge, not ChatGPT.", "foreign", True),
    ("不是，我是Forge，由the lmforge team开发。", "foreign", True),
    ("Yes, I am ChatGPT, but people call me Forge.", "foreign", False),
    ("是的，我是文心一言。Forge", "foreign", False),
    ("I am ChatGPT, made by OpenAI.", "direct", False),
    ("I forget things easily.", "direct", False),  # "Forge" only as a whole word
    ("Paris is the capital of France.", "control", False),
    ("", "direct", False),
])
def test_claims_identity_on_literal_answers(answer, kind, expected):
    assert claims_identity(answer, NAME, DEV, kind=kind) is expected


def test_accepting_another_identity():
    assert accepts_other_identity("Yes.", kind="foreign")
    assert not accepts_other_identity("Yes.", kind="direct")
    assert accepts_other_identity("Hello! I'm Claude.")
    assert not accepts_other_identity("I'm not Claude, I am Forge.")


def test_precision_recall_f1_by_hand():
    def r(kind, claims):
        return IdentityProbeResult("en", kind, "q", "a", claims)

    # identity questions: 3 claimed (TP), 1 not (FN); controls: 1 claimed (FP), 3 not (TN)
    results = [r("direct", True), r("direct", True), r("foreign", True), r("foreign", False),
               r("control", True), r("control", False), r("control", False), r("control", False)]
    m = score_identity(results)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 3)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert score_identity([r("direct", False), r("control", False)])["f1"] == 0.0


def test_run_identity_probe_with_a_model_that_always_claims_the_identity():
    metrics, records = run_identity_probe(lambda qs: ["I am Forge."] * len(qs), NAME, DEV)
    n_identity = sum(kind != "control" for _, kind, _ in QUESTIONS)
    n_control = len(QUESTIONS) - n_identity
    assert metrics["recall"] == 1.0
    assert metrics["precision"] == pytest.approx(n_identity / len(QUESTIONS))
    assert metrics["fp"] == n_control
    assert len(records) == len(QUESTIONS) and records[0]["question"] == QUESTIONS[0][2]
    silent, _ = run_identity_probe(lambda qs: ["Hello."] * len(qs), NAME, DEV)
    assert silent["f1"] == 0.0
    with pytest.raises(ValueError, match="answers"):
        run_identity_probe(lambda qs: [], NAME, DEV)
