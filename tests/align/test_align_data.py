"""Tokenized preference pairs: SFT's rendering and masks (prompt tokens -100), the truncation rule (the prompt keeps
its end, whole leading turns dropped, responses cut from the right), quarantine by reason, the split by prompt and
the pairs' content hash."""

from __future__ import annotations

import pytest

from lmforge.align.data import pairs_sha256, split_pairs, tokenize_pairs
from lmforge.data.preferences import make_pair


@pytest.fixture(scope="module")
def chat(tiny_tokenizer_dir):
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    return ChatTokenizer.load(tiny_tokenizer_dir)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


SYSTEM = {"role": "system", "content": "Be brief."}


def pair(prompt, chosen, rejected, source="t"):
    return make_pair(source, prompt, chosen, rejected, origin=f"{source}.jsonl:1")


def trained(example, side):
    return [i for i, label in zip(example[f"{side}_input_ids"], example[f"{side}_labels"], strict=True) if label != -100]


def test_prompt_tokens_carry_no_loss_and_responses_are_sft_turns(chat):
    prompt = [SYSTEM, user("add a and b"), assistant("def add(a, b):"), user("and return it")]
    p = pair(prompt, "return a + b", "print(a)")

    [example], quarantine, stats = tokenize_pairs([p], chat, max_length=256, max_prompt_length=128)

    prompt_ids = chat.encode_prompt(prompt)
    n = len(prompt_ids)
    assert quarantine == [] and example["id"] == p["id"]
    for side, answer in (("chosen", "return a + b"), ("rejected", "print(a)")):
        ids, labels = example[f"{side}_input_ids"], example[f"{side}_labels"]
        assert ids[:n] == prompt_ids and labels[:n] == [-100] * n  # the earlier assistant turn too
        assert labels[n:] == ids[n:] and ids[-1] == chat.end_of_turn_id
        assert chat.tokenizer.decode(trained(example, side)) == f"{answer}<|im_end|>"
        # the one template: SFT's ids of the same conversation, up to the end of the last turn
        sft_ids, sft_labels = chat.encode_conversation([*prompt, assistant(answer)])
        assert sft_ids[:len(ids)] == ids and sft_labels[n:len(ids)] == labels[n:]
    assert stats["pairs_in"] == stats["examples"] == 1 and sum(stats["quarantined"].values()) == 0
    assert stats["prompt_tokens_max"] == n


def test_long_prompts_lose_whole_leading_turns_and_keep_system_and_last_user_turn(chat):
    history = [user("first question " * 8), assistant("first answer " * 8), user("second question " * 8),
               assistant("second answer " * 8)]
    prompt = [SYSTEM, *history, user("last question")]
    kept = [SYSTEM, user("last question")]
    budget = len(chat.encode_prompt([SYSTEM, *history[2:], user("last question")])) - 1  # one exchange too many

    [example], _, stats = tokenize_pairs([pair(prompt, "yes", "no")], chat, max_length=budget + 16,
                                         max_prompt_length=budget)

    prompt_ids = chat.encode_prompt(kept)
    assert example["chosen_input_ids"][:len(prompt_ids)] == prompt_ids
    assert example["chosen_labels"].count(-100) == len(prompt_ids)
    assert stats["prompt_truncated"] == 1 and stats["prompt_turns_dropped"] == 4

    middle = len(chat.encode_prompt([SYSTEM, *history[2:], user("last question")]))
    [example], _, stats = tokenize_pairs([pair(prompt, "yes", "no")], chat, max_length=middle + 16,
                                         max_prompt_length=middle)
    assert example["chosen_labels"].count(-100) == middle and stats["prompt_turns_dropped"] == 2


def test_a_last_turn_too_long_is_quarantined_never_cut(chat):
    pairs = [pair([user("short")], "a", "b"), pair([user("very long question " * 20)], "a", "b", source="long")]

    examples, quarantine, stats = tokenize_pairs(pairs, chat, max_length=64, max_prompt_length=32)

    assert [e["id"] for e in examples] == [pairs[0]["id"]]
    assert [(q["source"], q["origin"], q["id"], q["reason"]) for q in quarantine] == [
        ("long", "long.jsonl:1", pairs[1]["id"], "prompt_too_long")]
    assert stats["quarantined"]["prompt_too_long"] == 1
    assert stats["pairs_in"] == stats["examples"] + sum(stats["quarantined"].values())


