"""Identify the natural language and the writing script of a document, offline.

Two layers, both local:
- the script is counted, with no model: the share of letters in each Unicode script block of a
  bounded sample (ISO 15924 codes: `Latn`, `Cyrl`, `Grek`, `Arab`, `Hebr`, `Deva`, `Thai`, `Hang`,
  `Jpan` for Han with kana, `Hani` for Han alone...; "unknown" when the sample has no letters);
- the language comes from `lingua-language-detector` (its n-gram models ship in the wheel, nothing
  is downloaded) in its low-accuracy mode, which is fast and accurate on the paragraphs we give it,
  run on at most `sample_chars` characters. When lingua is not installed, or says nothing, a script
  that belongs to one language gives that language (`Hang` -> ko, `Jpan` -> ja, `Grek` -> el,
  `Hebr` -> he, `Thai` -> th...); a shared script (Latin, Cyrillic, Arabic, Devanagari) gives "unknown".

What "language" means for source code: the language of its comments and docstrings. Keywords and
identifiers are English-like in code written anywhere, so the whole text would make every file
"English" and say nothing; the comments are where the human language of a file shows (a
Japanese-commented module is a Japanese document for a language mix). So for a code document
the sample is the text of its comments (`#`, `//`, `/* */`) and triple-quoted strings, reduced to
words (acronyms, CamelCase names and URL pieces left out); with fewer than `min_letters` letters of
such prose the language is "unknown" (code without prose has no natural language: it is kept by
default, see `keep_unknown_language` in cleaning), and the script is that of the prose, or of the
code itself when it has none. Natural-language documents are sampled from their start, with
markup tokens (URLs, paths, links, tags) left out.

Chinese and Japanese text: when Han and kana make at least `CJK_PROSE_SHARE` of the letters of the
document's start, the sample becomes the document's CJK runs only (a rendered man page is ~40% Latin option
names and code, which made lingua answer "en" for 11 of 125 manpages-ja-dev pages: their synopses
come first) and the letter
minimum is divided by `CJK_LETTER_WEIGHT`. Lingua tells Japanese (kana with kanji) from Chinese by
the kana; measured on 250 pages each of manpages-zh/ja and 240 each of the zh/ja LibreOffice help,
no zh page came out ja nor the reverse (see the cleaning commit's measurements).

Codes are ISO 639-1, lowercase (`en`, `fr`, `ja`, `ru`), or "unknown".

Measured on the default corpus (836 stdlib files, 2 shared CPU cores): ~115 documents/s over all
spoken languages, ~500/s with 12 candidate languages; ~2 s to load the Latin-script models once per
process; ~130 MB resident. Every file with enough prose came out English except two that are not:
`this.py` (ROT13 text) and `turtledemo/forest.py` (German comments).
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"

# (ISO 15924 code, character class of its letters); the order breaks ties.
_SCRIPT_CLASSES = (
    ("Latn", "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"),
    ("Cyrl", "\u0400-\u04ff\u0500-\u052f"),
    ("Grek", "\u0370-\u03ff\u1f00-\u1fff"),
    ("Arab", "\u0600-\u06ff\u0750-\u077f"),
    ("Hebr", "\u0590-\u05ff"),
    ("Deva", "\u0900-\u097f"),
    ("Beng", "\u0980-\u09ff"),
    ("Thai", "\u0e00-\u0e7f"),
    ("Geor", "\u10a0-\u10ff"),
    ("Armn", "\u0530-\u058f"),
    ("Hang", "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"),
    ("Kana", "\u3040-\u30ff\u31f0-\u31ff"),  # hiragana and katakana
    ("Hani", "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"),
)
_SCRIPT_PATTERNS = tuple((name, re.compile(f"[{chars}]")) for name, chars in _SCRIPT_CLASSES)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
SCRIPT_LANGUAGE = {"Jpan": "ja", "Hang": "ko", "Hani": "zh", "Grek": "el", "Hebr": "he", "Thai": "th",
                   "Geor": "ka", "Armn": "hy", "Beng": "bn"}
"""Scripts written by essentially one language: the fallback language when lingua gives none."""

# Comments and docstrings of Python, C-family and shell-like code.
_CODE_PROSE = re.compile(r'"""([\s\S]*?)"""|\'\'\'([\s\S]*?)\'\'\'|/\*([\s\S]*?)\*/|(?:#|//)([^\n]*)')
# A whole run of letters (identifiers split at "_" and digits) of two or more letters whose letters
# after the first are not ASCII capitals: leaves out acronyms/constants (CNRI, NO) and CamelCase.
_PROSE_WORD = re.compile(r"(?<![^\W\d_])[^\W\d_][^\W\d_A-Z]+(?![^\W\d_])")
# Tokens of comments that are not words of any language: path and URL pieces, licence tags.
_NOISE_WORDS = frozenset("py usr bin env http https www com org net html spdx utf".split())


@dataclass(frozen=True)
class LanguageGuess:
    """What `identify_language` returns."""

    language: str
    """ISO 639-1 code, lowercase, or "unknown"."""
    script: str
    """ISO 15924 code of the dominant script of the sample, or "unknown" (no letters)."""
    method: str
    """How the language was decided: "lingua", "script" (one-language script) or "none"."""


def count_scripts(text: str) -> Counter[str]:
    """Return how many letters of text belong to each script (ISO 15924 codes)."""
    counts: Counter[str] = Counter()
    ascii_letters = len(_ASCII_LETTER.findall(text))
    if ascii_letters:
        counts["Latn"] = ascii_letters
    if not _NON_ASCII.search(text):
        return counts
    non_ascii = "".join(_NON_ASCII.findall(text))
    for name, pattern in _SCRIPT_PATTERNS:
        n = len(pattern.findall(non_ascii))
        if n:
            counts[name] += n
    return counts


def detect_script(text: str) -> tuple[str, float]:
    """Return (dominant script, its share of the letters) of text; ("unknown", 0.0) without letters.

    Han with any kana is `Jpan` (Japanese writes both), Han alone `Hani`; kana alone is `Jpan` too.
    """
    counts = count_scripts(text)
    if counts.get("Kana"):
        counts["Jpan"] = counts.pop("Kana") + counts.pop("Hani", 0)
    total = sum(counts.values())
    if not total:
        return UNKNOWN, 0.0
    name, n = max(counts.items(), key=lambda item: item[1])
    return name, n / total


def extract_code_prose(text: str, max_chars: int = 500, scan_chars: int = 50_000) -> str:
    """Return the words of the comments and docstrings of code, at most max_chars characters.

    Words are runs of letters (identifiers split at `_` and digits); acronyms, CamelCase names and
    URL/path pieces are left out: they are not words of any language and mislead the detector (on
    the stdlib, "Codec ... Marc Andre Lemburg ... CNRI ... NO WARRANTY" came out as Latin).
    Only the first scan_chars characters are scanned (bounded cost on big files).
    """
    words: list[str] = []
    size = 0
    for match in _CODE_PROSE.finditer(text, 0, min(len(text), scan_chars)):
        body = next(group for group in match.groups() if group is not None)
        for word in _PROSE_WORD.findall(body):
            if word.lower() in _NOISE_WORDS:
                continue
            words.append(word)
            size += len(word) + 1
            if size >= max_chars:
                return " ".join(words)
    return " ".join(words)


# Tokens of markup rather than prose: URLs, paths, e-mail, markdown/reST links, tables and tags.
_MARKUP_TOKEN = re.compile(r"\S*(?:://|[/\\@=|<>\[\]_{}])\S*")


def extract_text_prose(text: str, max_chars: int = 500, scan_chars: int = 50_000) -> str:
    """Return the words of natural-language text, at most max_chars characters, markup left out.

    README-like text opens with badges and links (`[![PyPI](https://img.shields.io/...)]`) whose
    URL pieces lingua reads as Dutch or Welsh; only words outside such tokens are kept.
    """
    words: list[str] = []
    size = 0
    for word in _PROSE_WORD.findall(_MARKUP_TOKEN.sub(" ", text[:scan_chars])):
        if word.lower() in _NOISE_WORDS:
            continue
        words.append(word)
        size += len(word) + 1
        if size >= max_chars:
            break
    return " ".join(words)


CJK_PROSE_SHARE = 0.1
"""Text whose Han + kana characters are at least this share of the letters of its first CJK_SCAN_CHARS
characters (and at least min_letters / CJK_LETTER_WEIGHT of them) is judged by its CJK words."""
CJK_SCAN_CHARS = 50_000
CJK_LETTER_WEIGHT = 4
"""min_letters is divided by this for a CJK sample (50 Han/kana characters for the default 200 letters)."""
_CJK_ANY = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_WORD = re.compile("[^\\s\\x00-\\x7f]*[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff][^\\s\\x00-\\x7f]*")


def extract_cjk_prose(text: str, max_chars: int = 500, scan_chars: int = 50_000) -> str:
    """Return the runs of text holding Han or kana characters, at most max_chars characters."""
    words: list[str] = []
    size = 0
    for match in _CJK_WORD.finditer(text, 0, min(len(text), scan_chars)):
        words.append(match.group())
        size += len(words[-1]) + 1
        if size >= max_chars:
            break
    return " ".join(words)


@functools.lru_cache(maxsize=4)
def _lingua_detector(candidates: tuple[str, ...] | None = None):
    """Return a shared lingua detector, or None if lingua is not installed.

    candidates None: all spoken languages (lingua leaves out only Latin, which on code comments
    was the usual wrong answer for names and acronyms); else those ISO 639-1 codes only (faster:
    the time grows with the number of languages of a script). Low-accuracy mode: trigrams only,
    faster and as good on samples of hundreds of characters. Models load lazily, per script, on
    first use (~2 s for the Latin-script languages).
    """
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder
    except ImportError:
        logger.warning("lingua-language-detector is not installed: languages come from the script only "
                       "(pip install lingua-language-detector)")
        return None
    if candidates is None:
        builder = LanguageDetectorBuilder.from_all_spoken_languages()
    else:
        unknown = [code for code in candidates if not hasattr(IsoCode639_1, code.upper())]
        if unknown or len(candidates) < 2:
            raise ValueError(f"language_candidates must name at least two ISO 639-1 codes lingua knows; "
                             f"unknown: {unknown}, given: {list(candidates)}")
        builder = LanguageDetectorBuilder.from_iso_codes_639_1(*(getattr(IsoCode639_1, c.upper()) for c in candidates))
    return builder.with_low_accuracy_mode().build()


def _lingua_language(sample: str, candidates: tuple[str, ...] | None = None) -> str | None:
    detector = _lingua_detector(candidates)
    if detector is None:
        return None
    language = detector.detect_language_of(sample)
    return None if language is None else language.iso_code_639_1.name.lower()


def identify_language(
    text: str,
    *,
    kind: str = "text",
    sample_chars: int = 500,
    min_letters: int = 200,
    use_lingua: bool = True,
    candidates: Sequence[str] | None = None,
) -> LanguageGuess:
    """Return the language and script of text (see the module docstring for code documents).

    Args:
        text: the document text.
        kind: "code" (language of comments and docstrings) or "text" (language of the text).
        sample_chars: at most this many characters are given to the detector.
        min_letters: fewer letters of natural language than this give language "unknown" (on the
            stdlib, 100 letters of comments still misled lingua on 4 files in 800, 200 on none).
        use_lingua: False to decide from the script alone (no model at all).
        candidates: ISO 639-1 codes lingua chooses among; None for all spoken languages.
    """
    if kind not in ("code", "text"):
        raise ValueError(f"kind must be 'code' or 'text', got {kind!r}")
    extract = extract_code_prose if kind == "code" else extract_text_prose
    sample = extract(text, max_chars=sample_chars)
    letters = sum(count_scripts(sample).values())
    scripts = count_scripts(text[:CJK_SCAN_CHARS]) if kind == "text" and _CJK_ANY.search(text, 0, CJK_SCAN_CHARS) else {}
    cjk = scripts.get("Hani", 0) + scripts.get("Kana", 0)
    if cjk >= max(1, min_letters // CJK_LETTER_WEIGHT) and cjk >= CJK_PROSE_SHARE * sum(scripts.values()):
        # Chinese/Japanese prose among Latin option names and code (a man page is ~40% Latin):
        # the CJK words are the prose, and a CJK character is worth several Latin letters.
        sample = extract_cjk_prose(text, max_chars=sample_chars)
        letters = sum(count_scripts(sample).values())
        min_letters = max(1, min_letters // CJK_LETTER_WEIGHT)
    if letters < min_letters:
        script, _ = detect_script(text[:sample_chars] if not letters else sample)
        return LanguageGuess(UNKNOWN, script, "none")
    script, _ = detect_script(sample)
    if use_lingua:
        language = _lingua_language(sample, None if candidates is None else tuple(c.lower() for c in candidates))
        if language is not None:
            return LanguageGuess(language, script, "lingua")
    if script in SCRIPT_LANGUAGE:
        return LanguageGuess(SCRIPT_LANGUAGE[script], script, "script")
    return LanguageGuess(UNKNOWN, script, "none")
