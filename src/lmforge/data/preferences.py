"""Preference pairs (prompt, chosen answer, rejected answer): readers of preference files and built-in identity pairs.

One record type flows out, the preference pair::

    {"id", "source", "category", "language", "prompt": [{"role", "content"}, ...] (ends with a user turn),
     "chosen": str, "rejected": str, "origin": "<file>:<line>" | "builtin:identity" | ..., "scores"?: {...}}

``id`` is ``<source>-<16 hex>`` from a hash of (source, prompt, chosen, rejected) (``make_pair_id``): the same
pair has the same id wherever the file lives. ``category`` is the record's ``category`` field, else
``preference``; ``scores`` the record's ``score_chosen``/``score_rejected`` (UltraFeedback) when present.

Record formats (``PreferenceSource.format``; ``auto`` decides per record: ``messages``/``conversations`` ->
messages, else ``chosen`` -> pairs):

- ``pairs`` (HH-RLHF / UltraFeedback style): ``{"prompt", "chosen", "rejected", "system"?}``. ``prompt`` is text
  (one user turn) or a messages list. ``chosen``/``rejected`` are text, one assistant message, or a message
  list whose last turn is the assistant's answer (UltraFeedback: the whole conversation): the answer is that
  last turn and the turns before it are the prompt (which must then agree with ``prompt`` when both are given,
  and between chosen and rejected: else ``prompt_mismatch``). Anthropic's raw HH-RLHF transcripts
  (``"\n\nHuman: ...\n\nAssistant: ..."`` with no ``prompt``) are read as such a conversation.
- ``messages`` (OpenAI ``messages`` with role/content, or ShareGPT ``conversations`` with from/value): the
  conversation so far, ending with the user's turn, plus ``chosen``/``rejected`` final assistant turns (text,
  or a message dict in either style).

Files: ``.jsonl``, ``.json`` (a JSON array or JSON lines), ``.parquet``, ``.gz``/``.zst`` for JSON; a file, a
folder or a glob, in sorted order (the SFT readers' ``lmforge.data.sft_formats.iter_raw_records``). Bad input: a
missing path is one line naming it and what to do; a bad record is quarantined as ``{"source", "origin",
"reason", "detail", "record"}`` with a reason of ``REASONS``; per source ``read == kept + quarantined``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmforge.data.identity import NEGATIVE, POSITIVE, IdentityConfig, system_prefix
from lmforge.data.readers import SourceError, resolve_files, to_jsonable
from lmforge.data.sft_formats import (
    FILE_PATTERNS,
    QUARANTINE_RECORD_CHARS,
    RecordError,
    iter_raw_records,
    openai_messages,
    sharegpt_messages,
)

logger = logging.getLogger(__name__)

FORMATS = ("auto", "pairs", "messages")
DEFAULT_CATEGORY = "preference"
IDENTITY_ORIGIN = "builtin:identity"
LANGUAGE_CANDIDATES = ("en", "zh", "ja")
"""Languages a pair's language is detected among (the default chain's; lingua on a short question is more often
right choosing among these few than among all)."""
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
"""A turn marker of an HH-RLHF transcript (the text starts with one)."""
MIN_LANGUAGE_LETTERS = 8  # fewer letters in the last user turn: language None (a CJK character counts 4)

REASONS = (
    "malformed_json",               # a JSONL line that does not parse
    "not_an_object",                # a record that is not a JSON object
    "unknown_format",               # format auto: no messages / conversations / chosen
    "missing_field",                # no prompt (nor a conversation in chosen), no chosen or no rejected
    "bad_type",                     # a field of the wrong type (a prompt that is a number, a message not an object)
    "unsupported_role",             # a role outside system/user/assistant
    "empty_message",                # a prompt message whose content is empty or only whitespace
    "bad_turn_order",               # system not first, user/assistant not alternating from a user turn
    "prompt_not_ending_with_user",  # the prompt's last turn is not the user's: nothing to answer
    "response_not_assistant",       # a chosen/rejected message (list) whose last turn is not the assistant's
    "empty_response",               # chosen or rejected empty or only whitespace
    "identical_responses",          # chosen == rejected (nothing to prefer)
    "prompt_mismatch",              # chosen and rejected continue different conversations, or not `prompt`
    "duplicate",                    # the same (prompt, chosen, rejected) as an earlier pair of the source
)


@dataclass
class PreferenceSource:
    """One set of preference files (``align.sources[i]``)."""

    # Name of the source: recorded on every pair and quarantined record, and part of each pair's id.
    name: str
    # A file, a folder or a glob of .jsonl / .json (array or lines) / .parquet files (.gz and .zst too).
    path: str
    # "pairs" ({prompt, chosen, rejected}), "messages" (messages|conversations + chosen/rejected), or
    # "auto": decided per record by its fields (see the module docstring).
    format: str = "auto"
    # Keep at most this many pairs, the first in file order (reading stops there); None: all.
    max_samples: int | None = None
    # "auto": the record's `language` field, else detected from the prompt's last user turn among
    # LANGUAGE_CANDIDATES (None when too short to tell); an ISO 639-1 code: every pair's; None: not recorded.
    language: str | None = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a preference source needs a non-empty name, got {self.name!r}")
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(f"preference source {self.name!r}: path must be a non-empty string, got {self.path!r}")
        if self.format not in FORMATS:
            raise ValueError(f"preference source {self.name!r}: format must be one of {FORMATS}, got {self.format!r}")
        if self.max_samples is not None and (isinstance(self.max_samples, bool) or not isinstance(self.max_samples, int)
                                             or self.max_samples < 1):
            raise ValueError(f"preference source {self.name!r}: max_samples must be an integer >= 1 or null, "
                             f"got {self.max_samples!r}")


# ---- one pair -------------------------------------------------------------------------------------------------

def make_pair_id(source: str, prompt: Sequence[Mapping[str, str]], chosen: str, rejected: str) -> str:
    """``<source>-<first 16 hex of sha256>`` of (source, prompt, chosen, rejected) as canonical JSON."""
    payload = json.dumps([source, [dict(m) for m in prompt], chosen, rejected], ensure_ascii=False, sort_keys=True,
                         separators=(",", ":"))
    return f"{source}-{hashlib.sha256(payload.encode('utf-8')).hexdigest()[:16]}"


def make_pair(source: str, prompt: Sequence[Mapping[str, str]], chosen: str, rejected: str, *, origin: str,
              category: str = DEFAULT_CATEGORY, language: str | None = None,
              scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A preference pair record (the schema of the module docstring); ``scores`` only when given."""
    prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    pair = {"id": make_pair_id(source, prompt, chosen, rejected), "source": source, "category": category,
            "language": language, "prompt": prompt, "chosen": chosen, "rejected": rejected, "origin": origin}
    if scores is not None:
        pair["scores"] = dict(scores)
    return pair


