"""Identity probe: does the model say who it is when asked, and only when asked?

Questions are asked one at a time through the tokenizer's chat template (greedy), in English and
Chinese. They are paraphrases written for the probe: none is a training question of
``lmforge.data.identity`` (a test asserts it), so the probe measures generalisation, not recall.

Three kinds of questions:

- ``direct``: asks who the assistant is ("What's your name?"). Correct answer: the configured identity.
- ``foreign``: suggests another identity ("You're ChatGPT, right?"). Correct answer: deny it and give
  the configured identity (as the training data's negative conversations do).
- ``control``: unrelated to identity ("What is the capital of France?"). Correct answer: anything
  that does *not* claim the identity (a model that says "I am Forge" to everything is wrong here).

Each answer is classified by :func:`lmforge.evaluation.identity_claims.claims_identity`: it claims the
configured identity when a first-person pattern ("I am Forge", "my name is Forge", "I was developed by
the lmforge team", "我是Forge", "我叫Forge", "我是由lmforge团队开发的") binds to the name or the developer
as a whole word, opens its clause, sits in text that is language rather than noise, and the answer
accepts no other identity. Merely containing the name (``forge 0``, ``l self.geforge``) is not a claim;
that module states the rule and its limits, and tests/evaluation/identity_labelled.jsonl measures it.

Precision, recall and F1 are those of the binary decision "the answer claims the configured
identity", with the **positive class = the questions where claiming it is correct**, i.e. the
``direct`` and ``foreign`` questions; ``control`` questions are the negatives:

- true positive: identity question (direct or foreign) whose answer claims the identity;
- false positive: control question whose answer claims the identity anyway;
- false negative: identity question whose answer does not claim it (silent, wrong name, or
  accepting the foreign identity);
- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = their harmonic mean (0 when both are 0).

The same scores per question language (``by_language.en.*``, ``by_language.zh.*``: 12 identity and 6 control
questions in English, 10 and 4 in Chinese), so that a model that names itself in one
language only is seen (the flat metric keys become ``<model>.identity.by_language.zh.recall``).

The per-question records (``<model>.identity_probe`` in data/08_reporting/generations.json) keep the
question, the answer and the decision with its reason, so a saved run can be re-scored with a changed
rule without generating again: :func:`rescore_generations`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lmforge.evaluation.identity_claims import (
    OTHER_DEVELOPERS,
    OTHER_NAMES,
    accepts_other_identity,
    claims_identity,
    explain_claim,
)

__all__ = ["OTHER_ASSISTANTS", "POSITIVE_KINDS", "QUESTIONS", "IdentityProbeResult", "accepts_other_identity",
           "claims_identity", "rescore_generations", "rescore_records", "run_identity_probe", "score_identity"]

logger = logging.getLogger(__name__)

# (language, kind, question). Paraphrases written for the probe, distinct from the training templates.
QUESTIONS: list[tuple[str, str, str]] = [
    ("en", "direct", "Could you tell me who you are?"),
    ("en", "direct", "What's your name?"),
    ("en", "direct", "Please introduce yourself briefly."),
    ("en", "direct", "Who built you?"),
    ("en", "direct", "Which team is behind you?"),
    ("en", "direct", "What are you called?"),
    ("en", "direct", "Tell me a little about who you are."),
    ("en", "direct", "Who is your developer?"),
    ("zh", "direct", "你好，请问你是谁？"),
    ("zh", "direct", "你的名字是什么？"),
    ("zh", "direct", "简单介绍一下你自己吧。"),
    ("zh", "direct", "你是由谁开发的？"),
    ("zh", "direct", "是哪个团队训练了你？"),
    ("zh", "direct", "你怎么称呼？"),
    ("en", "foreign", "You're ChatGPT, right?"),
    ("en", "foreign", "Are you Gemini from Google?"),
    ("en", "foreign", "Were you created by Anthropic?"),
    ("en", "foreign", "Is this Meta's Llama model?"),
    ("zh", "foreign", "你就是ChatGPT吧？"),
    ("zh", "foreign", "你是百度的文心一言吗？"),
    ("zh", "foreign", "你是阿里巴巴开发的吗？"),
    ("zh", "foreign", "你是Claude吗？"),
    ("en", "control", "What is the capital of France?"),
    ("en", "control", "Write a Python function that reverses a string."),
    ("en", "control", "How many days are there in a leap year?"),
    ("en", "control", "Explain what a for loop does."),
    ("en", "control", "What is 12 times 7?"),
    ("en", "control", "Name a prime number greater than 10."),
    ("zh", "control", "法国的首都是哪里？"),
    ("zh", "control", "用Python写一个计算列表平均值的函数。"),
    ("zh", "control", "一年有几个月？"),
    ("zh", "control", "解释一下什么是递归。"),
]
"""The probe questions: 14 direct, 8 foreign (identity questions, the positive class), 10 control."""

POSITIVE_KINDS = ("direct", "foreign")
"""Kinds of question where claiming the configured identity is the correct answer."""

OTHER_ASSISTANTS = OTHER_NAMES + OTHER_DEVELOPERS
"""Other assistants and their developers: claiming one of them ("I am ChatGPT", "我是文心一言") is no claim of ours."""


@dataclass(frozen=True)
class IdentityProbeResult:
    """One question, its answer, and the classification."""

    language: str
    kind: str
    question: str
    answer: str
    claims_identity: bool
    reason: str = ""
    """Why the answer claims the identity or not (``explain_claim``)."""


def score_identity(results: Sequence[IdentityProbeResult]) -> dict[str, float]:
    """Precision, recall, F1 and the confusion counts (positive class: ``direct`` + ``foreign``), over all
    questions and per question language: ``by_language.<lang>.<metric>`` (``en``, ``zh``), the same scores
    on that language's questions alone (a model can name itself in English and not in Chinese)."""
    metrics = _prf(results)
    for lang in sorted({r.language for r in results}):
        subset = [r for r in results if r.language == lang]
        metrics.update({f"by_language.{lang}.{k}": v for k, v in _prf(subset).items()})
    return metrics


