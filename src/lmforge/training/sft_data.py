"""Tokenized SFT examples from conversations, with every dropped or shortened conversation counted.

Used by the sft stage (training examples) and the evaluation stage (held-out examples), so both
render and mask conversations the same way: the model's one chat template through
``lmforge.tokenizer.chat_tokenizer.ChatTokenizer``, labels on every assistant turn's content and the
end-of-turn token that closes it, nothing else (unless ``train_on_prompt``).

Truncation rule, for a conversation longer than ``max_length`` tokens: whole trailing turns are
dropped. The conversation is cut right after the last assistant turn at which it still fits, so the
example keeps the longest prefix ``[system], user, assistant, ..., assistant`` of at most
``max_length`` tokens; it is counted in ``truncated`` and the messages removed in
``truncated_messages``. If not even the first assistant turn fits, the conversation is dropped as
``too_long``. A turn is never cut inside: half an answer would teach the model to stop mid-way
without its end-of-turn token, and a cut prompt asks a different question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

DROP_REASONS = ("too_long", "invalid_conversation", "unmaskable")


def fit_conversation(messages: list[dict], tokenize: Callable[[list[dict]], tuple[list[int], list[int]]],
                     max_length: int) -> tuple[list[int], list[int], int] | None:
    """``(input_ids, labels, messages removed)`` under the truncation rule, or None (``too_long``).

    ``tokenize`` maps messages to ``(input_ids, labels)``; the rendering of a prefix of the messages
    is a prefix of the rendering, so fitting is monotone and a binary search over the cut points
    (after each assistant turn) needs O(log turns) tokenizations.
    """
    ids, labels = tokenize(messages)
    if len(ids) <= max_length:
        return ids, labels, 0
    cuts = [k + 1 for k, m in enumerate(messages[:-1]) if m["role"] == "assistant"]
    best = None
    lo, hi = 0, len(cuts) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        ids, labels = tokenize(messages[: cuts[mid]])
        if len(ids) <= max_length:
            best = (ids, labels, len(messages) - cuts[mid])
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def build_sft_examples(conversations: Iterable[Mapping[str, Any]], chat: ChatTokenizer, *,
                       max_length: int, train_on_prompt: bool = False) -> tuple[list[dict], dict[str, Any]]:
    """``[{"id", "input_ids", "labels"}]`` and stats.

    Stats: ``conversations_in``, ``examples``, ``dropped`` per reason (``too_long``: not even the first
    assistant turn fits, see the module's truncation rule; ``invalid_conversation``: unknown role,
    bad content, or content holding special-token text such as ``<|im_end|>`` that would break the
    chat structure; ``unmaskable``: the template renders this conversation so that the trained spans
    cannot be cut between tokens, the first reason in ``unmaskable_reason``), ``truncated`` /
    ``truncated_messages``, ``tokens``, ``trained_tokens``, ``trained_token_fraction`` and
    ``examples_per_source`` (by each conversation's ``source``). Raises when no conversation could
    be masked: the template, not the data, is wrong then.
    """
    from lmforge.tokenizer.chat_tokenizer import IGNORE_INDEX, ChatTemplateError

    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")

    def tokenize(messages: list[dict]) -> tuple[list[int], list[int]]:
        return chat.encode_conversation(messages, train_on_prompt=train_on_prompt)

    examples: list[dict] = []
    dropped: Counter = Counter()
    per_source: Counter = Counter()
    trained = total = n_in = truncated = truncated_messages = 0
    unmaskable_reason = None
    for conv in conversations:
        n_in += 1
        try:
            fitted = fit_conversation(list(conv["messages"]), tokenize, max_length)
        except ChatTemplateError as err:
            dropped["unmaskable"] += 1
            unmaskable_reason = unmaskable_reason or str(err)
            continue
        except (ValueError, KeyError, TypeError, AttributeError):
            dropped["invalid_conversation"] += 1
            continue
        if fitted is None:
            dropped["too_long"] += 1
            continue
        ids, labels, removed = fitted
        if removed:
            truncated += 1
            truncated_messages += removed
        trained += sum(1 for x in labels if x != IGNORE_INDEX)
        total += len(ids)
        per_source[str(conv.get("source", "unknown"))] += 1
        examples.append({"id": conv.get("id"), "input_ids": ids, "labels": labels})
    assert n_in == len(examples) + sum(dropped.values())
    if n_in and dropped["unmaskable"] == n_in:
        raise ChatTemplateError(f"no conversation could be masked with {chat.source}'s chat template: {unmaskable_reason}")
    return examples, {"conversations_in": n_in, "examples": len(examples),
                      "dropped": {k: dropped.get(k, 0) for k in DROP_REASONS},
                      "truncated": truncated, "truncated_messages": truncated_messages,
                      "tokens": total, "trained_tokens": trained,
                      "trained_token_fraction": trained / max(total, 1),
                      "examples_per_source": dict(sorted(per_source.items())),
                      **({"unmaskable_reason": unmaskable_reason} if unmaskable_reason else {})}