def detect_language(prompt: Sequence[Mapping[str, str]]) -> str | None:
    """The language of the prompt's last user turn among LANGUAGE_CANDIDATES, or None when it is too short."""
    from lmforge.data.langid import UNKNOWN, identify_language

    text = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    guess = identify_language(text, min_letters=MIN_LANGUAGE_LETTERS, candidates=LANGUAGE_CANDIDATES)
    return None if guess.language == UNKNOWN else guess.language


def _messages(value: Any, what: str) -> list[dict[str, str]]:
    """A messages list in OpenAI (role/content) or ShareGPT (from/value) style -> role/content messages."""
    if not isinstance(value, list):
        raise RecordError("bad_type", f"{what} is {type(value).__name__}, not text or a list of messages")
    try:
        if value and all(isinstance(m, Mapping) and "from" in m for m in value):
            return sharegpt_messages({"conversations": value})
        return openai_messages({"messages": value})
    except RecordError as exc:
        raise RecordError(exc.reason, f"{what}: {exc.detail}") from None


def parse_hh_transcript(text: str) -> list[dict[str, str]]:
    """Anthropic HH-RLHF's ``"\n\nHuman: ...\n\nAssistant: ..."`` transcript -> role/content messages."""
    parts = HH_TURN.split(text)
    return [{"role": "user" if who == "Human" else "assistant", "content": content.strip()}
            for who, content in zip(parts[1::2], parts[2::2], strict=True)]