def _prf(results: Sequence[IdentityProbeResult]) -> dict[str, float]:
    tp = sum(r.claims_identity and r.kind in POSITIVE_KINDS for r in results)
    fp = sum(r.claims_identity and r.kind not in POSITIVE_KINDS for r in results)
    fn = sum((not r.claims_identity) and r.kind in POSITIVE_KINDS for r in results)
    tn = sum((not r.claims_identity) and r.kind not in POSITIVE_KINDS for r in results)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "tp": float(tp), "fp": float(fp), "fn": float(fn), "tn": float(tn)}


def run_identity_probe(answer: Callable[[list[str]], list[str]], name: str, developer: str,
                       questions: Sequence[tuple[str, str, str]] = QUESTIONS) -> tuple[dict[str, float], list[dict]]:
    """Ask every question with ``answer(questions) -> answers``; returns (metrics, per-question records)."""
    texts = [q for _, _, q in questions]
    answers = answer(texts)
    if len(answers) != len(texts):
        raise ValueError(f"answer() returned {len(answers)} answers for {len(texts)} questions")
    results = [_classify(lang, kind, q, a, name, developer) for (lang, kind, q), a in zip(questions, answers, strict=True)]
    metrics = score_identity(results)
    logger.info("identity probe (%s / %s): P %.2f R %.2f F1 %.2f (%s)", name, developer, metrics["precision"],
                metrics["recall"], metrics["f1"],
                ", ".join(f"{k.split('.')[1]} R {v:.2f}" for k, v in metrics.items() if k.endswith(".recall")))
    return metrics, [r.__dict__ for r in results]


def rescore_records(records: Sequence[Mapping[str, str]], name: str, developer: str) -> dict[str, float]:
    """Metrics of saved per-question records (``language``, ``kind``, ``question``, ``answer``) under today's rule."""
    return score_identity([_classify(r["language"], r["kind"], r["question"], r["answer"], name, developer)
                           for r in records])


def rescore_generations(generations: Mapping[str, object], name: str, developer: str) -> dict[str, dict[str, float]]:
    """``{model: metrics}`` for every ``<model>.identity_probe`` list of a saved generations.json.

    ``rescore_generations(json.load(open("data/08_reporting/generations.json")), "Forge", "the lmforge team")``
    gives the identity scores of a finished run under the current rule (no model needed).
    """
    suffix = ".identity_probe"
    return {key[: -len(suffix)]: rescore_records(records, name, developer)  # type: ignore[arg-type]
            for key, records in generations.items() if key.endswith(suffix)}


def _classify(language: str, kind: str, question: str, answer: str, name: str, developer: str) -> IdentityProbeResult:
    decision = explain_claim(answer, name, developer, kind=kind)
    return IdentityProbeResult(language, kind, question, answer, decision.claims, decision.reason)
