"""Paragraphs of a LibreOffice help page (the HTML of Debian's ``libreoffice-help-<lang>`` packages).

The help trees of every language have identical paths (``usr/share/libreoffice/help/<lang>/text/...``)
and every translatable paragraph carries the same ``id`` in each language (``<p id="par_id3159414">``,
``<h1 id="hd_id3156024">``, also ``par_idN1056A``, ``N0091``, ``bm_id...``), so ``(relative file, id)``
aligns the human translations paragraph by paragraph. :func:`iter_paragraphs` yields those
``(id, text)`` pairs; the corpus reader and the translation-pair builder both use it.

Parsed with the stdlib ``html.parser`` (no regexes over HTML). What counts as a paragraph: a ``p`` or
``h1``-``h6`` element with an ``id``; its text is the text of everything inside it, whitespace-collapsed.
The platform switches (``<span class="switchinline">`` holding ``MAC`` / ``WIN`` / ``UNIX`` /
``default`` variants, all ``hidden``) keep only the ``default`` variant, as the page shows on Linux.
Paragraphs outside the page body (the header, the debug footer) have no ``id`` and are skipped.

Known limits: pages with untranslated paragraphs keep the English text in the zh/ja trees; use
:func:`has_cjk` to tell a translated paragraph. A ``par_id`` may occur twice in one page (embedded
sections); both are yielded, in page order.
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6"})
# Elements with no end tag: never pushed on the open-element stack.
VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
     "track", "wbr"}
)
# Text inside these is never paragraph text.
SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template"})

# Han (CJK unified + extension A + compatibility), hiragana, katakana (+ half-width): the letters of a
# Chinese or Japanese translation. CJK punctuation alone does not make a paragraph translated.
_CJK_RANGES = (
    (0x3040, 0x30FF),   # hiragana, katakana
    (0x31F0, 0x31FF),   # katakana phonetic extensions
    (0x3400, 0x4DBF),   # CJK extension A
    (0x4E00, 0x9FFF),   # CJK unified ideographs
    (0xF900, 0xFAFF),   # CJK compatibility ideographs
    (0xFF66, 0xFF9F),   # half-width katakana
    (0x20000, 0x2FA1F),  # CJK extensions B-F, compatibility supplement
)


def has_cjk(text: str) -> bool:
    """True when ``text`` holds at least one Han, hiragana or katakana character."""
    for char in text:
        code = ord(char)
        if code < 0x3040:
            continue
        for low, high in _CJK_RANGES:
            if low <= code <= high:
                return True
    return False


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return " ".join(text.split())


class _ParagraphParser(HTMLParser):
    """Collects ``(id, text)`` for each ``p``/``h1``-``h6`` element with an id, in page order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[tuple[str, str]] = []
        # Open elements: (tag, hides its text). The paragraph being collected, if any, is
        # (its id, its index in the stack, the text pieces so far).
        self._stack: list[tuple[str, bool]] = []
        self._current: tuple[str, int, list[str]] | None = None

    def _hidden(self) -> bool:
        return any(hides for _, hides in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS:
            if tag == "br" and self._current is not None:
                self._current[2].append(" ")
            return
        attributes = dict(attrs)
        element_id = attributes.get("id") or ""
        if tag in PARAGRAPH_TAGS and self._current is not None:
            # A paragraph cannot contain another one: HTML closes the open one first.
            self._close_paragraph()
        hides = tag in SKIPPED_TAGS or (
            "hidden" in attributes and not element_id.startswith("default")
        )
        self._stack.append((tag, hides))
        if tag in PARAGRAPH_TAGS and element_id and not self._hidden():
            self._current = (element_id, len(self._stack) - 1, [])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and self._current is not None:
            self._current[2].append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        # Pop to the innermost open element of this name; a stray end tag changes nothing.
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                if self._current is not None and index <= self._current[1]:
                    self._close_paragraph()
                del self._stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if self._current is not None and not self._hidden():
            self._current[2].append(data)

    def _close_paragraph(self) -> None:
        assert self._current is not None
        element_id, _, pieces = self._current
        self._current = None
        text = normalize_whitespace("".join(pieces))
        if text:
            self.paragraphs.append((element_id, text))

    def close(self) -> None:
        super().close()
        if self._current is not None:
            self._close_paragraph()


def parse_paragraphs(html: str) -> list[tuple[str, str]]:
    """``(id, text)`` of every paragraph with an id in an HTML string, in page order."""
    parser = _ParagraphParser()
    parser.feed(html)
    parser.close()
    return parser.paragraphs


def iter_paragraphs(html_path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield ``(par_id, text)`` for each paragraph with an id of one help page, in page order.

    Raises ``UnicodeDecodeError`` for a page that is not UTF-8 (the readers quarantine it).
    """
    html = Path(html_path).read_text(encoding="utf-8")
    yield from parse_paragraphs(html)


def page_title(html: str) -> str:
    """The text of the page's ``<title>`` (empty when there is none)."""
    parser = _TitleParser()
    parser.feed(html)
    parser.close()
    return normalize_whitespace("".join(parser.pieces))


class _TitleParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._inside = tag == "title" or self._inside

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.pieces.append(data)


def read_help_page(html_path: str | Path, *, translated_only: bool = False) -> tuple[str, int, int]:
    """(text, paragraphs on the page, paragraphs left out as untranslated) of one help page.

    The text is the page's paragraphs in order, one per line. With ``translated_only`` (the zh/ja
    trees, which fall back to English where a paragraph has no translation) a paragraph without
    Han/kana is left out.
    """
    paragraphs = [text for _, text in iter_paragraphs(html_path)]
    kept = [text for text in paragraphs if has_cjk(text)] if translated_only else paragraphs
    return "\n".join(kept), len(paragraphs), len(paragraphs) - len(kept)