def _response(record: Mapping[str, Any], key: str) -> tuple[list[dict[str, str]], str]:
    """(conversation before the answer, the answer's text) of ``chosen`` or ``rejected``."""
    value = record.get(key)
    if value is None:
        raise RecordError("missing_field", f"no {key!r} (fields: {sorted(record)})")
    if isinstance(value, str) and value.startswith("\n\nHuman:"):
        value = parse_hh_transcript(value)
    elif isinstance(value, str):
        return [], value
    if isinstance(value, Mapping):
        value = [value]
    messages = _messages(value, key)
    if not messages:
        raise RecordError("empty_response", f"{key} is an empty list")
    if messages[-1]["role"] != "assistant":
        raise RecordError("response_not_assistant", f"the last message of {key} is a {messages[-1]['role']!r} turn")
    return messages[:-1], messages[-1]["content"]


def _explicit_prompt(record: Mapping[str, Any], fmt: str) -> list[dict[str, str]] | None:
    """The prompt the record states (``prompt``, ``messages`` or ``conversations``), None when it states none."""
    if fmt == "messages":
        key = "messages" if "messages" in record else "conversations"
        if record.get(key) is None:
            raise RecordError("missing_field", f"a messages record needs 'messages' or 'conversations' "
                                               f"(fields: {sorted(record)})")
        prompt = _messages(record[key], key)
    elif record.get("prompt") is None:
        return None
    elif isinstance(record["prompt"], str):
        prompt = [{"role": "user", "content": record["prompt"]}]
    else:
        prompt = _messages(record["prompt"], "prompt")
    system = record.get("system")
    if isinstance(system, str) and system.strip() and not (prompt and prompt[0]["role"] == "system"):
        prompt = [{"role": "system", "content": system}, *prompt]
    return prompt


def _join_prompt(explicit: list[dict] | None, chosen_prefix: list[dict], rejected_prefix: list[dict]) -> list[dict]:
    """The one prompt of a record: stated, or the conversation chosen/rejected continue (they must agree)."""
    if chosen_prefix and rejected_prefix and chosen_prefix != rejected_prefix:
        raise RecordError("prompt_mismatch", "chosen and rejected continue different conversations")
    prefix = chosen_prefix or rejected_prefix
    if explicit is None:
        if not prefix:
            raise RecordError("missing_field", "no prompt: neither a 'prompt' field nor a conversation before "
                                               "the answer in chosen/rejected")
        return prefix
    if not prefix:
        return explicit
    without_system = [m for m in prefix if m["role"] != "system"]
    if explicit in (prefix, without_system):
        return prefix
    raise RecordError("prompt_mismatch", "the conversation before the answer in chosen/rejected is not the prompt")


def validate_prompt(prompt: Sequence[Mapping[str, str]]) -> None:
    """Raise RecordError unless: [system], user, assistant, ..., user (non-empty contents)."""
    if not prompt:
        raise RecordError("missing_field", "the prompt has no messages")
    for k, m in enumerate(prompt):
        if not m["content"].strip():
            raise RecordError("empty_message", f"prompt message {k} ({m['role']}) is empty")
    roles = [m["role"] for m in prompt]
    if roles[-1] != "user":
        raise RecordError("prompt_not_ending_with_user", f"the prompt ends with a {roles[-1]!r} turn (roles: {roles})")
    turns = roles[1:] if roles[0] == "system" else roles
    for k, role in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise RecordError("bad_turn_order", f"prompt message {k + len(roles) - len(turns)} is {role!r}, "
                                                f"expected {expected!r} (roles: {roles})")


