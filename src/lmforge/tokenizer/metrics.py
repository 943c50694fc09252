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
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

BUCKETS = ("code", "latin", "cjk", "japanese", "korean", "other")


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

    def add(self, text: str, ids: list[int], byte_ids: frozenset[int], unk_id: int) -> None:
        self.texts += 1
        self.bytes += len(text.encode("utf-8"))
        self.chars += len(text)
        self.words += len(text.split())
        self.tokens += len(ids)
        self.fallback += sum(1 for i in ids if i in byte_ids)
        self.unknown += sum(1 for i in ids if i == unk_id)


def measure_tokenizer(texts: Iterable[str], tok: SentencePieceTokenizer, *,
                      buckets: Iterable[str] | None = None) -> dict[str, float]:
    """Compression, fertility, fallback and coverage figures of ``tok`` on held-out ``texts``.

    ``buckets`` (one name per text, e.g. from the document's source) overrides ``classify_text``.
    Overall keys: bytes_per_token, tokens_per_word, tokens_per_char, byte_fallback_rate, unknown_tokens,
    validation_tokens, validation_bytes, vocab_size, vocab_ids_used, vocab_coverage; per bucket see the
    module docstring.
    """
    byte_ids = frozenset(i for i in range(tok.vocab_size) if tok.id_to_token(i).startswith("<0x"))
    total, per_bucket, used = _Tally(), {}, set()
    labels = iter(buckets) if buckets is not None else None
    for text in texts:
        ids = tok.encode(text, parse_special=False)
        bucket = next(labels) if labels is not None else classify_text(text)
        total.add(text, ids, byte_ids, tok.unk_id)
        per_bucket.setdefault(bucket, _Tally()).add(text, ids, byte_ids, tok.unk_id)
        used.update(ids)
    n_tokens = max(total.tokens, 1)
    stats: dict[str, float] = {
        "bytes_per_token": total.bytes / n_tokens, "tokens_per_word": total.tokens / max(total.words, 1),
        "tokens_per_char": total.tokens / max(total.chars, 1), "byte_fallback_rate": total.fallback / n_tokens,
        "unknown_tokens": total.unknown, "validation_tokens": total.tokens, "validation_bytes": total.bytes,
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
