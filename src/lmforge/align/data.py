"""Tokenized preference examples from preference pairs, the held-out split by prompt, and the pairs' content hash.

Rendering is SFT's (``lmforge.training.sft_data``), through the model's one chat template
(``lmforge.tokenizer.chat_tokenizer.ChatTokenizer``): the prompt is ``encode_prompt(prompt)``, the ids a model is
prompted with (the messages rendered with the generation prompt), and a response is exactly the labelled tokens
SFT trains on for an assistant turn: its content and the end-of-turn token that closes it (taken from
``encode_conversation(prompt + [answer])``, checked to start where the prompt's ids end). An example::

    {"id", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}

``*_input_ids`` = prompt ids + response ids; ``*_labels`` = -100 on every prompt token (earlier assistant turns
of the prompt included), the response ids after it (not shifted; ``lmforge.align.losses.sequence_logps`` shifts).

Truncation rule (counted in the stats; ``max_prompt_length < max_length``):

1. The prompt keeps its end: the last user turn and the generation prompt are never cut. A prompt longer than
   ``max_prompt_length`` tokens loses whole leading turns first (user/assistant exchanges, oldest first; a system
   message is kept), so it still starts with a user turn (``prompt_truncated``, ``prompt_turns_dropped``). When
   the system message and the last user turn alone are still too long, the pair is quarantined as
   ``prompt_too_long``: a turn is never cut inside (a cut question asks something else).
2. Each response is cut from the right to ``max_length - len(prompt)`` tokens (``chosen_truncated`` /
   ``rejected_truncated``). A cut response has no end-of-turn token: the pair still says which beginning is
   preferred, and the loss sums log-probabilities over the tokens present, so nothing is mislabelled.
3. A pair whose two cut responses are the same tokens (a long shared beginning) has nothing left to prefer and
   is quarantined as ``identical_after_truncation``.

Other quarantine reasons: ``invalid_pair`` (a role or content the chat tokenizer refuses, e.g. special-token
text such as ``<|im_end|>`` inside a message) and ``unmaskable`` (the template's spans fall inside tokens, or the
prompt tokenizes differently inside the conversation). ``pairs_in == examples + sum(quarantined)``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lmforge.data.splits import hash_unit_interval

if TYPE_CHECKING:
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

QUARANTINE_REASONS = ("prompt_too_long", "identical_after_truncation", "invalid_pair", "unmaskable")
QUARANTINE_RECORD_CHARS = 2000  # a quarantined pair is kept as JSON text cut to this many characters


def fit_prompt(prompt: Sequence[Mapping[str, str]], chat: ChatTokenizer,
               max_prompt_length: int) -> tuple[list[int], list[dict], int] | None:
    """``(prompt ids, prompt messages kept, messages dropped)`` under rule 1 of the module docstring, or None.

    The candidates keep the system message and start at a user turn, oldest first; the first that fits is the
    longest, found by a binary search (a later start renders a shorter text).
    """
    messages = [dict(m) for m in prompt]
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("the prompt must end with a user turn")
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(system):]
    starts = [k for k, m in enumerate(body) if m["role"] == "user" and k > 0]
    ids = chat.encode_prompt(messages)
    if len(ids) <= max_prompt_length:
        return ids, messages, 0
    best = None
    lo, hi = 0, len(starts) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        kept = system + body[starts[mid]:]
        ids = chat.encode_prompt(kept)
        if len(ids) <= max_prompt_length:
            best, hi = (ids, kept, starts[mid]), mid - 1
        else:
            lo = mid + 1
    return best


def encode_response(chat: ChatTokenizer, prompt: Sequence[Mapping[str, str]], prompt_ids: Sequence[int],
                 answer: str) -> list[int]:
    """The ids SFT labels for ``answer`` as the assistant's turn after ``prompt`` (content + end-of-turn)."""
    from lmforge.tokenizer.chat_tokenizer import IGNORE_INDEX, ChatTemplateError

    ids, labels = chat.encode_conversation([*prompt, {"role": "assistant", "content": answer}])
    n = len(prompt_ids)
    if ids[:n] != list(prompt_ids):
        raise ChatTemplateError("the prompt tokenizes differently inside the conversation than alone: the model "
                                "would be scored on ids it is never prompted with")
    last = max(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    if last < n or labels[n:last + 1] != ids[n:last + 1]:
        raise ChatTemplateError("the assistant turn's labelled tokens do not start where the generation prompt ends")
    return ids[n:last + 1]


def tokenize_pairs(pairs: Iterable[Mapping[str, Any]], chat: ChatTokenizer, *, max_length: int,
                   max_prompt_length: int) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(examples, quarantined pairs ``{"source", "origin", "id", "reason", "detail", "record"}``, stats).

    Stats: ``pairs_in``, ``examples``, ``quarantined`` per reason, the truncation counts of the module docstring,
    ``tokens`` (chosen + rejected sequences), ``prompt_tokens_max``. Raises when no pair could be masked: the
    template, not the data, is wrong then.
    """
    from lmforge.tokenizer.chat_tokenizer import IGNORE_INDEX, ChatTemplateError

    if not 1 <= max_prompt_length < max_length:
        raise ValueError(f"max_prompt_length ({max_prompt_length}) must be >= 1 and below max_length "
                         f"({max_length}): the responses need room")
    examples: list[dict] = []
    quarantine: list[dict] = []
    reasons: Counter = Counter()
    counts = Counter()
    n_in = tokens = prompt_max = 0
    unmaskable_reason = None

    def drop(pair: Mapping[str, Any], reason: str, detail: str) -> None:
        reasons[reason] += 1
        text = json.dumps(dict(pair), ensure_ascii=False, default=str)
        quarantine.append({"source": pair.get("source"), "origin": pair.get("origin"), "id": pair.get("id"),
                           "reason": reason, "detail": detail, "record": text[:QUARANTINE_RECORD_CHARS]})

    for pair in pairs:
        n_in += 1
        try:
            fitted = fit_prompt(pair["prompt"], chat, max_prompt_length)
            if fitted is None:
                drop(pair, "prompt_too_long", f"the system message and last user turn alone exceed "
                                              f"max_prompt_length {max_prompt_length} tokens")
                continue
            prompt_ids, prompt, dropped_turns = fitted
            chosen = encode_response(chat, prompt, prompt_ids, pair["chosen"])
            rejected = encode_response(chat, prompt, prompt_ids, pair["rejected"])
        except ChatTemplateError as err:
            unmaskable_reason = unmaskable_reason or str(err)
            drop(pair, "unmaskable", str(err))
            continue
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            drop(pair, "invalid_pair", f"{type(err).__name__}: {err}")
            continue
        room = max_length - len(prompt_ids)
        if chosen[:room] == rejected[:room]:
            drop(pair, "identical_after_truncation", f"chosen and rejected share their first {room} tokens, all "
                                                     f"that max_length {max_length} leaves after the prompt")
            continue
        counts["chosen_truncated"] += len(chosen) > room
        counts["rejected_truncated"] += len(rejected) > room
        chosen, rejected = chosen[:room], rejected[:room]
        if dropped_turns:
            counts["prompt_truncated"] += 1
            counts["prompt_turns_dropped"] += dropped_turns
        prompt_labels = [IGNORE_INDEX] * len(prompt_ids)
        examples.append({"id": pair.get("id"),
                         "chosen_input_ids": [*prompt_ids, *chosen], "chosen_labels": [*prompt_labels, *chosen],
                         "rejected_input_ids": [*prompt_ids, *rejected],
                         "rejected_labels": [*prompt_labels, *rejected]})
        tokens += 2 * len(prompt_ids) + len(chosen) + len(rejected)
        prompt_max = max(prompt_max, len(prompt_ids))
    assert n_in == len(examples) + sum(reasons.values())
    if n_in and reasons["unmaskable"] == n_in:
        raise ChatTemplateError(f"no preference pair could be masked with {chat.source}'s chat template: "
                                f"{unmaskable_reason}")
    stats = {"pairs_in": n_in, "examples": len(examples),
             "quarantined": {reason: reasons.get(reason, 0) for reason in QUARANTINE_REASONS},
             **{key: counts.get(key, 0) for key in ("prompt_truncated", "prompt_turns_dropped", "chosen_truncated",
                                                   "rejected_truncated")},
             "tokens": tokens, "prompt_tokens_max": prompt_max, "max_length": max_length,
             "max_prompt_length": max_prompt_length}
    return examples, quarantine, stats


def hash_prompt(prompt: Sequence[Mapping[str, str]]) -> str:
    """sha256 of the prompt messages as canonical JSON: pairs with one prompt share it."""
    payload = json.dumps([dict(m) for m in prompt], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def split_pairs(pairs: Sequence[Mapping[str, Any]], validation_fraction: float,
                seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation), each in input order, by a hash of (seed, prompt): pairs sharing a prompt stay together.

    A prompt's side depends only on (seed, prompt), as ``lmforge.data.splits.assign_split``; with a fraction in
    (0, 1) and at least two distinct prompts neither side is empty (the prompt with the smallest hash moves to
    validation, or the one with the largest to train, when needed).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    keys = [hash_prompt(p["prompt"]) for p in pairs]
    position = {key: hash_unit_interval(key, seed) for key in keys}
    held = {key for key, h in position.items() if h < validation_fraction}
    if validation_fraction > 0 and len(position) >= 2:
        if not held:
            held = {min(position, key=position.__getitem__)}
        elif len(held) == len(position):
            held -= {max(position, key=position.__getitem__)}
    train = [dict(p) for p, key in zip(pairs, keys, strict=True) if key not in held]
    validation = [dict(p) for p, key in zip(pairs, keys, strict=True) if key in held]
    return train, validation


def pairs_sha256(pairs: Iterable[Mapping[str, Any]]) -> str:
    """Content hash of the pairs in order (the order is trained on): every field but ``origin``, canonical JSON.

    ``origin`` names a file path and line, which change when the data moves while the content does not.
    """
    digest = hashlib.sha256()
    for pair in pairs:
        content = {k: v for k, v in pair.items() if k != "origin"}
        digest.update(json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
