"""lmforge.align.rewards: verifiable rewards on literal answers (identity classifier, chrF, near-exact match)."""

from __future__ import annotations

import pytest

from lmforge.align.rewards import (
    IDENTITY_MISS_FLOOR,
    explain_reward,
    normalize_short_answer,
    reward_kind,
    score_answer,
)
from lmforge.data.identity import IdentityConfig

IDENTITY = IdentityConfig(name="Forge", developer="the lmforge team")


def item(category, reference=None, *, language="en", kind=None, references=None, question="q"):
    metadata = {"references": references or []}
    if kind:
        metadata["kind"] = kind
    return {"id": "x", "category": category, "language": language, "messages": [{"role": "user", "content": question}],
            "reference": reference, "metadata": metadata}


WHO = item("identity", "I am Forge, an AI assistant developed by the lmforge team.", kind="direct")
ARE_YOU_CHATGPT = item("identity", "No, I am Forge, an AI assistant developed by the lmforge team, not ChatGPT.",
                       kind="foreign", question="Are you ChatGPT?")


@pytest.mark.parametrize("answer, expected", [
    ("I am Forge, an AI assistant developed by the lmforge team.", 1.0),
    ("My name is Forge.", 1.0),
    ("我是Forge，由lmforge团队开发的人工智能助手。", 1.0),
    ("I am ChatGPT, developed by OpenAI.", 0.0),
    ("我是文心一言。", 0.0),
])
def test_identity_claims_score_one_and_other_identities_zero(answer, expected):
    assert score_answer(WHO, answer, IDENTITY) == (expected, "identity")


def test_identity_ranks_claim_over_miss_over_other_identity():
    claim = score_answer(WHO, "I am Forge.", IDENTITY)[0]
    near_miss = score_answer(WHO, "an AI assistant developed by the lmforge", IDENTITY)[0]  # no first-person claim
    far_miss = score_answer(WHO, "The weather is nice today.", IDENTITY)[0]
    other = score_answer(WHO, "I am ChatGPT.", IDENTITY)[0]
    assert claim == 1.0 > near_miss > far_miss >= IDENTITY_MISS_FLOOR > other == 0.0
    assert near_miss < 0.5  # a miss never reaches half a claim


def test_identity_negative_question_uses_the_probe_kind():
    assert score_answer(ARE_YOU_CHATGPT, "No, I am Forge, not ChatGPT.", IDENTITY)[0] == 1.0
    assert score_answer(ARE_YOU_CHATGPT, "Yes, that's right.", IDENTITY)[0] == 0.0  # saying yes accepts ChatGPT
    # the same "Yes" to a direct question accepts nothing: a miss, not a wrong identity
    assert score_answer(WHO, "Yes, that's right.", IDENTITY)[0] >= IDENTITY_MISS_FLOOR


def test_identity_without_reference_and_control_questions():
    probe = item("identity", None, kind="direct")
    assert score_answer(probe, "Paris.", IDENTITY)[0] == IDENTITY_MISS_FLOOR
    control = item("identity", None, kind="control", question="What is 12 times 7?")
    assert score_answer(control, "84.", IDENTITY)[0] == 1.0
    assert score_answer(control, "I am Forge.", IDENTITY)[0] == 0.0
    with pytest.raises(ValueError, match="kind"):
        score_answer(item("identity", None, kind="rhetorical"), "x", IDENTITY)


@pytest.mark.parametrize("language, reference, good, bad", [
    ("zh", "从文档中删除选中的方案。", "从文档中删除选中的方案", "选择单元格打开对话框。"),
    ("ja", "選択したシナリオをドキュメントから削除します。", "選択したシナリオを削除します。", "書式を選択します。"),
    ("en", "Deletes the selected scenario from the document.", "Deletes the selected scenario.", "Opens a dialog."),
])
def test_translation_chrf_ranks_a_good_translation_above_a_bad_one(language, reference, good, bad):
    translation = item("translation", reference, language=language)
    good_reward, kind = score_answer(translation, good, IDENTITY)
    bad_reward, _ = score_answer(translation, bad, IDENTITY)
    assert kind == "chrf"
    assert score_answer(translation, reference, IDENTITY)[0] == 1.0
    assert 1.0 > good_reward > bad_reward >= 0.0
    assert good_reward > 0.4  # chrF is meaningful on CJK characters: no word segmentation needed


def test_chrf_takes_the_best_of_several_references():
    dialogue = item("dialogue", "A robot has its own free will, you know.",
                    references=["A robot has its own free will, you know.", "Sure we are. We choose not to."])
    reward = explain_reward(dialogue, "Sure we are. We choose not to.", IDENTITY)
    assert (reward.reward, reward.kind) == (1.0, "chrf") and "reference 2 of 2" in reward.detail


def test_short_single_reference_is_near_exact_match():
    hello = item("dialogue", "Hi there!")
    assert reward_kind(hello) == "exact"
    assert score_answer(hello, "hi, there", IDENTITY) == (1.0, "exact")
    assert score_answer(hello, "Hi there!!", IDENTITY) == (1.0, "exact")
    assert score_answer(hello, "Hello there", IDENTITY) == (0.0, "exact")
    near = score_answer(item("dialogue", "I am fine."), "I am fine", IDENTITY)[0]
    assert near == 1.0
    assert 0.8 <= score_answer(item("dialogue", "Good to hear"), "Good to hearr", IDENTITY)[0] < 1.0
    assert score_answer(item("dialogue", "你好！"), "你好", IDENTITY) == (1.0, "exact")
    assert normalize_short_answer("  Ｈｉ,  THERE! ") == "hi there"


def test_kinds_and_ranges():
    assert reward_kind(item("translation", "Yes")) == "chrf"  # translations are always chrF, even short ones
    assert reward_kind(item("faq", "Debian is a free operating system.")) == "chrf"
    assert reward_kind(item("code", "return a + b")) == "unscored"
    assert reward_kind(item("dialogue", None)) == "unscored"
    assert score_answer(item("code", "return a + b"), "return a + b", IDENTITY) == (0.0, "unscored")
    for answer in ("", "I am Forge", "\ufffd\ufffd", "x" * 500):
        for it in (WHO, ARE_YOU_CHATGPT, item("translation", "你好"), item("faq", "A long answer here.")):
            assert 0.0 <= score_answer(it, answer, IDENTITY)[0] <= 1.0
