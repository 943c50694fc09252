"""Instruction-tuning records in Alpaca, ShareGPT and OpenAI-messages format -> one conversation schema.

Every reader yields conversations ``{"id", "messages": [{"role", "content"}], "source", "category",
"metadata"}`` (roles ``system``/``user``/``assistant``), whatever the input format:

- ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?: [[user, assistant], ...]}``;
  the user turn is ``instruction`` followed by a blank line and ``input`` when ``input`` is not empty.
- ``sharegpt``: ``{"conversations": [{"from", "value"}], "system"?}``; ``from`` is ``human``/``user``,
  ``gpt``/``assistant``/``chatgpt`` or ``system``.
- ``openai``: ``{"messages": [{"role", "content"}]}``; ``content`` is a string or a list of
  ``{"type": "text", "text"}`` parts (joined without separator).
- ``auto``: decided per record: ``messages`` -> openai, ``conversations`` -> sharegpt,
  ``instruction`` -> alpaca.

Files: ``.jsonl`` (one object per line), ``.json`` (a JSON array of objects, or JSON lines),
``.parquet``; ``.gz`` (and ``.zst``) compressed JSON/JSONL too. ``path`` is a file, a folder or a
glob; files are read in sorted order, JSON lines streamed line by line (a JSON array is parsed
whole). Invalid UTF-8 bytes are read as U+FFFD and logged as a warning naming the file and line.

Bad input follows the rule of ``lmforge.data.readers``: a record-level fault is quarantined, a
file-level fault (no file, unreadable Parquet, a ``.json`` array that is not valid JSON) raises
``SourceError`` naming the file. A quarantined record is ``{"source", "location": "<file>:<line>",
"reason", "detail", "record"}``; the reasons are ``REASONS``. Every record read is either yielded or
quarantined: ``read == valid + sum(quarantined by reason)``.

A valid conversation: an optional system message first, then user and assistant turns alternating,
starting with a user turn and ending with an assistant turn, every content a non-empty string.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.readers import SourceError, open_binary, resolve_files, to_jsonable

logger = logging.getLogger(__name__)

FORMATS = ("alpaca", "sharegpt", "openai", "auto")
FILE_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.json", "*.json.gz", "*.json.zst", "*.parquet")

REASONS = (
    "malformed_json",     # a JSONL line that does not parse
    "not_an_object",      # a record that is not a JSON object
    "unknown_format",     # format auto: none of messages / conversations / instruction
    "missing_field",      # a field the format requires is absent
    "bad_type",           # a field of the wrong type (content not a string, messages not a list, ...)
    "unsupported_role",   # a role outside system/user/assistant (tool, function, observation, ...)
    "empty_message",      # a message whose content is empty or only whitespace
    "bad_turn_order",     # system not first, user/assistant not alternating, first turn not user
    "no_assistant_turn",  # nothing to train on
    "ends_with_user",     # the last turn has no answer
)

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}
OPENAI_ROLES = ("system", "user", "assistant")
QUARANTINE_RECORD_CHARS = 2000  # a quarantined record is kept as JSON text cut to this many characters


class RecordError(ValueError):
    """A record that cannot become a conversation; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ReadStats:
    """Counts of one source: ``read == valid + sum(quarantined.values())``."""

    read: int = 0
    valid: int = 0
    quarantined: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "valid": self.valid, "quarantined": dict(sorted(self.quarantined.items())),
                "formats": dict(sorted(self.formats.items()))}


# ---- one record -> messages ------------------------------------------------------------------------

def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError("bad_type", f"{what} is {type(value).__name__}, not a string")
    return value


def _required(record: Mapping[str, Any], key: str, fmt: str) -> Any:
    if key not in record or record[key] is None:
        raise RecordError("missing_field", f"{fmt} record has no {key!r} (fields: {sorted(record)})")
    return record[key]