def detect_format(record: Mapping[str, Any]) -> str:
    """``messages`` when the record holds a conversation, ``pairs`` when it has ``chosen``."""
    if "messages" in record or "conversations" in record:
        return "messages"
    if "chosen" in record:
        return "pairs"
    raise RecordError("unknown_format", f"no 'messages', 'conversations' or 'chosen' (fields: {sorted(record)})")


def to_pair(record: Any, fmt: str, *, source: str, origin: str, language: str | None = "auto") -> dict[str, Any]:
    """One raw record -> a validated preference pair; RecordError (with one of REASONS) otherwise."""
    if not isinstance(record, Mapping):
        raise RecordError("not_an_object", f"record is {type(record).__name__}, not a JSON object")
    fmt = detect_format(record) if fmt == "auto" else fmt
    explicit = _explicit_prompt(record, fmt)
    chosen_prefix, chosen = _response(record, "chosen")
    rejected_prefix, rejected = _response(record, "rejected")
    prompt = _join_prompt(explicit, chosen_prefix, rejected_prefix)
    validate_prompt(prompt)
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise RecordError("empty_response", f"{key} is empty")
    if chosen.strip() == rejected.strip():
        raise RecordError("identical_responses", "chosen and rejected are the same text")
    category = record.get("category")
    category = category if isinstance(category, str) and category.strip() else DEFAULT_CATEGORY
    if language == "auto":
        stated = record.get("language")
        language = stated if isinstance(stated, str) and stated.strip() else detect_language(prompt)
    scores = {key: record[f"score_{key}"] for key in ("chosen", "rejected")
              if isinstance(record.get(f"score_{key}"), int | float) and not isinstance(record[f"score_{key}"], bool)}
    return make_pair(source, prompt, chosen, rejected, origin=origin, category=category, language=language,
                     scores=scores or None)


# ---- files -> pairs -------------------------------------------------------------------------------------------

