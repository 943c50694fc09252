"""Tokenizer quality figures on held-out text: fertility per script and for code, fallback, coverage.

Why per bucket: one average hides the cases that matter: a code tokenizer can look fine on English
and spend three byte tokens on every Chinese character. Each text is put in ONE bucket:

- ``code``: it parses as Python (and is more than a lone name or constant) or the caller says so;
- otherwise by its dominant script: ``japanese`` (any kana: Japanese mixes kana with Han),
  ``cjk`` (Han characters, i.e. Chinese), ``korean`` (Hangul), ``latin``, else ``other``.

Figures (flat keys, ready for MLflow): ``fertility.<bucket>.tokens_per_word`` (whitespace-separated
words: meaningless for CJK, which has no spaces; read tokens_per_char there),
``fertility.<bucket>.tokens_per_char``, ``compression.<bucket>.bytes_per_token``,
``byte_fallback_rate.<bucket>``, ``texts.<bucket>``; and overall ``vocab_coverage`` (share of the
vocabulary's ids that occur in the encoded text; control tokens never do).

Per language group (``measure_by_language``): the group each document's reader declared
(`lmforge.data.documents.language_group`, the one key of every per-language count), not a guess from
the text: ``by_language.<group>.{documents, tokens, bytes, bytes_per_token, byte_fallback_rate,
byte_fallback_tokens, unknown_tokens}``. Per source and licence (``summarize_token_counts``): the
training tokens of each source with its licence and share, for the model card.

Byte fallback: the share of tokens that are ``<0xNN>`` pieces standing for a character outside the
vocabulary. The newline is not counted: training is per line (`lmforge.tokenizer.train`), so ``"\n"``
is ALWAYS the byte piece ``<0x0A>`` by design (5-9% of tokens in code and man pages), one token as any
piece would be; counting it would make the figure measure line length, not coverage.
``newline_tokens`` reports it separately.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

BUCKETS = ("code", "latin", "cjk", "japanese", "korean", "other")

NEWLINE_PIECE = "<0x0A>"
"""The byte piece every newline encodes to (never a fallback: see the module docstring)."""

UNKNOWN_LICENSE = "unknown"
"""The licence of a document whose reader recorded none (shown as such on the model card)."""

_METRIC_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /:]")


def _script(ch: str) -> str | None:
    o = ord(ch)
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:
        return "kana"
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x3134F:
        return "han"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "hangul"
    if ch.isascii() and ch.isalpha() or 0x00C0 <= o <= 0x024F:
        return "latin"
    if ch.isalpha():
        return "other"
    return None


def looks_like_python(text: str) -> bool:
    """True when ``text`` parses as Python and holds more than bare names/constants (so prose is excluded)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Name | ast.Constant))
               for node in tree.body)


def classify_text(text: str) -> str:
    """The bucket of one text: ``code`` or its dominant script (see module docstring)."""
    if looks_like_python(text):
        return "code"
    counts = {"kana": 0, "han": 0, "hangul": 0, "latin": 0, "other": 0}
    for ch in text:
        script = _script(ch)
        if script:
            counts[script] += 1
    if counts["kana"]:
        return "japanese"
    top = max(counts, key=counts.__getitem__)
    if counts[top] == 0:
        return "other"
    return {"han": "cjk", "hangul": "korean"}.get(top, top)


@dataclass
class _Tally:
    texts: int = 0
    bytes: int = 0
    chars: int = 0
    words: int = 0
    tokens: int = 0
    fallback: int = 0
    unknown: int = 0

    newlines: int = 0

    def add(self, text: str, ids: list[int], byte_ids: frozenset[int], unk_id: int, newline_id: int) -> None:
        self.texts += 1
        self.bytes += len(text.encode("utf-8"))
        self.chars += len(text)
        self.words += len(text.split())
        self.tokens += len(ids)
        newlines = ids.count(newline_id)
        self.newlines += newlines
        self.fallback += sum(1 for i in ids if i in byte_ids) - newlines
        self.unknown += sum(1 for i in ids if i == unk_id)

    def group_figures(self) -> dict[str, float]:
        n = max(self.tokens, 1)
        return {"documents": self.texts, "tokens": self.tokens, "bytes": self.bytes,
                "bytes_per_token": self.bytes / n, "byte_fallback_rate": self.fallback / n,
                "byte_fallback_tokens": self.fallback, "newline_tokens": self.newlines,
                "unknown_tokens": self.unknown}


def _byte_ids(tok: SentencePieceTokenizer) -> tuple[frozenset[int], int]:
    """Ids of the ``<0xNN>`` byte pieces, and the newline's (-1 without byte fallback)."""
    byte_ids = frozenset(i for i in range(tok.vocab_size) if tok.id_to_token(i).startswith("<0x"))
    newline = next((i for i in byte_ids if tok.id_to_token(i) == NEWLINE_PIECE), -1)
    return byte_ids, newline


