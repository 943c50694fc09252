"""SFT examples: assistant-only labels (every turn), the truncation rule, drops counted by reason, the JSONL reader."""

from __future__ import annotations

import json

import pytest

from lmforge.training.sft import load_examples
from lmforge.training.sft_data import build_sft_examples


@pytest.fixture(scope="module")
def tok_and_template(chain_tokenizer_dir):
    from lmforge.tokenizer.artifact import load_tokenizer
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    # (the sentencepiece model, an independent decoder; the ChatTokenizer that builds the examples)
    return load_tokenizer(chain_tokenizer_dir)[0], ChatTokenizer.load(chain_tokenizer_dir)


def conversation(cid, question, answer):
    return {"id": cid, "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_labels_cover_only_the_assistant_turn(tok_and_template):
    tok, chat = tok_and_template
    conv = conversation("c1", "Add two numbers.", "return a + b")

    [example], stats = build_sft_examples([conv], chat, max_length=512)

    trained = [i for i, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    assert example["id"] == "c1"
    assert tok.decode(trained) == "return a + b<|im_end|>"
    assert stats["examples"] == 1
    assert 0 < stats["trained_token_fraction"] < 1


def test_train_on_prompt_trains_every_token(tok_and_template):
    tok, chat = tok_and_template

    [example], stats = build_sft_examples([conversation("c", "Q?", "A.")], chat, max_length=512,
                                          train_on_prompt=True)

    assert example["labels"] == example["input_ids"]
    assert stats["trained_token_fraction"] == 1.0


def test_dropped_conversations_are_counted_by_reason(tok_and_template):
    tok, chat = tok_and_template
    conversations = [
        conversation("ok", "Hi", "Hello"),
        conversation("long", "x " * 400, "y"),
        conversation("injected", "Hi", "Bye<|im_end|>"),
        {"id": "bad-role", "messages": [{"role": "robot", "content": "beep"}]},
    ]

    examples, stats = build_sft_examples(conversations, chat, max_length=64)

    assert [e["id"] for e in examples] == ["ok"]
    assert stats["conversations_in"] == 4
    assert stats["dropped"] == {"too_long": 1, "invalid_conversation": 2, "unmaskable": 0}
    assert stats["conversations_in"] == stats["examples"] + sum(stats["dropped"].values())


def trained_runs(example):
    """The maximal runs of consecutive trained (labelled) token ids."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != -100:
            assert label == token  # labels are the ids themselves (unshifted)
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return [*runs, current] if current else runs


THREE_TURNS = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "First question?"},
    {"role": "assistant", "content": "First answer."},
    {"role": "user", "content": "Second question?"},
    {"role": "assistant", "content": "Second answer."},
    {"role": "user", "content": "Third question?"},
    {"role": "assistant", "content": "Third answer."},
]


def test_every_assistant_turn_and_no_user_or_system_token_is_trained(tok_and_template):
    tok, chat = tok_and_template

    [example], stats = build_sft_examples([{"id": "3t", "messages": THREE_TURNS}], chat, max_length=512)

    runs = trained_runs(example)
    answers = [m["content"] for m in THREE_TURNS if m["role"] == "assistant"]
    assert [tok.decode(run) for run in runs] == [f"{a}<|im_end|>" for a in answers]
    untrained = tok.decode([t for t, label in zip(example["input_ids"], example["labels"], strict=True)
                            if label == -100])
    for message in THREE_TURNS:  # every prompt token is masked, no answer token is
        assert (message["content"] in untrained) == (message["role"] != "assistant")
    assert example["input_ids"][0] == tok.bos_id  # <s> first, as the template says
    assert tok.eos_id not in example["input_ids"]  # turns end with <|im_end|>, not </s>
    assert stats["trained_tokens"] == sum(len(r) for r in runs)
    assert stats["trained_token_fraction"] == stats["trained_tokens"] / len(example["input_ids"])


def test_long_conversations_lose_whole_trailing_turns(tok_and_template):
    tok, chat = tok_and_template
    [full], _ = build_sft_examples([{"id": "full", "messages": THREE_TURNS}], chat, max_length=512)
    [two_turns], _ = build_sft_examples([{"id": "two", "messages": THREE_TURNS[:5]}], chat, max_length=512)
    [one_turn], _ = build_sft_examples([{"id": "one", "messages": THREE_TURNS[:3]}], chat, max_length=512)
    budget = len(two_turns["input_ids"])
    assert len(one_turn["input_ids"]) < budget < len(full["input_ids"])

    examples, stats = build_sft_examples([{"id": "t", "messages": THREE_TURNS, "source": "s"}], chat,
                                         max_length=budget)
    assert examples == [{"id": "t", "input_ids": two_turns["input_ids"], "labels": two_turns["labels"]}]
    assert (stats["truncated"], stats["truncated_messages"]) == (1, 2)
    assert stats["examples_per_source"] == {"s": 1}

    examples, stats = build_sft_examples([{"id": "t", "messages": THREE_TURNS}], chat,
                                         max_length=len(one_turn["input_ids"]) - 1)
    assert examples == [] and stats["dropped"]["too_long"] == 1  # not even the first answer fits
    assert stats["truncated"] == 0


def test_load_examples_reads_jsonl_and_names_a_bad_line(tmp_path):
    good = tmp_path / "train.jsonl"
    good.write_text(json.dumps({"input_ids": [1, 2], "labels": [-100, 2]}) + "\n\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input_ids": [1]}) + "\n", encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")

    assert load_examples(str(good)) == [([1, 2], [-100, 2])]
    with pytest.raises(ValueError, match=f"{bad}:1: bad SFT example"):
        load_examples(str(bad))
    with pytest.raises(ValueError, match="no SFT examples"):
        load_examples(str(empty))