def alpaca_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    instruction = _text(_required(record, "instruction", "alpaca"), "instruction")
    output = _text(_required(record, "output", "alpaca"), "output")
    extra = record.get("input")
    extra = "" if extra is None else _text(extra, "input")
    messages = []
    if record.get("system") not in (None, ""):
        messages.append({"role": "system", "content": _text(record["system"], "system")})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError("bad_type", f"history is {type(history).__name__}, not a list of [user, assistant]")
    for k, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise RecordError("bad_type", f"history[{k}] is not a [user, assistant] pair")
        messages += [{"role": "user", "content": _text(pair[0], f"history[{k}][0]")},
                     {"role": "assistant", "content": _text(pair[1], f"history[{k}][1]")}]
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def sharegpt_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    turns = _required(record, "conversations", "sharegpt")
    if not isinstance(turns, list):
        raise RecordError("bad_type", f"conversations is {type(turns).__name__}, not a list")
    messages = []
    if record.get("system") not in (None, ""):
        messages.append({"role": "system", "content": _text(record["system"], "system")})
    for k, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RecordError("bad_type", f"conversations[{k}] is {type(turn).__name__}, not an object")
        if "from" not in turn or "value" not in turn:
            raise RecordError("missing_field", f"conversations[{k}] needs 'from' and 'value' (has {sorted(turn)})")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise RecordError("unsupported_role", f"conversations[{k}].from is {turn['from']!r}; "
                                                  f"supported: {sorted(SHAREGPT_ROLES)}")
        messages.append({"role": role, "content": _text(turn["value"], f"conversations[{k}].value")})
    return messages


def _openai_content(content: Any, k: int) -> str:
    if isinstance(content, list):  # content parts: only text parts are supported
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, Mapping) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise RecordError("bad_type", f"messages[{k}].content[{j}] is a {kind!r} part; only text parts")
            texts.append(_text(part.get("text"), f"messages[{k}].content[{j}].text"))
        return "".join(texts)
    return _text(content, f"messages[{k}].content")


def openai_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    turns = _required(record, "messages", "openai")
    if not isinstance(turns, list):
        raise RecordError("bad_type", f"messages is {type(turns).__name__}, not a list")
    messages = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RecordError("bad_type", f"messages[{k}] is {type(turn).__name__}, not an object")
        if "role" not in turn or "content" not in turn:
            raise RecordError("missing_field", f"messages[{k}] needs 'role' and 'content' (has {sorted(turn)})")
        if turn["role"] not in OPENAI_ROLES:
            raise RecordError("unsupported_role", f"messages[{k}].role is {turn['role']!r}; supported: {OPENAI_ROLES}")
        messages.append({"role": turn["role"], "content": _openai_content(turn["content"], k)})
    return messages


CONVERTERS = {"alpaca": alpaca_messages, "sharegpt": sharegpt_messages, "openai": openai_messages}


def detect_format(record: Mapping[str, Any]) -> str:
    """The format of one record (``auto``): by which fields it has."""
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    raise RecordError("unknown_format", f"no 'messages', 'conversations' or 'instruction' (fields: {sorted(record)})")


def validate_conversation(messages: list[dict[str, str]]) -> None:
    """Raise RecordError unless: [system], user, assistant, user, assistant, ... (non-empty contents)."""
    for k, m in enumerate(messages):
        if not m["content"].strip():
            raise RecordError("empty_message", f"message {k} ({m['role']}) is empty")
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not any(m["role"] == "assistant" for m in turns):
        raise RecordError("no_assistant_turn", f"roles {[m['role'] for m in messages]} have no assistant turn")
    offset = len(messages) - len(turns)
    for k, m in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise RecordError("bad_turn_order", f"message {k + offset} is {m['role']!r}, expected {expected!r} "
                                                f"(roles: {[m['role'] for m in messages]})")
    if turns[-1]["role"] != "assistant":
        raise RecordError("ends_with_user", f"the last message ({len(messages) - 1}) is a user turn with no answer")


def to_conversation(record: Any, fmt: str, *, source: str, location: str,
                    category_field: str | None = None) -> dict[str, Any]:
    """One raw record -> a validated conversation; RecordError (with its reason) otherwise.

    The id is ``<source>-<record's id>``, or ``<source>-<hash of source and location>`` when the
    record has none. ``location`` (``<file>:<line>``) is kept in the metadata with every field of
    the record that the format does not consume.
    """
    if not isinstance(record, Mapping):
        raise RecordError("not_an_object", f"record is {type(record).__name__}, not a JSON object")
    fmt = detect_format(record) if fmt == "auto" else fmt
    messages = CONVERTERS[fmt](record)
    validate_conversation(messages)
    record_id = record.get("id")
    if record_id is None or isinstance(record_id, Mapping | list):
        record_id = hashlib.sha256(f"{source}:{location}".encode()).hexdigest()[:16]
    category = None
    if category_field is not None:
        category = record.get(category_field)
        category = "(none)" if category is None else str(category)
    known = {"id", "messages", "conversations", "instruction", "input", "output", "system", "history"}
    metadata = {k: to_jsonable(v) for k, v in record.items() if k not in known}
    metadata.update(format=fmt, location=location)
    return {"id": f"{source}-{record_id}", "messages": messages, "source": source, "category": category,
            "metadata": metadata}


