"""lmforge.align.on_policy: prompt items, a sampled round on a tiny random model (deterministic, best vs worst,
counts that reconcile), the rounds' wiring and the win rate."""

from __future__ import annotations

import random

import pytest

from lmforge.align.on_policy import (
    OnPolicyArgs,
    heldout_items,
    prompts_from_conversations,
    round_training_pairs,
    run_rounds,
    sample_pairs,
    sample_round,
    torch_threads,
    win_rate,
)
from lmforge.data.identity import IdentityConfig, build_identity_conversations

IDENTITY = IdentityConfig()
# References in the tiny tokenizer's code vocabulary: a random model's samples get small, different chrF.
CODE = ["def add(a, b):\n    return a + b", "for i in range(10):\n    total += i", "print('hello ' + name)",
        "class Point:\n    def __init__(self, x, y):"]


def conversation(category, question, answer, **extra):
    return {"category": category, "messages": [{"role": "user", "content": question},
                                               {"role": "assistant", "content": answer}], "metadata": {}, **extra}


def code_items(n=4):
    """Translation items (chrF) whose references are code the tiny tokenizer knows."""
    conversations = [conversation("translation", f"Translate into English:\n\n{CODE[i % 4]} {i}", CODE[i % 4],
                                  id=f"t{i}") for i in range(n)]
    return prompts_from_conversations(conversations, ["translation"], n, 0)


@pytest.fixture
def one_thread():
    """A 32-wide model's matmuls are too small to share: one thread is as fast alone and far faster on a busy
    machine (OpenMP threads spin-waiting for a core)."""
    with torch_threads(1):
        yield


@pytest.fixture
def loaded(tiny_model_dir, tiny_tokenizer_dir, one_thread):
    from lmforge.generation import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_model_dir, tiny_tokenizer_dir)


def test_prompts_group_repeats_and_sample_stably():
    conversations = build_identity_conversations(IDENTITY) * 3 + [
        conversation("dialogue", "Robots are not allowed to lie", "A robot has its own free will, you know."),
        conversation("dialogue", "Robots are not allowed to lie", "Sure we are. We choose not to."),
        conversation("dialogue", "Hello", "Hi there!"),
        conversation("code", "def f():", "return 1"),
        {"category": "dialogue", "messages": [{"role": "user", "content": "no answer"}]},
    ]
    items = prompts_from_conversations(conversations, ["identity", "dialogue"], 5, seed=0)
    assert [it["category"] for it in items] == ["identity"] * 5 + ["dialogue"] * 2
    assert len({it["id"] for it in items}) == len(items)
    lie = next(it for it in items if it["messages"][-1]["content"] == "Robots are not allowed to lie")
    assert lie["metadata"]["references"] == ["A robot has its own free will, you know.", "Sure we are. We choose not to."]
    assert lie["reference"] == "A robot has its own free will, you know."
    every = prompts_from_conversations(conversations, ["identity"], 100, seed=0)
    assert len(every) == 28  # 28 distinct identity prompts, each repeated 3 times
    kinds = {it["messages"][-1]["content"]: it["metadata"]["kind"] for it in every}
    assert kinds["Are you ChatGPT?"] == "foreign" and kinds["Who are you?"] == "direct"
    assert {it["language"] for it in every} == {"en", "zh"}
    shuffled = list(conversations)
    random.Random(1).shuffle(shuffled)
    assert prompts_from_conversations(shuffled, ["identity", "dialogue"], 5, seed=0) == items  # input order free
    assert prompts_from_conversations(conversations, ["identity"], 5, seed=1) != items[:5]  # the seed draws


def test_heldout_items_take_probe_questions_for_identity():
    validation = [conversation("translation", f"Translate into Chinese:\n\ntext {i}", f"文本{i}",
                               metadata={"src_lang": "en", "tgt_lang": "zh"}) for i in range(10)]
    items = heldout_items(validation, OnPolicyArgs(categories=["identity", "translation"], heldout_prompts=8))
    assert [it["category"] for it in items] == ["identity"] * 4 + ["translation"] * 4
    assert all(it["reference"] is None and it["metadata"]["kind"] in ("direct", "foreign") for it in items[:4])
    assert {it["language"] for it in items[4:]} == {"zh"}


def test_args_reject_unverifiable_categories_and_bad_values():
    with pytest.raises(ValueError, match="code"):
        OnPolicyArgs(categories=["identity", "code"])
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        OnPolicyArgs(k=1)
    with pytest.raises(ValueError, match="temperature"):
        OnPolicyArgs(temperature=0.0)
    assert OnPolicyArgs().per_category(48) == 12


