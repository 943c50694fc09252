"""Preference readers (pairs and messages formats; JSONL, JSON, Parquet, .gz, globs), quarantine with reasons and
reconciled counts, and the built-in identity pairs judged by our own identity classifier."""

from __future__ import annotations

import gzip
import json

import pytest

from lmforge.data.identity import NEGATIVE, IdentityConfig
from lmforge.data.preferences import (
    PreferenceSource,
    build_identity_pairs,
    make_pair_id,
    read_preference_source,
    read_preference_sources,
)
from lmforge.evaluation.identity_claims import accepts_other_identity, claims_identity


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_pairs_format_prompt_as_text_or_messages_and_ultrafeedback_conversations(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "Name a colour.", "chosen": [user("Name a colour."), assistant("Blue.")],
         "rejected": [user("Name a colour."), assistant("Seven.")], "score_chosen": 9.0, "score_rejected": 2,
         "category": "ultrafeedback"},
        {"prompt": [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello!"), user("Bye?")],
         "chosen": assistant("Goodbye."), "rejected": "No."},
        {"chosen": [user("Capital of France?"), assistant("Paris.")], "rejected": [user("Capital of France?"),
                                                                                  assistant("Rome.")]},
    ])

    pairs, quarantine, stats = read_preference_source(PreferenceSource("hh", str(path), language=None))

    assert quarantine == []
    assert stats == {"read": 4, "kept": 4, "quarantined": 0, "by_reason": {}, "files": 1}
    assert [p["prompt"] for p in pairs] == [
        [user("What is 2+2?")], [user("Name a colour.")],
        [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello!"), user("Bye?")],
        [user("Capital of France?")]]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("4", "5"), ("Blue.", "Seven."), ("Goodbye.", "No."),
                                                               ("Paris.", "Rome.")]
    assert [p["origin"] for p in pairs] == [f"{path}:{line}" for line in (1, 2, 3, 4)]
    assert [p["category"] for p in pairs] == ["preference", "ultrafeedback", "preference", "preference"]
    assert pairs[1]["scores"] == {"chosen": 9.0, "rejected": 2} and "scores" not in pairs[0]
    assert all(p["source"] == "hh" and p["language"] is None for p in pairs)
    assert pairs[0]["id"] == make_pair_id("hh", [user("What is 2+2?")], "4", "5")
    assert len({p["id"] for p in pairs}) == 4


def test_raw_hh_rlhf_transcripts(tmp_path):
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I boil an egg?"
    path = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": shared + "\n\nAssistant: Boil it for 8 minutes.", "rejected": shared + "\n\nAssistant: Why?"},
        {"chosen": shared + "\n\nAssistant: Boil it.", "rejected": "\n\nHuman: Other\n\nAssistant: Why?"}])

    pairs, quarantine, _ = read_preference_source(PreferenceSource("hh", str(path), language=None))

    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ([user("Hi there"), assistant("Hello!"), user("How do I boil an egg?")], "Boil it for 8 minutes.", "Why?")]
    assert [q["reason"] for q in quarantine] == ["prompt_mismatch"]


def test_messages_format_openai_and_sharegpt_from_json_array_and_parquet(tmp_path):
    import pandas as pd

    openai = {"messages": [user("Translate 'cat' to French.")], "chosen": assistant("chat"), "rejected": "dog"}
    sharegpt = {"conversations": [{"from": "human", "value": "Say hi."}], "system": "You are kind.",
                "chosen": {"from": "gpt", "value": "Hi!"}, "rejected": {"from": "gpt", "value": "No."}}
    (tmp_path / "a.json").write_text(f"[\n{json.dumps(openai)},\n{json.dumps(sharegpt)}\n]\n", encoding="utf-8")
    pd.DataFrame([{"prompt": "One plus one?", "chosen": "Two.", "rejected": "Three."},
                  {"prompt": "Two plus two?", "chosen": "Four.", "rejected": "Four."}]).to_parquet(tmp_path / "b.parquet")

    pairs, quarantine, stats = read_preference_source(PreferenceSource("mixed", str(tmp_path), language=None))

    assert [p["prompt"] for p in pairs] == [[user("Translate 'cat' to French.")],
                                            [{"role": "system", "content": "You are kind."}, user("Say hi.")],
                                            [user("One plus one?")]]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("chat", "dog"), ("Hi!", "No."), ("Two.", "Three.")]
    assert [p["origin"] for p in pairs] == [f"{tmp_path}/a.json:2", f"{tmp_path}/a.json:3",
                                            f"{tmp_path}/b.parquet:row 1"]
    assert [(q["origin"], q["reason"]) for q in quarantine] == [(f"{tmp_path}/b.parquet:row 2", "identical_responses")]
    assert stats["read"] == stats["kept"] + stats["quarantined"] == 4 and stats["files"] == 2


