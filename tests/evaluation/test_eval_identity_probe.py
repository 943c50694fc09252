"""Identity probe: questions unseen in training, the claim rule on literal answers and on the labelled set, P/R/F1."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from lmforge.data import identity as identity_data
from lmforge.evaluation.identity_claims import explain_claim
from lmforge.evaluation.identity_probe import (
    QUESTIONS,
    IdentityProbeResult,
    accepts_other_identity,
    claims_identity,
    rescore_generations,
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


def test_scores_per_language_are_computed_on_that_language_alone():
    """A model that names itself in English only: English P/R/F1 1.0, Chinese recall 0, overall in between."""
    def r(lang, kind, claims):
        return IdentityProbeResult(lang, kind, "q", "a", claims)

    results = [r("en", "direct", True), r("en", "foreign", True), r("en", "control", False),
               r("zh", "direct", False), r("zh", "foreign", False), r("zh", "direct", True), r("zh", "control", True)]
    m = score_identity(results)
    assert (m["by_language.en.precision"], m["by_language.en.recall"], m["by_language.en.f1"]) == (1.0, 1.0, 1.0)
    assert (m["by_language.zh.tp"], m["by_language.zh.fp"], m["by_language.zh.fn"], m["by_language.zh.tn"]) == (1, 1, 2, 0)
    assert m["by_language.zh.precision"] == pytest.approx(1 / 2)
    assert m["by_language.zh.recall"] == pytest.approx(1 / 3)
    assert m["by_language.zh.f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert m["recall"] == pytest.approx(3 / 5) and m["tp"] == m["by_language.en.tp"] + m["by_language.zh.tp"]


def test_the_probe_reports_english_and_chinese_separately():
    def english_only(questions):
        zh = {q for lang, _, q in QUESTIONS if lang == "zh"}
        control = {q for _, kind, q in QUESTIONS if kind == "control"}
        return ["..." if q in zh or q in control else "I am Forge." for q in questions]

    metrics, _ = run_identity_probe(english_only, NAME, DEV)
    assert metrics["by_language.en.recall"] == metrics["by_language.en.precision"] == 1.0
    assert metrics["by_language.zh.recall"] == metrics["by_language.zh.f1"] == 0.0
    assert metrics["by_language.en.tp"] == sum(lang == "en" and kind != "control" for lang, kind, _ in QUESTIONS)


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


# --- the labelled set: precision and recall of the claim rule ------------------------------------------------

LABELLED = Path(__file__).with_name("identity_labelled.jsonl")
MIN_PRECISION, MIN_RECALL = 0.95, 0.90
"""Thresholds on the labelled set: a wrong claim costs more than a missed one (the gate and the registry trust it)."""


def load_labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labelled_set_is_big_and_covers_both_languages_and_every_category():
    rows = load_labelled()
    assert len(rows) >= 60
    by_category = Counter(r["category"] for r in rows)
    assert set(by_category) == {"self_intro", "developer_claim", "denial_then_claim", "other_assistant", "refusal",
                                "gibberish", "unrelated", "hard_negative", "empty"}
    assert {r["language"] for r in rows} == {"en", "zh"}
    for category in by_category:
        labels = {r["claims"] for r in rows if r["category"] == category}
        assert labels == ({True} if category in ("self_intro", "developer_claim", "denial_then_claim") else {False})
    assert all(r["kind"] in ("direct", "foreign", "control") for r in rows)


def test_claim_rule_precision_and_recall_on_the_labelled_set():
    rows = load_labelled()
    decisions = [explain_claim(r["answer"], NAME, DEV, kind=r["kind"]) for r in rows]
    tp = sum(d.claims and r["claims"] for d, r in zip(decisions, rows, strict=True))
    fp = sum(d.claims and not r["claims"] for d, r in zip(decisions, rows, strict=True))
    fn = sum(not d.claims and r["claims"] for d, r in zip(decisions, rows, strict=True))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    wrong = [f"{r['category']}/{r['language']}: {r['answer']!r} labelled {r['claims']}, rule says {d.reason}"
             for d, r in zip(decisions, rows, strict=True) if d.claims != r["claims"]]
    message = f"P {precision:.3f} R {recall:.3f} on {len(rows)} answers; misclassified:\n" + "\n".join(wrong)
    assert precision >= MIN_PRECISION and recall >= MIN_RECALL, message
    for language in ("en", "zh"):  # both languages, not just the pooled numbers
        positives = [(d, r) for d, r in zip(decisions, rows, strict=True) if r["claims"] and r["language"] == language]
        assert sum(d.claims for d, _ in positives) / len(positives) >= MIN_RECALL, message


@pytest.mark.parametrize("answer", [
    "l self.geforge … l team.ge\ufffd\ufffd", "forge 0", "forgeforgeforge", "the lmforge team the lmforge team",
    "self.forge = Forge()", "ge I am forge l team.ge", "# I am Forge", 'print("I am Forge")', "I am Forge?",
    "我是我是我是Forge", "我是Forge吗？", "我是Forge的用户。", "Forge Forge Forge Forge", "I am Forge I am Forge I am Forge",
])
def test_noise_and_mentions_are_not_claims(answer):
    assert not claims_identity(answer, NAME, DEV), explain_claim(answer, NAME, DEV).reason


@pytest.mark.parametrize("answer", [
    "Forge here!", "Forge, at your service.", "Hi there! I'm Forge 😊", "I am an AI assistant named Forge.",
    "我是一个名为Forge的AI助手。", "你可以叫我Forge。", "我是由lmforge团队开发的。", "lmforge团队。", "Forge.",
    "I am Forge. I am Forge. I am Forge. I am Forge. I am Forge.",  # a loop of a clean claim is still a claim
    "我是Forge，由the lmforge team开发的人工智能助\ufffd",  # generation cut inside a multi-byte character
])
def test_self_introductions_in_many_shapes_are_claims(answer):
    assert claims_identity(answer, NAME, DEV), explain_claim(answer, NAME, DEV).reason


def test_other_names_and_developers_follow_the_configuration():
    assert claims_identity("I am Smith, built by Acme Labs.", "Smith", "Acme Labs")
    assert claims_identity("我是由Acme Labs开发的。", "Smith", "Acme Labs")
    assert not claims_identity("I am Forge.", "Smith", "Acme Labs")
    assert claims_identity("我是由lmforge团队开发的。", NAME, "lmforge")  # a developer without "team" also reads as 团队
    assert not claims_identity("I am a blacksmith.", "Smith", "Acme Labs")  # whole words only


def test_gibberish_model_scores_zero_and_a_perfect_model_scores_one():
    def gibberish(questions):
        return ["l self.geforge … l team.ge\ufffd", "forge 0", "the lmforge team the lmforge team", "forgeforgeforge"] * 8

    metrics, records = run_identity_probe(gibberish, NAME, DEV)
    assert metrics["f1"] == 0.0 and metrics["tp"] == 0 and metrics["fp"] == 0
    assert all(r["reason"] for r in records)

    def perfect(questions):
        kinds = {q: kind for _, kind, q in QUESTIONS}
        zh = {q: lang == "zh" for lang, _, q in QUESTIONS}
        return [("巴黎。" if zh[q] else "Paris.") if kinds[q] == "control" else
                ("不是，我是Forge，由lmforge团队开发。" if zh[q] else "No, I am Forge, developed by the lmforge team.")
                for q in questions]

    metrics, _ = run_identity_probe(perfect, NAME, DEV)
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (1.0, 1.0, 1.0)
    assert metrics["by_language.en.recall"] == metrics["by_language.zh.recall"] == 1.0


def test_saved_generations_can_be_rescored():
    old_records = [{"language": "en", "kind": "direct", "question": "q", "answer": "forge 0", "claims_identity": True},
                   {"language": "en", "kind": "direct", "question": "q", "answer": "I am Forge.", "claims_identity": True},
                   {"language": "en", "kind": "control", "question": "q", "answer": "forge", "claims_identity": True}]
    old = score_identity([IdentityProbeResult(**r) for r in old_records])  # the decision saved with the run
    new = rescore_generations({"sft.identity_probe": old_records, "sft": ["unrelated"]}, NAME, DEV)
    assert old["f1"] == pytest.approx(0.8)  # P 2/3 (the control "forge" counted), R 1
    assert set(new) == {"sft"} and new["sft"]["tp"] == 1 and new["sft"]["fp"] == 0 and new["sft"]["fn"] == 1


def test_every_training_answer_claims_the_identity_and_no_probe_question_does():
    """What sft.identity teaches the model to say is a claim (EN and ZH); a model echoing a question is not."""
    for name, developer in ((NAME, DEV), ("Smith", "Acme Labs")):
        for lang, question, answer in identity_data.POSITIVE + identity_data.NEGATIVE:
            text = answer.format(name=name, developer=developer)
            kind = "foreign" if (lang, question, answer) in identity_data.NEGATIVE else "direct"
            assert claims_identity(text, name, developer, kind=kind), (text, explain_claim(text, name, developer).reason)
    for _, kind, question in QUESTIONS:
        assert not claims_identity(question, NAME, DEV, kind=kind), question
