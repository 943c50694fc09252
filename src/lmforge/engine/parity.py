"""Template parity between our chat path and a running llama.cpp server: prompt ids, greedy tokens, stop.

The engine renders chat with its own copy of the template (the GGUF's ``tokenizer.chat_template``, run by
llama.cpp's Jinja engine) and tokenizes with its own tokenizer: a second implementation of what
``lmforge.generation`` does, and where the classic deployment bugs live (a doubled or dropped BOS, a
role marker split into pieces, a model that never stops). For each conversation (ending with a user
turn) `check_parity` asks the server and compares, token for token:

- **prompt ids**: ``POST /apply-template`` (the messages rendered exactly as ``/v1/chat/completions``
  renders them, generation prompt included; llama.cpp strips a leading BOS from the text when its
  vocabulary adds BOS) then ``POST /tokenize`` with ``add_special: true, parse_special: true``, which is
  how the chat endpoint tokenizes that text (``tokenize_input_prompts(..., true, true)`` in
  tools/server/server-context.cpp of llama.cpp as vendored by llama-cpp-python 0.3.36). These must equal
  ``lmforge.generation.encode_chat`` for every conversation and format (the tokenizer is not quantized);
- **greedy tokens**: ``POST /completion`` with the prompt as token ids, ``samplers: ["temperature"]``,
  ``temperature: 0`` (llama.cpp keeps only the highest logit, the first one on a tie, as ``argmax`` does),
  ``n_predict: n_tokens``, ``return_tokens: true`` (the ids, stop token included, as ours), against our
  greedy ``generate_from_ids``. With ``greedy=True`` (the full-precision f32 file) they must be equal up
  to a tie: where our two candidate logits are within ``tie_tolerance`` of each other, float rounding may
  pick either. For quantized files the agreeing prefix length is reported, not enforced. Full precision
  means the engine's too: llama.cpp's defaults (flash attention on the CPU, an f16 KV cache) moved the
  log-probs of an f32 file by up to 0.012 against transformers on the default chain's model (teacher-forced,
  top 5, 5 conversations x 32 tokens); ``--flash-attn off --cache-type-k f32 --cache-type-v f32``: 7e-5;
- **stop**: the engine's end-of-generation tokens must include ours: where its tokens agree with ours up
  to our stop token it must stop right there (``stop_type: "eos"``), a stop id may never appear before
  its last token (run-on into a next turn), and where it stopped, ``/v1/chat/completions`` (temperature
  0) must finish with ``"stop"`` after as many tokens, with no special-token text in the answer.

A failure raises `TemplateParityError` naming the format, the conversation, the first differing position
and both ids with their pieces (``tokenizer.convert_ids_to_tokens``). HTTP goes through the standard
library (``urllib``), one request at a time: parity is about numbers, not throughput.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 120.0
"""Per request; a tiny model answers in milliseconds, a real one in seconds on a CPU."""

Messages = Sequence[Mapping[str, str]]


class TemplateParityError(RuntimeError):
    """The engine encodes, generates or stops differently from our chat path (the message says where)."""


@dataclass(frozen=True)
class EngineCompletion:
    """What ``POST /completion`` generated."""

    token_ids: list[int]
    """The generated ids, the end-of-generation token included when it stopped on one."""
    stop_type: str
    """llama.cpp's reason: ``"eos"`` (an end-of-generation token), ``"limit"`` (n_predict), ``"word"``."""


def post_json(url: str, path: str, body: Mapping[str, Any], *, timeout: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
    """``POST url+path`` with a JSON body; the decoded JSON answer, or RuntimeError with the server's message."""
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:500]
        raise RuntimeError(f"engine {url}{path} answered HTTP {err.code}: {detail}") from None


def engine_prompt(url: str, messages: Messages) -> str:
    """The prompt text the engine's chat endpoint builds from ``messages`` (its own template rendering)."""
    return post_json(url, "/apply-template", {"messages": [dict(m) for m in messages]})["prompt"]


def engine_prompt_ids(url: str, messages: Messages) -> list[int]:
    """The token ids the engine's chat endpoint feeds the model for ``messages``: its template, its tokenizer."""
    text = engine_prompt(url, messages)
    tokens = post_json(url, "/tokenize", {"content": text, "add_special": True, "parse_special": True})["tokens"]
    return [int(t) for t in tokens]


def engine_greedy(url: str, prompt_ids: Sequence[int], n_tokens: int) -> EngineCompletion:
    """Greedy continuation of ``prompt_ids`` by the engine: at most ``n_tokens`` ids, stop token included."""
    answer = post_json(url, "/completion", {
        "prompt": [int(i) for i in prompt_ids], "n_predict": n_tokens, "temperature": 0.0,
        "samplers": ["temperature"], "return_tokens": True, "cache_prompt": False, "stream": False})
    return EngineCompletion(token_ids=[int(t) for t in answer["tokens"]], stop_type=str(answer.get("stop_type")))


