"""Tokenized SFT examples from conversations, with every dropped conversation counted by reason.

Used by the sft stage (training examples) and the evaluation stage (held-out examples), so both
render and mask conversations the same way: the tokenizer directory's one chat template, labels on
assistant turns only (unless ``train_on_prompt``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


def build_sft_examples(conversations: Iterable[Mapping[str, Any]], tokenizer: Any, template: str, *,
                       max_length: int, train_on_prompt: bool = False) -> tuple[list[dict], dict[str, Any]]:
    """``[{"id", "input_ids", "labels"}]`` and stats: examples, dropped per reason, trained-token share.

    Reasons: ``too_long`` (over ``max_length`` tokens; dropped, not truncated, so no answer is cut),
    ``invalid_conversation`` (unknown role, or content holding special-token text such as
    ``<|im_end|>`` that would break the chat structure).
    """
    from lmforge.tokenizer.chat_template import tokenize_conversation

    examples: list[dict] = []
    dropped: Counter = Counter()
    trained = total = n_in = 0
    for conv in conversations:
        n_in += 1
        try:
            ids, labels = tokenize_conversation(list(conv["messages"]), tokenizer, template,
                                                train_on_prompt=train_on_prompt)
        except (ValueError, KeyError, TypeError):
            dropped["invalid_conversation"] += 1
            continue
        if len(ids) > max_length:
            dropped["too_long"] += 1
            continue
        trained += sum(1 for x in labels if x != -100)
        total += len(ids)
        examples.append({"id": conv.get("id"), "input_ids": ids, "labels": labels})
    assert n_in == len(examples) + sum(dropped.values())
    return examples, {"conversations_in": n_in, "examples": len(examples),
                      "dropped": {k: dropped.get(k, 0) for k in ("too_long", "invalid_conversation")},
                      "trained_token_fraction": trained / max(total, 1)}