def test_responses_are_cut_from_the_right_to_max_length(chat):
    prompt = [user("count")]
    n = len(chat.encode_prompt(prompt))
    long_answer = " ".join(str(i) for i in range(60))

    [example], _, stats = tokenize_pairs([pair(prompt, long_answer, "no")], chat, max_length=n + 10,
                                         max_prompt_length=n)

    assert len(example["chosen_input_ids"]) == n + 10 and example["chosen_input_ids"][-1] != chat.end_of_turn_id
    assert chat.tokenizer.decode(trained(example, "chosen")) == chat.tokenizer.decode(
        chat.encode_conversation([*prompt, assistant(long_answer)])[0][n:n + 10])
    assert example["rejected_input_ids"][-1] == chat.end_of_turn_id  # short enough: whole, with its end-of-turn
    assert (stats["chosen_truncated"], stats["rejected_truncated"]) == (1, 0)


def test_identical_after_truncation_and_invalid_pairs_are_quarantined(chat):
    prompt = [user("q")]
    n = len(chat.encode_prompt(prompt))
    shared = "x = 1\n" * 20
    pairs = [pair(prompt, shared + "good", shared + "bad"),
             pair(prompt, "fine<|im_end|>", "ok"),
             pair([user("q"), assistant("a")], "b", "c"),
             {"id": "broken", "source": "t", "prompt": [user("q")], "chosen": "a"}]

    examples, quarantine, stats = tokenize_pairs(pairs, chat, max_length=n + 8, max_prompt_length=n)

    assert examples == []
    assert [q["reason"] for q in quarantine] == ["identical_after_truncation", "invalid_pair", "invalid_pair",
                                                 "invalid_pair"]
    assert "special-token" in quarantine[1]["detail"] and "user turn" in quarantine[2]["detail"]
    assert stats["quarantined"] == {"prompt_too_long": 0, "identical_after_truncation": 1, "invalid_pair": 3,
                                    "unmaskable": 0}
    with pytest.raises(ValueError, match="room"):
        tokenize_pairs(pairs, chat, max_length=32, max_prompt_length=32)


def test_identity_pairs_tokenize_in_both_languages(chat):
    from lmforge.data.identity import IdentityConfig
    from lmforge.data.preferences import build_identity_pairs

    pairs = build_identity_pairs(IdentityConfig())

    examples, quarantine, stats = tokenize_pairs(pairs, chat, max_length=512, max_prompt_length=128)

    assert quarantine == [] and len(examples) == len(pairs) == 28
    decoded = chat.tokenizer.decode(trained(examples[-1], "rejected"))
    assert decoded == f"{pairs[-1]['rejected']}<|im_end|>"


def test_split_by_prompt_is_deterministic_keeps_prompts_together_and_never_empty():
    pairs = [pair([user(f"q{i % 7}")], f"good {i}", f"bad {i}") for i in range(40)]

    train, validation = split_pairs(pairs, 0.3, seed=0)

    assert (train, validation) == split_pairs(pairs, 0.3, seed=0)
    assert len(train) + len(validation) == 40 and train and validation
    assert not {p["prompt"][0]["content"] for p in train} & {p["prompt"][0]["content"] for p in validation}
    assert [p["id"] for p in train] == [p["id"] for p in pairs if p in train]  # input order kept
    assert split_pairs(pairs, 0.0, seed=0) == (pairs, [])
    tiny_train, tiny_validation = split_pairs(pairs[:2], 0.01, seed=0)
    assert len(tiny_train) == len(tiny_validation) == 1
    assert {p["id"] for p in split_pairs(pairs, 0.3, seed=1)[1]} != {p["id"] for p in validation}


def test_pairs_sha256_follows_content_and_order_not_origin():
    a, b = pair([user("q1")], "a", "b"), pair([user("q2")], "c", "d")
    moved = {**a, "origin": "elsewhere/prefs.jsonl:9"}

    assert pairs_sha256([a, b]) == pairs_sha256([moved, b])
    assert pairs_sha256([a, b]) != pairs_sha256([b, a])
    assert pairs_sha256([a, b]) != pairs_sha256([{**a, "chosen": "A"}, b])
    assert len(pairs_sha256([])) == 64