def engine_chat(url: str, messages: Messages, max_tokens: int) -> dict[str, Any]:
    """``/v1/chat/completions`` at temperature 0: ``{"content", "finish_reason", "completion_tokens"}``."""
    answer = post_json(url, "/v1/chat/completions", {"messages": [dict(m) for m in messages], "max_tokens": max_tokens,
                                                     "temperature": 0.0, "samplers": ["temperature"], "stream": False})
    choice = answer["choices"][0]
    return {"content": choice["message"].get("content") or "", "finish_reason": choice.get("finish_reason"),
            "completion_tokens": int(answer.get("usage", {}).get("completion_tokens", -1))}


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where ``a`` and ``b`` differ (a shorter one ends there), None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def reference_completions(tokenizer: Any, model: Any, conversations: Sequence[Messages], *,
                          n_tokens: int) -> list[dict[str, Any]]:
    """Our side, once for every format: prompt ids (``encode_chat``) and greedy ids (``generate_from_ids``)."""
    from lmforge.generation import encode_chat, generate_from_ids, resolve_stop_token_ids

    stop_ids = resolve_stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    out = []
    for messages in conversations:
        prompt_ids = encode_chat(tokenizer, messages)
        completion = generate_from_ids(model, tokenizer, [prompt_ids], max_new_tokens=n_tokens)[0]
        out.append({"prompt_ids": prompt_ids, "token_ids": completion.token_ids, "stopped": completion.stopped,
                    "text": completion.text, "stop_ids": stop_ids})
    return out


def check_parity(url: str, tokenizer: Any, model: Any, conversations: Sequence[Messages], *, n_tokens: int,
                 greedy: bool, label: str, reference: Sequence[Mapping[str, Any]] | None = None,
                 tie_tolerance: float = 0.0) -> dict[str, Any]:
    """Compare the engine at ``url`` with our chat path on ``conversations``; raise `TemplateParityError` on a
    prompt-id difference, a stop failure, or (``greedy=True``) any greedy-token difference.

    ``label`` names the model file (its format) in messages and the result; ``reference`` is
    `reference_completions` of the same conversations and ``n_tokens`` (computed here when None).
    ``tie_tolerance``: with ``greedy``, a first difference is a tie, not a failure, where our logit of our token
    exceeds our logit of the engine's by at most this much (two implementations' float rounding may pick either
    of two nearly equal logits; the tokens after a tie are not compared). Ties are listed in ``greedy_ties``.
    Returns ``{"format", "conversations", "prompt_ids_equal", "greedy_required", "greedy_agreeing_prefix"
    (per conversation), "greedy_exact" (how many agreed over all their tokens), "greedy_tokens" (ours, in all),
    "greedy_ties",
    "stop_ok", "stopped" (conversations where ours stopped), "per_conversation"}``.
    """
    if reference is None:
        reference = reference_completions(tokenizer, model, conversations, n_tokens=n_tokens)
    if len(reference) != len(conversations):
        raise ValueError(f"{len(reference)} reference completions for {len(conversations)} conversations")
    per_conversation: list[dict[str, Any]] = []
    ties: list[dict[str, Any]] = []
    for index, (messages, ours) in enumerate(zip(conversations, reference, strict=True)):
        where = f"{label}, conversation {index}"
        engine_ids = engine_prompt_ids(url, messages)
        _require_equal(tokenizer, where, "prompt ids (the engine's /apply-template + /tokenize against encode_chat)",
                       ours["prompt_ids"], engine_ids)
        theirs = engine_greedy(url, ours["prompt_ids"], n_tokens)
        agree = first_difference(ours["token_ids"], theirs.token_ids)
        prefix = len(ours["token_ids"]) if agree is None else agree
        stop = check_stop(url, tokenizer, where, messages, ours, theirs, n_tokens)
        if greedy and agree is not None:
            margin = _margin(model, ours, theirs.token_ids, agree)
            if margin is None or margin > tie_tolerance:
                _require_equal(tokenizer, where, f"greedy tokens (temperature 0, {n_tokens} tokens; our logit margin "
                               f"{'-' if margin is None else f'{margin:.3g}'} > tie tolerance {tie_tolerance:g})",
                               ours["token_ids"], theirs.token_ids)
            ties.append({"conversation": index, "position": agree, "margin": margin})
            logger.info("%s: greedy tie at token %d (our logit margin %.3g <= %g)", where, agree, margin, tie_tolerance)
        per_conversation.append({"prompt_tokens": len(ours["prompt_ids"]), "ours": ours["token_ids"],
                                 "engine": theirs.token_ids, "agreeing_prefix": prefix,
                                 "engine_stop_type": theirs.stop_type, **stop})
        logger.info("%s: prompt ids equal (%d), greedy agrees on %d/%d tokens, stop %s", where,
                    len(ours["prompt_ids"]), prefix, len(ours["token_ids"]), stop.get("chat_finish_reason", "-"))
    prefixes = [c["agreeing_prefix"] for c in per_conversation]
    return {"format": label, "conversations": len(conversations), "prompt_ids_equal": True, "greedy_required": greedy,
            "greedy_agreeing_prefix": prefixes,
            "greedy_exact": sum(c["ours"] == c["engine"] for c in per_conversation),
            "greedy_tokens": sum(len(c["ours"]) for c in per_conversation), "greedy_ties": ties,
            "stop_ok": True, "stopped": sum(bool(r["stopped"]) for r in reference), "per_conversation": per_conversation}