def measure_tokenizer(texts: Iterable[str], tok: SentencePieceTokenizer, *,
                      buckets: Iterable[str] | None = None) -> dict[str, float]:
    """Compression, fertility, fallback and coverage figures of ``tok`` on held-out ``texts``.

    ``buckets`` (one name per text, e.g. from the document's source) overrides ``classify_text``.
    Overall keys: bytes_per_token, tokens_per_word, tokens_per_char, byte_fallback_rate, unknown_tokens,
    validation_tokens, validation_bytes, vocab_size, vocab_ids_used, vocab_coverage; per bucket see the
    module docstring.
    """
    byte_ids, newline_id = _byte_ids(tok)
    total, per_bucket, used = _Tally(), {}, set()
    labels = iter(buckets) if buckets is not None else None
    for text in texts:
        ids = tok.encode(text, parse_special=False)
        bucket = next(labels) if labels is not None else classify_text(text)
        total.add(text, ids, byte_ids, tok.unk_id, newline_id)
        per_bucket.setdefault(bucket, _Tally()).add(text, ids, byte_ids, tok.unk_id, newline_id)
        used.update(ids)
    n_tokens = max(total.tokens, 1)
    stats: dict[str, float] = {
        "bytes_per_token": total.bytes / n_tokens, "tokens_per_word": total.tokens / max(total.words, 1),
        "tokens_per_char": total.tokens / max(total.chars, 1), "byte_fallback_rate": total.fallback / n_tokens,
        "unknown_tokens": total.unknown, "newline_tokens": total.newlines, "validation_tokens": total.tokens, "validation_bytes": total.bytes,
        "vocab_size": tok.vocab_size, "vocab_ids_used": len(used), "vocab_coverage": len(used) / tok.vocab_size,
    }
    for bucket, t in sorted(per_bucket.items()):
        n = max(t.tokens, 1)
        stats[f"texts.{bucket}"] = t.texts
        stats[f"fertility.{bucket}.tokens_per_word"] = t.tokens / max(t.words, 1)
        stats[f"fertility.{bucket}.tokens_per_char"] = t.tokens / max(t.chars, 1)
        stats[f"compression.{bucket}.bytes_per_token"] = t.bytes / n
        stats[f"byte_fallback_rate.{bucket}"] = t.fallback / n
    return stats


def document_labels(record: Mapping[str, Any]) -> dict[str, str]:
    """What a document record's tokens are counted under: its language group, source and licence."""
    from lmforge.data.documents import language_group

    metadata = record.get("metadata") or {}
    return {"language": language_group(metadata), "source": str(record.get("source") or "unknown"),
            "license": str(metadata.get("license") or UNKNOWN_LICENSE)}


def measure_by_language(texts: Iterable[str], groups: Iterable[str],
                        tok: SentencePieceTokenizer) -> dict[str, dict[str, float]]:
    """``{group: {documents, tokens, bytes, bytes_per_token, byte_fallback_rate, byte_fallback_tokens,
    newline_tokens, unknown_tokens}}`` of ``tok`` on ``texts``, one group name per text (in order)."""
    byte_ids, newline_id = _byte_ids(tok)
    tallies: dict[str, _Tally] = {}
    for text, group in zip(texts, groups, strict=True):
        ids = tok.encode(text, parse_special=False)
        tallies.setdefault(group, _Tally()).add(text, ids, byte_ids, tok.unk_id, newline_id)
    return {group: tally.group_figures() for group, tally in sorted(tallies.items())}


def metric_key(name: str) -> str:
    """``name`` usable as one level of an MLflow metric key (which refuses e.g. "+" of "GPL-2.0+")."""
    return _METRIC_KEY_UNSAFE.sub("_", name) or "_"


def summarize_token_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Documents and tokens by language, by source (with its licence) and by licence, with each one's share.

    ``rows`` are token-count rows ``{"language", "source", "license", "documents", "tokens"}`` (what the
    shard index records per split, `lmforge.tokenizer.shards.stream_token_shards`). Returns
    ``{"by_language": {group: {documents, tokens, token_share}}, "by_source": {key: {source, license,
    documents, tokens, token_share}}, "by_license": {key: {license, documents, tokens, token_share}}}``;
    source and licence keys are `metric_key`s, their real names are the ``source``/``license`` fields.
    A source whose documents declare several licences gets them joined by " / ".
    """
    rows = list(rows)
    total = sum(int(r["tokens"]) for r in rows) or 1
    out: dict[str, dict[str, dict[str, Any]]] = {"by_language": {}, "by_source": {}, "by_license": {}}
    for row in rows:
        for table, label in (("by_language", "language"), ("by_source", "source"), ("by_license", "license")):
            # language groups are plain keys; source and licence names keep their spelling in a field
            entry = (out[table].setdefault(row[label], {}) if label == "language"
                     else out[table].setdefault(metric_key(row[label]), {label: row[label]}))
            entry["documents"] = entry.get("documents", 0) + int(row["documents"])
            entry["tokens"] = entry.get("tokens", 0) + int(row["tokens"])
            if label == "source":
                licenses = entry.setdefault("_licenses", [])
                if row["license"] not in licenses:
                    licenses.append(row["license"])
    for table in out.values():
        for entry in table.values():
            entry["token_share"] = entry["tokens"] / total
            if "_licenses" in entry:
                entry["license"] = " / ".join(sorted(entry.pop("_licenses")))
    return {name: dict(sorted(table.items())) for name, table in out.items()}


def merge_by_language(held_out: Mapping[str, Mapping[str, Any]],
                      train: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{group: {"validation": held-out figures, "train": {documents, tokens, token_share}}}`` for every
    group in either (a group with no held-out document has no "validation" entry, and vice versa)."""
    merged: dict[str, dict[str, Any]] = {group: dict(entry) for group, entry in held_out.items()}
    for group, figures in train.items():
        merged.setdefault(group, {})["train"] = dict(figures)
    return dict(sorted(merged.items()))