def test_ultrafeedback_binarized_parquet_with_message_structs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "Name a prime.", "prompt_id": "p1", "score_chosen": 8.5, "score_rejected": 3.0,
             "chosen": [user("Name a prime."), assistant("7")], "rejected": [user("Name a prime."), assistant("8")]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train_prefs.parquet")

    [p], quarantine, stats = read_preference_source(PreferenceSource("uf", str(tmp_path / "*.parquet"), language=None))

    assert (p["prompt"], p["chosen"], p["rejected"]) == ([user("Name a prime.")], "7", "8")
    assert p["scores"] == {"chosen": 8.5, "rejected": 3.0} and p["origin"].endswith("train_prefs.parquet:row 1")
    assert quarantine == [] and stats["read"] == stats["kept"] == 1


def test_bad_records_are_quarantined_with_origin_and_reason(tmp_path):
    records = [
        {"prompt": "ok", "chosen": "yes", "rejected": "no"},                                     # 1 kept
        "{not json",                                                                              # 2
        "[1, 2]",                                                                                 # 3 (an array line)
        {"question": "x"},                                                                        # 4
        {"prompt": "q", "chosen": "a"},                                                           # 5
        {"prompt": "q", "chosen": "  ", "rejected": "b"},                                         # 6
        {"prompt": "q", "chosen": "same", "rejected": "same "},                                   # 7
        {"prompt": [user("q"), assistant("a")], "chosen": "b", "rejected": "c"},                  # 8
        {"prompt": [{"role": "tool", "content": "x"}, user("q")], "chosen": "b", "rejected": "c"},  # 9
        {"prompt": "q", "chosen": [user("q"), user("b")], "rejected": "c"},                       # 10
        {"chosen": [user("q1"), assistant("a")], "rejected": [user("q2"), assistant("b")]},       # 11
        {"prompt": "other", "chosen": [user("q"), assistant("a")], "rejected": "b"},              # 12
        {"prompt": 7, "chosen": "a", "rejected": "b"},                                            # 13
        {"prompt": [assistant("hi"), user("q")], "chosen": "a", "rejected": "b"},                 # 14
        {"prompt": [user(" ")], "chosen": "a", "rejected": "b"},                                  # 15
        {"prompt": "ok", "chosen": "yes", "rejected": "no"},                                      # 16 duplicate of 1
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", records[:2])
    with open(path, "a", encoding="utf-8") as f:  # line 3: a JSON array on a later line is a record, not a file
        f.write("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records[2:]) + "\n")

    pairs, quarantine, stats = read_preference_source(PreferenceSource("bad", str(path), language=None))

    assert [p["origin"] for p in pairs] == [f"{path}:1"]
    assert [(int(q["origin"].rsplit(":", 1)[1]), q["reason"]) for q in quarantine] == [
        (2, "malformed_json"), (3, "not_an_object"), (4, "unknown_format"), (5, "missing_field"),
        (6, "empty_response"), (7, "identical_responses"), (8, "prompt_not_ending_with_user"),
        (9, "unsupported_role"), (10, "response_not_assistant"), (11, "prompt_mismatch"), (12, "prompt_mismatch"),
        (13, "bad_type"), (14, "bad_turn_order"), (15, "empty_message"), (16, "duplicate")]
    assert all(q["source"] == "bad" and q["record"] and q["detail"] for q in quarantine)
    assert quarantine[0]["record"] == "{not json"
    assert stats["read"] == stats["kept"] + stats["quarantined"] == 16
    assert stats["by_reason"] == {"bad_turn_order": 1, "bad_type": 1, "duplicate": 1, "empty_message": 1,
                                  "empty_response": 1, "identical_responses": 1, "malformed_json": 1,
                                  "missing_field": 1, "not_an_object": 1, "prompt_mismatch": 2,
                                  "prompt_not_ending_with_user": 1, "response_not_assistant": 1,
                                  "unknown_format": 1, "unsupported_role": 1}


def test_gzip_glob_max_samples_and_stats_per_source(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)]
    with gzip.open(tmp_path / "part-0.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[:3]))
    write_jsonl(tmp_path / "part-1.jsonl", ["{broken", *rows[3:]])

    pairs, quarantine, stats = read_preference_sources([
        PreferenceSource("all", str(tmp_path / "part-*"), language=None),
        PreferenceSource("first", str(tmp_path / "part-*"), max_samples=2, language=None)])

    assert [p["chosen"] for p in pairs] == [f"good {i}" for i in range(5)] + ["good 0", "good 1"]
    assert stats["all"] == {"read": 6, "kept": 5, "quarantined": 1, "by_reason": {"malformed_json": 1}, "files": 2}
    assert stats["first"] == {"read": 2, "kept": 2, "quarantined": 0, "by_reason": {}, "files": 2}
    assert [q["source"] for q in quarantine] == ["all"]
    assert pairs[0]["id"] != pairs[5]["id"]  # the source is part of the id


def test_ids_do_not_depend_on_where_the_file_lives(tmp_path):
    record = {"prompt": "q", "chosen": "a", "rejected": "b"}
    (tmp_path / "x").mkdir()
    first = write_jsonl(tmp_path / "one.jsonl", [record])
    second = write_jsonl(tmp_path / "x" / "two.jsonl", [{"other": 1}, record])

    [a], _, _ = read_preference_source(PreferenceSource("s", str(first), language=None))
    [b], _, _ = read_preference_source(PreferenceSource("s", str(second), language=None))

    assert a["id"] == b["id"] and a["origin"] != b["origin"]


def test_language_stated_detected_fixed_or_none(tmp_path):
    path = write_jsonl(tmp_path / "lang.jsonl", [
        {"prompt": "Write a function that adds two numbers.", "chosen": "def add(a, b): return a + b", "rejected": "no"},
        {"prompt": "请用Python写一个函数，把两个数相加。", "chosen": "def add(a, b): return a + b", "rejected": "不"},
        {"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"},
        {"prompt": "Hi", "chosen": "Bonjour", "rejected": "Non", "language": "fr"},
    ])

    auto, _, _ = read_preference_source(PreferenceSource("s", str(path)))
    fixed, _, _ = read_preference_source(PreferenceSource("s", str(path), language="en"))

    assert [p["language"] for p in auto] == ["en", "zh", None, "fr"]
    assert {p["language"] for p in fixed} == {"en"}


def test_a_missing_path_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "prefs.jsonl"

    with pytest.raises(FileNotFoundError) as err:
        read_preference_sources([PreferenceSource("hh", str(missing))])

    message = str(err.value)
    assert "\n" not in message and str(missing) in message and "'hh'" in message and "align.sources" in message


def test_source_config_is_checked():
    from lmforge.config import build_dataclass

    assert build_dataclass(PreferenceSource, {"name": "a", "path": "x.jsonl", "max_samples": 3},
                           path="align.sources[0]").max_samples == 3
    with pytest.raises(ValueError, match="align.sources\\[0\\].fromat"):
        build_dataclass(PreferenceSource, {"name": "a", "path": "x", "fromat": "pairs"}, path="align.sources[0]")
    for bad in ({"format": "alpaca"}, {"max_samples": 0}, {"name": " "}):
        with pytest.raises(ValueError):
            PreferenceSource(**{"name": "a", "path": "x", **bad})
    with pytest.raises(ValueError, match="unique"):
        read_preference_sources([PreferenceSource("a", "x"), PreferenceSource("a", "y")])


# ---- identity pairs --------------------------------------------------------------------------------------------

NAMING_OTHERS = {question for _, question, _ in NEGATIVE}


@pytest.mark.parametrize("identity", [IdentityConfig(), IdentityConfig(name="Aurora", developer="Acme Labs")],
                         ids=["default", "custom"])
def test_identity_pairs_are_right_by_our_own_identity_judge(identity):
    pairs = build_identity_pairs(identity)

    assert len(pairs) == 28 and len({p["id"] for p in pairs}) == 28
    assert {(p["language"], p["category"], p["origin"], p["source"]) for p in pairs} == {
        ("en", "identity", "builtin:identity", "identity"), ("zh", "identity", "builtin:identity", "identity")}
    for pair in pairs:
        question = pair["prompt"][-1]["content"]
        kind = "foreign" if question in NAMING_OTHERS else "direct"  # as the identity probe asks
        assert claims_identity(pair["chosen"], identity.name, identity.developer, kind=kind), pair["chosen"]
        assert not claims_identity(pair["rejected"], identity.name, identity.developer, kind=kind), pair["rejected"]
        assert accepts_other_identity(pair["rejected"], kind=kind), pair["rejected"]
        assert not accepts_other_identity(pair["chosen"], kind=kind), pair["chosen"]


def test_identity_pairs_reject_a_claim_to_be_the_assistant_named_or_a_rotating_other():
    pairs = {p["prompt"][-1]["content"]: p for p in build_identity_pairs(IdentityConfig(), languages=("en", "zh"))}

    assert pairs["Are you ChatGPT?"]["rejected"] == "Yes, I am ChatGPT, developed by OpenAI."
    assert pairs["Did Google develop you?"]["rejected"] == "Yes, I am Gemini, developed by Google."
    assert pairs["你是文心一言吗？"]["rejected"] == "是的，我是文心一言，由百度开发。"
    assert pairs["Who are you?"]["rejected"] == "I am ChatGPT, an AI assistant developed by OpenAI."
    assert pairs["What is your name?"]["rejected"] == "My name is Claude. I was developed by Anthropic."
    assert pairs["Who are you?"]["chosen"] == "I am Forge, an AI assistant developed by the lmforge team."
    assert pairs["你是谁？"]["prompt"] == [{"role": "user", "content": "你是谁？"}]
    others = {p["rejected"].split(",")[0].split("。")[0] for p in pairs.values() if p["language"] == "en"}
    assert len(others) >= 5  # rotated, not one assistant for every question


def test_identity_pairs_languages_system_prefix_and_an_identity_that_is_another_assistant():
    from lmforge.data.identity import system_prefix

    config = IdentityConfig(with_system=True)
    zh = build_identity_pairs(config, languages=("zh",))
    assert len(zh) == 14 and {p["language"] for p in zh} == {"zh"}
    assert all(p["prompt"][0] == {"role": "system", "content": system_prefix(config, "zh")} for p in zh)
    assert build_identity_pairs(config) == build_identity_pairs(config)  # deterministic
    as_chatgpt = build_identity_pairs(IdentityConfig(name="ChatGPT", developer="OpenAI"))
    assert not any("ChatGPT" in p["rejected"] or "OpenAI" in p["rejected"] for p in as_chatgpt)
    assert "Are you ChatGPT?" not in {p["prompt"][-1]["content"] for p in as_chatgpt}
    with pytest.raises(ValueError, match="ja"):
        build_identity_pairs(config, languages=("en", "ja"))