# ---- files -> records ------------------------------------------------------------------------------

def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _iter_json_array(text: str, name: str) -> Iterator[tuple[int, Any]]:
    """(line, element) for each element of a JSON array, with the line where the element starts."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            raise SourceError(f"{name}:{_line_of(text, n)}: JSON array is not closed with ']'")
        if text[pos] == "]":
            if text[pos + 1:].strip():
                raise SourceError(f"{name}:{_line_of(text, pos)}: text after the closing ']' of the JSON array; "
                                  "a JSON lines file must not start with an array")
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{name}:{exc.lineno}: not valid JSON ({exc.msg}); fix the file or convert it "
                              "to JSON lines, where a bad line is quarantined instead") from exc
        yield _line_of(text, pos), value
        pos = end


def iter_raw_records(path: Path, name: str) -> Iterator[tuple[str, Any, str | None]]:
    """(location ``<file>:<line or row>``, record, error) for every record of one file.

    ``error`` is a parser message for a JSONL line that is not valid JSON (``record`` is then the raw
    line). Blank lines are skipped.
    """
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
            row = 0
            for batch in parquet.iter_batches(batch_size=1024):
                for record in batch.to_pylist():
                    row += 1
                    yield f"{name}:row {row}", record, None
        except (OSError, ValueError) as exc:
            raise SourceError(f"{name}: cannot read Parquet file ({exc})") from exc
        return
    with open_binary(path) as fh:
        seen_record = False
        for line_no, raw_line in enumerate(fh, start=1):
            line = _decode(raw_line, name, line_no)
            if not line.strip():
                continue
            if not seen_record and line.lstrip().startswith("["):  # a JSON array: parse the whole file
                text = "\n" * (line_no - 1) + line + _decode(fh.read(), name, line_no)
                for start, record in _iter_json_array(text, name):
                    yield f"{name}:{start}", record, None
                return
            seen_record = True
            try:
                yield f"{name}:{line_no}", json.loads(line), None
            except json.JSONDecodeError as exc:
                yield f"{name}:{line_no}", line.rstrip("\r\n"), exc.msg


def _decode(raw: bytes, name: str, line_no: int) -> str:
    """UTF-8 text of one line (a BOM on line 1 dropped); invalid bytes become U+FFFD with a warning."""
    encoding = "utf-8-sig" if line_no == 1 else "utf-8"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        logger.warning("%s:%d: invalid UTF-8 at byte %d (%s); bad bytes read as U+FFFD", name, line_no, exc.start,
                       exc.reason)
        return raw.decode(encoding, errors="replace")


def read_conversations(path: str, fmt: str = "auto", *, source: str, category_field: str | None = None,
                       stats: ReadStats | None = None,
                       quarantine: list[dict] | None = None) -> Iterator[dict[str, Any]]:
    """Validated conversations from every file ``path`` matches; bad records go to ``quarantine``.

    ``stats`` (if given) counts records read, valid, quarantined by reason and formats seen.
    """
    if fmt not in FORMATS:
        raise ValueError(f"source {source!r}: format must be one of {FORMATS}, got {fmt!r}")
    stats = stats if stats is not None else ReadStats()
    files = resolve_files(path, FILE_PATTERNS)
    for file, name in files:
        for location, record, error in iter_raw_records(file, name):
            stats.read += 1
            try:
                if error is not None:
                    raise RecordError("malformed_json", error)
                conversation = to_conversation(record, fmt, source=source, location=location,
                                               category_field=category_field)
            except RecordError as exc:
                stats.quarantined[exc.reason] += 1
                text = record if isinstance(record, str) else json.dumps(to_jsonable(record), ensure_ascii=False)
                if quarantine is not None:
                    quarantine.append({"source": source, "location": location, "reason": exc.reason,
                                       "detail": exc.detail, "record": text[:QUARANTINE_RECORD_CHARS]})
                continue
            stats.valid += 1
            stats.formats[conversation["metadata"]["format"]] += 1
            yield conversation
    assert stats.read == stats.valid + sum(stats.quarantined.values())
    logger.info("sft source %s: %d records from %d file(s), %d valid, quarantined %s", source, stats.read,
                len(files), stats.valid, dict(stats.quarantined) or "none")