def read_preference_source(source: PreferenceSource) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(pairs, quarantined records, stats ``{read, kept, quarantined, by_reason, files}``) of one source."""
    try:
        files = resolve_files(source.path, FILE_PATTERNS)
    except SourceError as exc:
        raise FileNotFoundError(f"preference source {source.name!r}: {exc}: fix its path in align.sources (a file, "
                                "folder or glob of .jsonl/.json/.parquet) or remove the source") from None
    pairs: list[dict] = []
    quarantine: list[dict] = []
    by_reason: Counter = Counter()
    seen: set[str] = set()
    read = 0
    for file, _ in files:
        if source.max_samples is not None and len(pairs) >= source.max_samples:
            break
        for origin, record, error in iter_raw_records(file, str(file)):
            read += 1
            try:
                if error is not None:
                    raise RecordError("malformed_json", error)
                pair = to_pair(record, source.format, source=source.name, origin=origin, language=source.language)
                if pair["id"] in seen:
                    raise RecordError("duplicate", f"the same prompt, chosen and rejected as pair {pair['id']}")
            except RecordError as exc:
                by_reason[exc.reason] += 1
                text = record if isinstance(record, str) else json.dumps(to_jsonable(record), ensure_ascii=False)
                quarantine.append({"source": source.name, "origin": origin, "reason": exc.reason,
                                   "detail": exc.detail, "record": text[:QUARANTINE_RECORD_CHARS]})
                continue
            seen.add(pair["id"])
            pairs.append(pair)
            if source.max_samples is not None and len(pairs) >= source.max_samples:
                break
    stats = {"read": read, "kept": len(pairs), "quarantined": len(quarantine),
             "by_reason": dict(sorted(by_reason.items())), "files": len(files)}
    assert stats["read"] == stats["kept"] + stats["quarantined"]
    logger.info("preference source %s: %d records from %d file(s), %d pairs, quarantined %s", source.name, read,
                len(files), len(pairs), stats["by_reason"] or "none")
    return pairs, quarantine, stats


def read_preference_sources(sources: Iterable[PreferenceSource]) -> tuple[list[dict], list[dict], dict[str, dict]]:
    """(pairs of every source in order, quarantined records, stats by source name); names must be unique."""
    sources = list(sources)
    names = [s.name for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"preference source names must be unique (they are part of pair ids): {repeated} repeat")
    pairs: list[dict] = []
    quarantine: list[dict] = []
    stats: dict[str, dict] = {}
    for source in sources:
        kept, dropped, stats[source.name] = read_preference_source(source)
        pairs += kept
        quarantine += dropped
    return pairs, quarantine, stats


# ---- built-in identity pairs ----------------------------------------------------------------------------------

OTHER_ASSISTANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (("ChatGPT", "OpenAI"), ("Claude", "Anthropic"), ("Llama", "Meta"), ("Gemini", "Google"),
           ("Qwen", "Alibaba")),
    "zh": (("ChatGPT", "OpenAI"), ("文心一言", "百度"), ("通义千问", "阿里巴巴"), ("Claude", "Anthropic"),
           ("Gemini", "谷歌")),
}
"""Other assistants (name, developer) per language: the identities a rejected answer claims."""
AFFIRM_OTHER = {"en": "Yes, I am {name}, developed by {developer}.", "zh": "是的，我是{name}，由{developer}开发。"}
"""The rejected answer to a question naming another assistant ("Are you ChatGPT?"): yes, it is."""


def build_identity_pairs(identity: IdentityConfig, languages: Sequence[str] = ("en", "zh")) -> list[dict]:
    """Identity preference pairs from the seed's templates (``lmforge.data.identity``), category ``identity``.

    Chosen: the configured assistant's answer (POSITIVE and NEGATIVE templates). Rejected: a claim to be another
    assistant (OTHER_ASSISTANTS, never the configured one): to a question naming one ("Are you ChatGPT?", "Did
    Google develop you?") the yes of AFFIRM_OTHER for the one named; to an open question ("Who are you?") the
    same answer template filled with another assistant, rotating through them in template order. The prompt
    starts with the identity system prefix when ``identity.with_system`` (as the SFT identity conversations).
    28 pairs for en and zh (18 open questions, 10 naming another assistant), fewer only when the configured
    identity is itself one of OTHER_ASSISTANTS (the questions naming it are left out).
    """
    unknown = sorted(set(languages) - set(OTHER_ASSISTANTS))
    if unknown:
        raise ValueError(f"no identity pairs for language(s) {unknown}; have {sorted(OTHER_ASSISTANTS)}")
    ours = {identity.name.casefold(), identity.developer.casefold()}
    pairs = []
    for lang in languages:
        others = [o for o in OTHER_ASSISTANTS[lang] if not ({o[0].casefold(), o[1].casefold()} & ours)]
        system = [{"role": "system", "content": system_prefix(identity, lang)}] if identity.with_system else []
        rows = [(q, a, False) for la, q, a in POSITIVE if la == lang] + [(q, a, True) for la, q, a in NEGATIVE
                                                                         if la == lang]
        for i, (question, answer, names_other) in enumerate(rows):
            if names_other and any(term in question.casefold() for term in ours):
                continue  # "Are you ChatGPT?" when the configured assistant is ChatGPT: no wrong identity to reject
            chosen = answer.format(name=identity.name, developer=identity.developer)
            named = [o for o in others if o[0].casefold() in question.casefold() or o[1].casefold() in question.casefold()]
            other_name, other_developer = named[0] if named else others[i % len(others)]
            template = AFFIRM_OTHER[lang] if names_other else answer
            rejected = template.format(name=other_name, developer=other_developer)
            prompt = [*system, {"role": "user", "content": question}]
            pairs.append(make_pair("identity", prompt, chosen, rejected, origin=IDENTITY_ORIGIN, category="identity",
                                   language=lang))
    return pairs
