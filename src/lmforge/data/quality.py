"""Quality heuristics for natural-language documents: Gopher quality, Gopher repetition, C4.

These rules were designed for web prose and would drop most source code (braces, short lines,
repeated lines, few stop words), so cleaning applies them only to documents of kind "text"
(see `lmforge.data.cleaning.document_kind`); code never reaches them.

Each check returns None when the text passes, or a short detail naming the rule that failed and
its measured value ("mean_word_length=2.10 not in [3, 10]"), kept with the quarantined record.
Words are whitespace-separated tokens; "non-symbol words" are those holding at least one
character that is not punctuation. Datatrove 0.10 implements the same rules, but its Gopher filters
tokenize with spaCy/NLTK; these are standalone re-implementations with no model and no download.

Per language: the fields of `QualityConfig` are the rules for English and other space-separated
languages; `by_language` overrides any of them for one language (ISO 639-1 code), e.g. Chinese and
Japanese, which have no spaces between words. There, as FineWeb-2 does per language, the rules count
characters: with `unit: characters` every Han/kana character is a token of its own (other runs of
non-space characters stay whole tokens), so "words" below means these tokens, word-count bounds
become character-count bounds, and the repetition n-grams are character n-grams. Stop words are a
per-language list (`stop_words`, a language with no list skips the rule). `QualityConfig.for_language`
resolves the rules of one language; the cleaning filters pass the document's language (the source's
declared `language_group` when it names one, else the detected language).

Origins of the default thresholds:
- Gopher quality and repetition: Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
  Insights from Training Gopher", appendix A.1.1 and table A1 (the values datatrove's
  `GopherQualityFilter`/`GopherRepetitionFilter` use as defaults).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", section 2.2 (lorem ipsum, curly braces, terminal punctuation, "javascript" and
  cookie/policy lines). C4 removes offending lines; here the rules are document-level fractions as
  in FineWeb's C4 variant (Penedo et al. 2024): a document is dropped when too few of its lines end
  in terminal punctuation or too many are boilerplate, never rewritten.

Measured on the 239 package READMEs of this project's site-packages (markdown with badges and code
blocks, as kind "text"): all three checks ran at ~1.3 MB/s (datatrove's Gopher repetition filter:
~0.25 MB/s here); cleaning kept 69; the first failing rule was C4's curly brace for 57 and Gopher's
mean word length (long URLs) for 54. These are web-prose rules: for a documentation corpus relax
them (e.g. `c4_drop_curly_braces: false`) or give that source kind "code".
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field, fields, replace

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
"""Gopher's English stop words: a real English document holds at least two of them."""
DEFAULT_STOP_WORDS = {
    "en": list(STOP_WORDS),
    # The most frequent function characters (particles, copulas, structural words): with unit
    # "characters" each is a token, so these count occurrences of the characters.
    "zh": ["的", "是", "在", "了", "和", "不", "有", "这", "为", "中"],
    "ja": ["の", "に", "は", "を", "が", "で", "て", "た", "と", "し"],
}
"""Language -> stop words; documents of a language without a list skip the stop-word rule."""
_CJK_RULES = {
    "unit": "characters",
    "min_words": 50,  # characters (with Latin words): 50 Han/kana carry about what 30 English words do
    "min_mean_word_length": 1.0,  # a Han/kana token is 1 character, Latin words mixed in raise the mean:
    "max_mean_word_length": 4.0,  # measured 1.0-3.8 (1st-99th percentile); mostly-Latin text goes above
    "min_alpha_words_ratio": 0.7,  # CJK punctuation is its own non-letter token: zh help 1st percentile 0.69
    # The zh/ja sources are documentation whose braces are C examples (synopses of manpages-ja-dev):
    # the web rule dropped 66% of manpages-ja-dev and 20% of manpages-zh.
    "c4_drop_curly_braces": False,
}
DEFAULT_BY_LANGUAGE: dict[str, dict] = {
    # Gopher's word n-grams as character n-grams of about as many words, with Gopher's bounds: Chinese
    # words average ~2 characters; Japanese ~3 (kana endings, katakana loanwords): at 2 characters
    # per word, ja help pages lost 45% to repeated phrases such as "をクリックします" (en help: 22%),
    # at 3, 23%; zh help 12.5% at 2 characters per word.
    "zh": {**_CJK_RULES, "max_top_ngram_chars_ratio": {4: 0.2, 6: 0.18, 8: 0.16},
           "max_duplicate_ngram_chars_ratio": {10: 0.15, 12: 0.14, 14: 0.13, 16: 0.12, 18: 0.11, 20: 0.10}},
    "ja": {**_CJK_RULES, "max_top_ngram_chars_ratio": {6: 0.2, 9: 0.18, 12: 0.16},
           "max_duplicate_ngram_chars_ratio": {15: 0.15, 18: 0.14, 21: 0.13, 24: 0.12, 27: 0.11, 30: 0.10}},
}
"""Language -> overrides of QualityConfig fields for that language (defaults of `by_language`).

Chinese and Japanese count characters (see the module docstring). Measured on ~250 rendered pages
each of manpages-zh, manpages-ja and the zh/ja LibreOffice help, against en help and SOTU speeches
(percentiles and drop rates per reason: the commit that set them)."""
UNITS = ("words", "characters")
_CJK_CHAR_CLASS = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CHARACTER_TOKENS = re.compile(f"[{_CJK_CHAR_CLASS}]|[^\\s{_CJK_CHAR_CLASS}]+")
BULLETS = ("-", "*", "\u2022", "\u2023", "\u25cf", "\u25cb", "\u25aa", "\u2043", "\u2219")
ELLIPSES = ("...", "\u2026")
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "\u201d", "'", "\u3002", "\uff01", "\uff1f")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
UNSPACED_SCRIPTS = ("Jpan", "Hani", "Thai")
"""Scripts written without spaces between words: word-based rules do not apply to them."""
_PUNCTUATION = frozenset(string.punctuation + "\u2026\u201c\u201d\u2018\u2019\u2014\u2013\u00ab\u00bb"
                         + "".join(map(chr, range(0x3000, 0x3040))) + "\u30fb\uff01\uff08\uff09\uff0c\uff0e"
                         "\uff1a\uff1b\uff1f\uff3b\uff3d\uff5b\uff5d")