def check_stop(url: str, tokenizer: Any, where: str, messages: Messages, ours: Mapping[str, Any],
               theirs: EngineCompletion, n_tokens: int) -> dict[str, Any]:
    """The stop rule (module docstring) for one conversation: ``ours`` is its `reference_completions` entry,
    ``theirs`` the engine's greedy answer; returns what the chat endpoint said where the engine stopped."""
    stop_ids = set(ours["stop_ids"])
    ids = theirs.token_ids
    early = next((i for i, t in enumerate(ids[:-1]) if t in stop_ids), None)
    if early is not None:
        raise TemplateParityError(
            f"{where}: the engine generated stop token {_piece(tokenizer, ids[early])} at position {early} and went "
            f"on ({len(ids)} tokens, next {_piece(tokenizer, ids[early + 1])}): the GGUF does not treat it as "
            "end-of-generation; re-export it with the tokenizer's end-of-turn token marked as a control/EOG token")
    if ours["stopped"] and ids[:len(ours["token_ids"])] == ours["token_ids"] and len(ids) != len(ours["token_ids"]):
        raise TemplateParityError(
            f"{where}: our generate stops at token {len(ours['token_ids']) - 1} "
            f"{_piece(tokenizer, ours['token_ids'][-1])}, the engine generated the same token and did not stop "
            f"(stop_type {theirs.stop_type!r}): its end-of-generation tokens lack our stop ids {sorted(stop_ids)}")
    if not ids or ids[-1] not in stop_ids:
        return {"engine_stopped": False}
    if theirs.stop_type != "eos":
        raise TemplateParityError(f"{where}: the engine ended on stop token {_piece(tokenizer, ids[-1])} but reports "
                                  f"stop_type {theirs.stop_type!r}, not 'eos'")
    chat = engine_chat(url, messages, n_tokens)
    special = [t for t in _special_texts(tokenizer) if t in chat["content"]]
    if chat["finish_reason"] != "stop" or chat["completion_tokens"] != len(ids) or special:
        raise TemplateParityError(
            f"{where}: /v1/chat/completions did not stop as /completion did: finish_reason "
            f"{chat['finish_reason']!r} after {chat['completion_tokens']} tokens (expected 'stop' after {len(ids)})"
            + (f", special-token text {special} in the answer" if special else "")
            + "; check the GGUF's chat template and end-of-generation tokens")
    return {"engine_stopped": True, "chat_finish_reason": chat["finish_reason"], "chat_content": chat["content"]}


def _margin(model: Any, ours: Mapping[str, Any], theirs: Sequence[int], at: int) -> float | None:
    """Our logit of our token minus our logit of the engine's at position ``at``; None where one list ended."""
    import torch

    mine = ours["token_ids"]
    if at >= len(mine) or at >= len(theirs):
        return None
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(torch.tensor([list(ours["prompt_ids"]) + list(mine[:at])], device=device)).logits[0, -1]
    return float(logits[mine[at]] - logits[theirs[at]])


def _special_texts(tokenizer: Any) -> list[str]:
    """Texts of the tokenizer's special tokens (``<|im_end|>`` is an added special token, not always named)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = set(tokenizer.all_special_tokens) | {str(t) for t in added.values() if getattr(t, "special", False)}
    return sorted(t for t in texts if t)


def _piece(tokenizer: Any, token_id: int) -> str:
    return f"{tokenizer.convert_ids_to_tokens([int(token_id)])[0]!r} (id {int(token_id)})"


def _require_equal(tokenizer: Any, where: str, what: str, ours: Sequence[int], theirs: Sequence[int]) -> None:
    i = first_difference(ours, theirs)
    if i is None:
        return
    mine = _piece(tokenizer, ours[i]) if i < len(ours) else "the end"
    engine = _piece(tokenizer, theirs[i]) if i < len(theirs) else "the end"
    raise TemplateParityError(
        f"{where}: {what} differ at position {i} of {len(ours)}/{len(theirs)}: ours {mine}, engine {engine}; "
        "the GGUF's chat template or tokenizer metadata is not the package's: re-export the GGUF from the package")
