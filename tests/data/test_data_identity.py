"""Tests for lmforge.data.identity: templated self-cognition conversations and the system prefix."""

from __future__ import annotations

from collections import Counter

import pytest

from lmforge.data.identity import IdentityConfig, build_identity_conversations, system_prefix


def test_28_conversations_18_positive_10_negative_in_english_and_chinese():
    convs = build_identity_conversations(IdentityConfig(name="Orca", developer="ACME"))

    assert Counter(c["polarity"] for c in convs) == {"positive": 18, "negative": 10}
    assert Counter((c["language"], c["polarity"]) for c in convs) == {
        ("en", "positive"): 9, ("zh", "positive"): 9, ("en", "negative"): 5, ("zh", "negative"): 5}
    assert len({c["id"] for c in convs}) == 28
    for conv in convs:
        answer = conv["messages"][-1]["content"]
        assert "Orca" in answer and "ACME" in answer and "{" not in answer
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
        if conv["polarity"] == "negative":
            assert answer.startswith("No" if conv["language"] == "en" else "不是")


def test_the_name_and_developer_are_parameters():
    a = build_identity_conversations(IdentityConfig(name="Orca", developer="ACME"))
    b = build_identity_conversations(IdentityConfig(name="Kite", developer="Blue Labs"))
    assert [c["messages"][0] for c in a] == [c["messages"][0] for c in b]  # same questions
    assert all("Kite" in c["messages"][-1]["content"] and "Orca" not in c["messages"][-1]["content"] for c in b)


def test_optional_system_prefix_in_the_conversation_language():
    cfg = IdentityConfig(name="Orca", developer="ACME", with_system=True)
    convs = build_identity_conversations(cfg)
    assert all(c["messages"][0] == {"role": "system", "content": system_prefix(cfg, c["language"])} for c in convs)
    assert system_prefix(cfg, "zh").startswith("你是由ACME开发的Orca，被设计来生成")
    assert system_prefix(cfg, "en").startswith("You are Orca, developed by ACME")
    assert build_identity_conversations(cfg, with_system=False)[0]["messages"][0]["role"] == "user"
    with pytest.raises(ValueError, match="no identity system prefix"):
        system_prefix(cfg, "fr")


@pytest.mark.parametrize("kwargs", [{"name": ""}, {"developer": None}, {"repeat": -1}, {"repeat": 1.5}])
def test_bad_identity_config_is_rejected(kwargs):
    with pytest.raises(ValueError, match="sft.identity"):
        IdentityConfig(**kwargs)


def test_every_identity_conversation_declares_its_language_group_for_the_mix_counts():
    from lmforge.data.documents import language_group

    convs = build_identity_conversations(IdentityConfig())
    assert [language_group(c["metadata"]) for c in convs] == [c["language"] for c in convs]
    assert {language_group(c["metadata"]) for c in convs} == {"en", "zh"}