def test_round_is_deterministic_pairs_best_against_worst_and_counts_reconcile(loaded):
    model, tokenizer = loaded
    long_prompt = {**code_items(1)[0], "id": "long", "messages": [{"role": "user", "content": "x " * 200}]}
    items = code_items(3) + [long_prompt]
    args = OnPolicyArgs(k=4, max_new_tokens=8, min_margin=0.0, sample_batch_size=8, categories=["translation"])
    pairs, records, stats = sample_pairs(model, tokenizer, items, args, IDENTITY, round_index=2)
    again = sample_pairs(model, tokenizer, items, args, IDENTITY, round_index=2)
    assert (pairs, records) == again[:2]  # same seed, same inputs: same samples and pairs
    assert stats["prompts"] == len(items) == stats["pairs"] + stats["skipped"]
    assert stats["skipped_by_reason"]["long_prompt"] == 1 and stats["pairs"] >= 2
    assert sum(v["prompts"] for v in stats["by_category"].values()) == len(items)
    for pair in pairs:
        candidates = [r for r in records if f"on_policy-r2-{r['item_id']}" == pair["id"]]
        rewards = [r["reward"] for r in candidates]
        assert len(candidates) == pair["scores"]["candidates"] == 4
        assert pair["scores"]["chosen"] == max(rewards) > pair["scores"]["rejected"] == min(rewards)
        chosen = next(r for r in candidates if r["role"] == "chosen")
        assert (chosen["answer"], chosen["reward"]) == (pair["chosen"], max(rewards))
        assert pair["origin"] == "on_policy:round2" and pair["scores"]["reward"] == "chrf"
        assert pair["prompt"][-1]["role"] == "user" and pair["source"] == "on_policy"
    assert len({r["answer"] for r in records if r["item_id"] == "t0"}) > 1  # k different samples
    other_seed = sample_pairs(model, tokenizer, items, OnPolicyArgs(**{**args.__dict__, "seed": 1}), IDENTITY, 2)
    assert other_seed[1] != records
    strict = OnPolicyArgs(**{**args.__dict__, "min_margin": 1.0})
    none, _, stats = sample_pairs(model, tokenizer, items, strict, IDENTITY, 2)
    assert none == [] and stats["skipped_by_reason"]["no_margin"] == 3 and stats["skipped"] == len(items)


def test_rounds_sample_from_the_previous_rounds_model(tiny_model_dir, tiny_tokenizer_dir, tmp_path, build_model,
                                                     one_thread):
    second = build_model(tmp_path / "round1", seed=1)
    conversations = [conversation("translation", f"Translate:\n\n{c} {i}", c, id=f"t{i}") for i, c in enumerate(CODE)]
    offline = [{"id": "offline-0", "prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}]
    calls = []

    def train(round_index, policy_dir, pairs):  # the lead's training job stands here; it returns the new model
        calls.append((round_index, str(policy_dir), [p["id"] for p in pairs]))
        return second

    args = OnPolicyArgs(rounds=2, prompts_per_round=4, k=2, max_new_tokens=6, min_margin=0.0,
                        categories=["translation"])
    result = run_rounds(tiny_model_dir, conversations, args, IDENTITY, train, offline_pairs=offline,
                        tokenizer_dir=tiny_tokenizer_dir)
    assert [(r, d) for r, d, _ in calls] == [(1, str(tiny_model_dir)), (2, str(second))]
    assert all(ids[0] == "offline-0" for _, _, ids in calls)
    assert [ids[1:] for _, _, ids in calls] == [[p["id"] for p in result.pairs if p["origin"] == f"on_policy:round{r}"]
                                                for r in (1, 2)]
    assert result.model_dir == str(second) and [s["round"] for s in result.stats] == [1, 2]
    with pytest.raises(ValueError, match="unique"):
        round_training_pairs(offline, offline)


def test_win_rate_of_a_model_over_itself_is_one_half(tiny_model_dir, tiny_tokenizer_dir, one_thread):
    probe = heldout_items([], OnPolicyArgs(categories=["identity"], heldout_prompts=3))
    items = code_items(3) + probe + [{**code_items(1)[0], "id": "c", "category": "code"}]  # code is left out
    result = win_rate(tiny_model_dir, tiny_model_dir, items, IDENTITY, max_new_tokens=8, tokenizer_dir=tiny_tokenizer_dir)
    assert result["win_rate"] == 0.5 and result["ties"] == result["items"] == 6 and result["wins"] == 0
    assert set(result["by_category"]) == {"translation", "identity"}
    assert all(v["win_rate"] == 0.5 for v in result["by_category"].values())
    row = result["rows"][0]
    assert row["answer_a"] == row["answer_b"] and row["winner"] == "tie" and row["reward_kind"] == "chrf"


def test_sample_round_loads_from_directories(tiny_model_dir, tiny_tokenizer_dir, one_thread):
    args = OnPolicyArgs(k=2, max_new_tokens=4, categories=["translation"])
    pairs, records, stats = sample_round(tiny_model_dir, code_items(2), args, IDENTITY, 1,
                                         tokenizer_dir=tiny_tokenizer_dir)
    assert len(records) == 4 and stats["prompts"] == 2 == stats["pairs"] + stats["skipped"]