@dataclass
class QualityConfig:
    """Thresholds of the natural-language quality heuristics (defaults: Gopher table A1, C4/FineWeb)."""

    gopher_quality: bool = True
    """Run the Gopher quality rules (reason "gopher_quality")."""
    min_words: int = 50
    """Fewer non-symbol words than this fail gopher_quality."""
    max_words: int = 100_000
    """More non-symbol words than this fail gopher_quality."""
    min_mean_word_length: float = 3.0
    """Mean length of non-symbol words must lie in [min, max] (characters)."""
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    """Most "#" and ellipses per word."""
    max_bullet_lines_ratio: float = 0.9
    """Largest share of lines that start with a bullet."""
    max_ellipsis_lines_ratio: float = 0.3
    """Largest share of lines that end with an ellipsis."""
    min_alpha_words_ratio: float = 0.8
    """Smallest share of words holding at least one letter."""
    min_stop_words: int = 2
    """Fewest occurrences of STOP_WORDS; checked on English documents only (they are English words)."""

    gopher_repetition: bool = True
    """Run the Gopher repetition rules (reason "gopher_repetition")."""
    max_duplicate_lines_ratio: float = 0.3
    """Largest share of lines that repeat an earlier line."""
    max_duplicate_paragraphs_ratio: float = 0.3
    """Largest share of paragraphs (blocks split by blank lines) that repeat an earlier one."""
    max_duplicate_line_chars_ratio: float = 0.2
    """Largest share of characters in repeated lines."""
    max_duplicate_paragraph_chars_ratio: float = 0.2
    """Largest share of characters in repeated paragraphs."""
    max_top_ngram_chars_ratio: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    """n -> largest share of word characters covered by the most frequent n-gram."""
    max_duplicate_ngram_chars_ratio: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    """n -> largest share of word characters inside n-grams that occurred before."""

    c4_quality: bool = True
    """Run the C4 rules (reason "c4_quality")."""
    c4_min_terminal_punctuation_ratio: float = 0.12
    """Smallest share of non-empty lines ending in terminal punctuation (FineWeb's 0.12)."""
    c4_max_boilerplate_lines_ratio: float = 0.2
    """Largest share of lines mentioning "javascript" or a cookie/policy phrase."""
    c4_drop_lorem_ipsum: bool = True
    """Drop documents holding "lorem ipsum" (placeholder text)."""
    c4_drop_curly_braces: bool = True
    """Drop documents holding "{" (C4: code and templates in web text)."""

    unit: str = "words"
    """What the word rules count: "words" (whitespace-separated) or "characters" (each Han/kana
    character a token, other non-space runs whole: for languages written without spaces)."""
    stop_words: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_STOP_WORDS.items()})
    """Language -> stop words counted by the min_stop_words rule; a language without a list skips it."""
    by_language: dict[str, dict] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_BY_LANGUAGE.items()})
    """Language (ISO 639-1) -> overrides of the fields above for documents of that language
    (e.g. zh: {unit: characters, min_words: 100}); unknown field names are rejected."""

    def __post_init__(self) -> None:
        for name in ("max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                     "min_alpha_words_ratio", "max_duplicate_lines_ratio", "max_duplicate_paragraphs_ratio",
                     "max_duplicate_line_chars_ratio", "max_duplicate_paragraph_chars_ratio",
                     "c4_min_terminal_punctuation_ratio", "c4_max_boilerplate_lines_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"quality.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_words > self.max_words or self.min_mean_word_length > self.max_mean_word_length:
            raise ValueError("quality: need min_words <= max_words and min_mean_word_length <= max_mean_word_length")
        # YAML keys arrive as ints already; JSON/CLI overrides may give strings.
        self.max_top_ngram_chars_ratio = {int(n): float(r) for n, r in self.max_top_ngram_chars_ratio.items()}
        self.max_duplicate_ngram_chars_ratio = {
            int(n): float(r) for n, r in self.max_duplicate_ngram_chars_ratio.items()
        }
        if self.unit not in UNITS:
            raise ValueError(f"quality.unit must be one of {UNITS}, got {self.unit!r}")
        self.by_language = {str(k).lower(): dict(v or {}) for k, v in (self.by_language or {}).items()}
        self.stop_words = {str(k).lower(): [str(w) for w in v] for k, v in (self.stop_words or {}).items()}
        allowed = {f.name for f in fields(self)} - {"by_language", "stop_words"}
        for language, overrides in self.by_language.items():
            unknown = sorted(set(overrides) - allowed)
            if unknown:
                raise ValueError(f"quality.by_language.{language}: unknown key(s) {unknown}; "
                                 f"allowed: {sorted(allowed)}")
        self._resolved: dict[str, QualityConfig] = {}
        for language in self.by_language:
            self.for_language(language)  # validate each language's rules now, not on the first document

    def for_language(self, language: str | None) -> QualityConfig:
        """The rules for documents of language (ISO 639-1): these fields with by_language[language] applied."""
        overrides = self.by_language.get((language or "").lower())
        if not overrides:
            return self
        key = language.lower()
        if key not in self._resolved:
            self._resolved[key] = replace(self, **overrides, by_language={})
        return self._resolved[key]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def quality_tokens(text: str, unit: str = "words") -> list[str]:
    """The "words" of the rules: whitespace-separated, or (unit "characters") each Han/kana character alone."""
    return text.split() if unit == "words" else _CHARACTER_TOKENS.findall(text)


def gopher_quality_failure(
    text: str, config: QualityConfig, *, language: str = "en", script: str = "Latn"
) -> str | None:
    """Return which Gopher quality rule text fails, or None.

    The rules are config.for_language(language); with unit "words", word-based rules are skipped for
    scripts written without spaces (UNSPACED_SCRIPTS: a language without its own character rules);
    the stop-word rule runs when config.stop_words has a list for language.
    """
    config = config.for_language(language)
    lines = _lines(text)
    if lines:
        bullets = sum(line.startswith(BULLETS) for line in lines) / len(lines)
        if bullets > config.max_bullet_lines_ratio:
            return f"bullet_lines_ratio={bullets:.2f} > {config.max_bullet_lines_ratio}"
        ellipses = sum(line.endswith(ELLIPSES) for line in lines) / len(lines)
        if ellipses > config.max_ellipsis_lines_ratio:
            return f"ellipsis_lines_ratio={ellipses:.2f} > {config.max_ellipsis_lines_ratio}"
    if config.unit == "words" and script in UNSPACED_SCRIPTS:
        return None
    words = quality_tokens(text, config.unit)
    # Each rule looks at a token alone: judge each distinct token once and weigh it by its count
    # (CJK text has a few thousand distinct characters in 100,000 tokens).
    counts = Counter(words)
    non_symbol = {word: c for word, c in counts.items() if any(ch not in _PUNCTUATION for ch in word)}
    n = sum(non_symbol.values())
    if not config.min_words <= n <= config.max_words:
        return f"{config.unit}={n} not in [{config.min_words}, {config.max_words}]"
    mean_length = sum(len(word) * c for word, c in non_symbol.items()) / n
    if not config.min_mean_word_length <= mean_length <= config.max_mean_word_length:
        return (f"mean_word_length={mean_length:.2f} not in "
                f"[{config.min_mean_word_length}, {config.max_mean_word_length}]")
    symbols = (text.count("#") + text.count("...") + text.count("\u2026")) / len(words)
    if symbols > config.max_symbol_word_ratio:
        return f"symbol_word_ratio={symbols:.2f} > {config.max_symbol_word_ratio}"
    alpha = sum(c for word, c in counts.items() if any(ch.isalpha() for ch in word)) / len(words)
    if alpha < config.min_alpha_words_ratio:
        return f"alpha_words_ratio={alpha:.2f} < {config.min_alpha_words_ratio}"
    stop_list = config.stop_words.get((language or "").lower())
    if stop_list and config.min_stop_words > 0:
        stop_set = frozenset(stop_list)
        stop_words = sum(c for word, c in counts.items() if word.lower().strip(string.punctuation) in stop_set)
        if stop_words < config.min_stop_words:
            return f"stop_words={stop_words} < {config.min_stop_words}"
    return None


def _duplicate_stats(items: list[str]) -> tuple[int, int]:
    """Return (number of items equal to an earlier one, their total characters)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


class _WordNgrams:
    """Word n-grams of one text as 64-bit hashes (numpy), so each rule is a few vector operations.

    Words become integer ids; the n-gram starting at word i hashes to sum(ids[i + k] * P**k) in
    wrapping uint64 arithmetic (a collision needs two different n-grams with one hash: ~1e-19).
    """

    _MULTIPLIER = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): mixes positions

    def __init__(self, words: list[str]) -> None:
        import numpy as np

        self.np = np
        vocabulary = {word: i for i, word in enumerate(dict.fromkeys(words), 1)}  # first-seen order: deterministic
        self.ids = np.fromiter(map(vocabulary.__getitem__, words), dtype=np.uint64, count=len(words))
        self.lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        self.total = int(self.lengths.sum())

    def hashes(self, n: int):
        np = self.np
        count = len(self.ids) - n + 1
        h = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = h * np.uint64(self._MULTIPLIER) + self.ids[k:k + count]
        return h

    def top_chars_ratio(self, n: int) -> float:
        if len(self.ids) < n or not self.total:
            return 0.0
        np = self.np
        _, first, counts = np.unique(self.hashes(n), return_index=True, return_counts=True)
        best = int(np.argmax(counts))
        if counts[best] < 2:
            return 0.0
        start = int(first[best])
        return int(counts[best]) * int(self.lengths[start:start + n].sum()) / self.total

    def duplicate_chars_ratio(self, n: int) -> float:
        if len(self.ids) < n or not self.total:
            return 0.0
        np = self.np
        h = self.hashes(n)
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        repeats = np.flatnonzero(first[inverse] != np.arange(len(h)))
        if not len(repeats):
            return 0.0
        depth = np.zeros(len(self.ids) + 1, dtype=np.int64)
        np.add.at(depth, repeats, 1)
        np.add.at(depth, repeats + n, -1)
        covered = np.cumsum(depth[:-1]) > 0
        return int(self.lengths[covered].sum()) / self.total


def top_ngram_chars_ratio(words: list[str], n: int) -> float:
    """Return the share of word characters covered by the most frequent n-gram (its count x its length)."""
    return _WordNgrams(words).top_chars_ratio(n)


def duplicate_ngram_chars_ratio(words: list[str], n: int) -> float:
    """Return the share of word characters inside repeated occurrences of n-grams.

    Every occurrence of an n-gram after its first marks its n words; the ratio is the characters of
    the marked words (each counted once, overlaps included once) over all word characters. This is
    the Gopher definition ("fraction of characters contained within all duplicate n-grams");
    datatrove scans left to right and skips past each repeat, which can count slightly less.
    """
    return _WordNgrams(words).duplicate_chars_ratio(n)


def gopher_repetition_failure(text: str, config: QualityConfig, *, language: str | None = None) -> str | None:
    """Return which Gopher repetition rule text fails, or None (rules of config.for_language(language))."""
    config = config.for_language(language)
    total_chars = len(text) or 1
    paragraphs = [p.strip() for p in re.split(r"\n{2,}", text) if p.strip()]
    if paragraphs:
        count, chars = _duplicate_stats(paragraphs)
        if count / len(paragraphs) > config.max_duplicate_paragraphs_ratio:
            return f"duplicate_paragraphs_ratio={count / len(paragraphs):.2f} > {config.max_duplicate_paragraphs_ratio}"
        if chars / total_chars > config.max_duplicate_paragraph_chars_ratio:
            return (f"duplicate_paragraph_chars_ratio={chars / total_chars:.2f} > "
                    f"{config.max_duplicate_paragraph_chars_ratio}")
    lines = _lines(text)
    if lines:
        count, chars = _duplicate_stats(lines)
        if count / len(lines) > config.max_duplicate_lines_ratio:
            return f"duplicate_lines_ratio={count / len(lines):.2f} > {config.max_duplicate_lines_ratio}"
        if chars / total_chars > config.max_duplicate_line_chars_ratio:
            return f"duplicate_line_chars_ratio={chars / total_chars:.2f} > {config.max_duplicate_line_chars_ratio}"
    ngrams = _WordNgrams([word.lower() for word in quality_tokens(text, config.unit)])
    for n, limit in sorted(config.max_top_ngram_chars_ratio.items()):
        ratio = ngrams.top_chars_ratio(n)
        if ratio > limit:
            return f"top_{n}gram_chars_ratio={ratio:.2f} > {limit}"
    for n, limit in sorted(config.max_duplicate_ngram_chars_ratio.items()):
        ratio = ngrams.duplicate_chars_ratio(n)
        if ratio > limit:
            return f"duplicate_{n}gram_chars_ratio={ratio:.2f} > {limit}"
    return None


def c4_failure(text: str, config: QualityConfig, *, language: str | None = None) -> str | None:
    """Return which C4 rule text fails, or None (rules of config.for_language(language))."""
    config = config.for_language(language)
    lowered = text.lower()
    if config.c4_drop_lorem_ipsum and "lorem ipsum" in lowered:
        return "lorem_ipsum"
    if config.c4_drop_curly_braces and "{" in text:
        return "curly_brace"
    lines = _lines(lowered)
    if not lines:
        return None
    terminal = sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines) / len(lines)
    if terminal < config.c4_min_terminal_punctuation_ratio:
        return f"terminal_punctuation_ratio={terminal:.2f} < {config.c4_min_terminal_punctuation_ratio}"
    boilerplate = sum("javascript" in line or any(p in line for p in POLICY_PHRASES) for line in lines) / len(lines)
    if boilerplate > config.c4_max_boilerplate_lines_ratio:
        return f"boilerplate_lines_ratio={boilerplate:.2f} > {config.c4_max_boilerplate_lines_ratio}"
    return None
