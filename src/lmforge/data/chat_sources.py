"""Real chat data from the fetched packages: dialogues (chatterbot-corpus) and FAQ pairs (Debian FAQ).

Both read the source cache (``data/00_sources/<package>/...``, the extracted package trees; the root
is a parameter). Every conversation is ``{"id", "messages", "category", "metadata"}`` with
``metadata["language_group"]`` (en, zh, ja), ``license``, ``package`` and ``unit`` — the split unit
(``split_held_out``): no unit is on both sides.

- **dialogue**: ``chatterbot_corpus/data/<english|chinese|japanese>/*.yml``, ``conversations: [[q, a,
  ...], ...]``, multi-turn (turns alternate user/assistant; an odd last turn is dropped). Read with
  ``yaml.safe_load``; a file that does not parse or has no ``conversations`` list is quarantined with
  file and reason, a malformed dialogue with file, index and reason. Dialogues where the bot says who
  it is ("What is your name?", "你是谁", "chatterbot") are dropped as ``identity_conflict``: the
  identity source says who the assistant is. Unit: the first user turn (the corpus repeats a
  question with several answers; all of them fall on one side).
- **faq**: the Debian FAQ's DocBook HTML (``debian-faq``, ``-zh-cn``, ``-ja``): a section heading
  ending in ``?`` / ``？`` is the question, the paragraphs that follow (up to the next heading, cut at
  ``max_answer_bytes`` of UTF-8 on a paragraph or sentence boundary) the answer. Unit: the section's anchor id,
  shared by the three languages, so a held-out question is held out in every language.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHATTERBOT_PACKAGE = "chatterbot-corpus"
# The cache folder is the PyPI name; pip treats "-" and "_" alike, and an unpacked wheel may be named either way.
CHATTERBOT_FOLDERS = (CHATTERBOT_PACKAGE, "chatterbot_corpus")
CHATTERBOT_DIRS = {"en": "english", "zh": "chinese", "ja": "japanese"}
CHATTERBOT_LICENSE = "BSD-3-Clause"
FAQ_PACKAGES = {"en": ("debian-faq", "*.en.html"), "zh": ("debian-faq-zh-cn", "*.zh-cn.html"),
                "ja": ("debian-faq-ja", "*.ja.html")}
FAQ_ROOT = "usr/share/doc/debian/FAQ"
FAQ_LICENSE = "GPL-2.0-or-later"

# Dialogues in which the chatbot talks about its own identity would teach a second, conflicting one.
IDENTITY_CONFLICT = re.compile(
    r"chatterbot|\bwho are you\b|\bwhat are you\b|\byour name\b|\bmy name\b|\bwho (made|created|built) you\b"
    r"|你是谁|你叫什么|你的名字|我的名字|你是一个人工智能|谁(创造|开发|制造)了你"
    r"|あなたは誰|あなたの名前|私の名前|あなたは人工的", re.IGNORECASE)
_CJK = r"\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_CJK_BREAK = re.compile(rf"(?<=[{_CJK}])\s*\n\s*(?=[{_CJK}])")
_SECTION_NUMBER = re.compile(r"^\s*(\d+(\.\d+)*\.?)\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


class QuarantineError(ValueError):
    """A file or record that cannot become conversations; quarantined with ``reason``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _unit_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _quarantined(source: str, location: str, reason: str, detail: str) -> dict[str, Any]:
    return {"source": source, "location": location, "reason": reason, "detail": detail, "record": ""}


# ---- dialogue: chatterbot-corpus -------------------------------------------------------------------

def parse_chatterbot_file(path: Path, name: str, lang: str, *, drops: Counter, quarantine: list[dict],
                          seen: set[tuple[str, ...]] | None = None) -> list[dict[str, Any]]:
    """Dialogues of one chatterbot YAML file; a bad file or dialogue goes to ``quarantine``, a dialogue
    already in ``seen`` (same turns) is dropped as ``duplicate``."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        quarantine.append(_quarantined("dialogue", name, "unparsable_yaml", " ".join(str(exc).split())[:300]))
        return []
    dialogues = data.get("conversations") if isinstance(data, dict) else None
    if not isinstance(dialogues, list):
        quarantine.append(_quarantined("dialogue", name, "no_conversations",
                                       "top level has no 'conversations' list of [question, answer, ...]"))
        return []
    topic = path.stem
    seen = seen if seen is not None else set()
    out = []
    for i, turns in enumerate(dialogues):
        where = f"{name}:conversations[{i}]"
        if not isinstance(turns, list) or len(turns) < 2:
            quarantine.append(_quarantined("dialogue", where, "too_few_turns", f"need [question, answer, ...], got {turns!r}"[:300]))
            continue
        if not all(isinstance(t, str | int | float) and not isinstance(t, bool) and str(t).strip() for t in turns):
            quarantine.append(_quarantined("dialogue", where, "bad_turn", "every turn must be non-empty text"))
            continue
        turns = [" ".join(str(t).split()) for t in turns][: len(turns) // 2 * 2]  # one-line turns
        if any(IDENTITY_CONFLICT.search(t) for t in turns):
            drops["identity_conflict"] += 1
            continue
        if tuple(turns) in seen:
            drops["duplicate"] += 1
            continue
        seen.add(tuple(turns))
        messages = [{"role": "user" if k % 2 == 0 else "assistant", "content": t} for k, t in enumerate(turns)]
        out.append({"id": f"dialogue-{lang}-{topic}-{i}", "messages": messages, "category": "dialogue",
                    "metadata": {"language_group": lang, "license": CHATTERBOT_LICENSE, "package": CHATTERBOT_PACKAGE,
                                 "topic": topic, "turns": len(turns),
                                 "unit": f"dialogue:{lang}:{_unit_hash(turns[0].lower())}"}})
    return out


def chatterbot_folder(cache_root: str | Path) -> str:
    """The cache folder of chatterbot-corpus (``CHATTERBOT_FOLDERS``: the first that exists, else the PyPI name)."""
    return next((f for f in CHATTERBOT_FOLDERS if (Path(cache_root) / f).is_dir()), CHATTERBOT_PACKAGE)


def build_dialogues(cache_root: str | Path, languages: Sequence[str], *,
                    quarantine: list[dict]) -> tuple[list[dict], dict[str, Any]]:
    """Dialogues of every language in ``languages`` (en, zh, ja) and their counts."""
    base = Path(cache_root) / chatterbot_folder(cache_root) / "chatterbot_corpus" / "data"
    conversations: list[dict] = []
    stats: dict[str, Any] = {}
    for lang in languages:
        if lang not in CHATTERBOT_DIRS:
            raise ValueError(f"sft.chat.dialogue_languages: chatterbot-corpus has no {lang!r}; have {sorted(CHATTERBOT_DIRS)}")
        folder = base / CHATTERBOT_DIRS[lang]
        files = sorted(folder.glob("*.yml"))
        if not files:
            raise FileNotFoundError(f"{folder}: no *.yml dialogues; run `make corpus` to fetch chatterbot-corpus")
        drops: Counter = Counter()
        seen: set[tuple[str, ...]] = set()
        before = len(quarantine)
        convs = []
        for path in files:
            convs += parse_chatterbot_file(path, path.relative_to(cache_root).as_posix(), lang,
                                           drops=drops, quarantine=quarantine, seen=seen)
        stats[lang] = {"files": len(files), "dialogues": len(convs), "dropped": dict(drops),
                       "quarantined": len(quarantine) - before}
        logger.info("chatterbot %s: %d dialogues from %d files; dropped %s, quarantined %d", lang, len(convs),
                    len(files), dict(drops), len(quarantine) - before)
        conversations += convs
    return conversations, stats


# ---- faq: the Debian FAQ ----------------------------------------------------------------------------

def _clean(text: str) -> str:
    """Whitespace of HTML text collapsed; a line break between two CJK characters removed, not spaced."""
    text = _CJK_BREAK.sub("", text)
    return " ".join(text.split())


class _FaqParser(HTMLParser):
    """Sections of DocBook HTML: (anchor id, heading text, [paragraph texts])."""

    HEADINGS = ("h1", "h2", "h3", "h4", "h5")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[list[Any]] = []
        self._heading: list[str] | None = None
        self._anchor: str | None = None
        self._para: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in self.HEADINGS:
            self._heading, self._anchor = [], None
        elif tag == "a" and self._heading is not None and attributes.get("id") and self._anchor is None:
            self._anchor = attributes["id"]
        elif tag == "p" and self._heading is None and self.sections:
            if self._para is None:
                self._para, self._depth = [], 0
            else:
                self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HEADINGS and self._heading is not None:
            self.sections.append([self._anchor, _clean("".join(self._heading)), []])
            self._heading = None
        elif tag == "p" and self._para is not None:
            if self._depth:
                self._depth -= 1
                return
            text = _clean("".join(self._para))
            if text:
                self.sections[-1][2].append(text)
            self._para = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)
        elif self._para is not None:
            self._para.append(data)


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def cut_answer(paragraphs: Sequence[str], max_bytes: int) -> str:
    """Whole paragraphs while they fit in ``max_bytes`` of UTF-8 (a budget of tokens more than of characters,
    whatever the script); a first paragraph too long is cut at a sentence end
    (empty when even its first sentence does not fit)."""
    kept: list[str] = []
    for para in paragraphs:
        if _nbytes("\n\n".join([*kept, para])) <= max_bytes:
            kept.append(para)
            continue
        if not kept:
            text = ""
            for sentence in _SENTENCE_END.split(para):
                joined = text + (" " if text.endswith((".", "!", "?")) else "") + sentence
                if _nbytes(joined) > max_bytes:
                    break
                text = joined
            kept.append(text)
        break
    return "\n\n".join(k for k in kept if k)


def extract_faq_pairs(html: str, *, max_answer_bytes: int = 800) -> Iterator[tuple[str, str, str]]:
    """(anchor id, question, answer) for every section whose heading ends with ``?`` or ``？``."""
    parser = _FaqParser()
    parser.feed(html)
    parser.close()
    for anchor, heading, paragraphs in parser.sections:
        question = _SECTION_NUMBER.sub("", heading).strip()
        if not question.endswith(("?", "？")) or not paragraphs:
            continue
        answer = cut_answer(paragraphs, max_answer_bytes)
        if answer:
            yield anchor or _unit_hash(question), question, answer


def build_faq(cache_root: str | Path, languages: Sequence[str], *, max_answer_bytes: int = 800,
              quarantine: list[dict]) -> tuple[list[dict], dict[str, Any]]:
    """FAQ question->answer conversations in every language of ``languages`` and their counts."""
    conversations: list[dict] = []
    stats: dict[str, Any] = {}
    for lang in languages:
        if lang not in FAQ_PACKAGES:
            raise ValueError(f"sft.chat.faq_languages: no Debian FAQ package for {lang!r}; have {sorted(FAQ_PACKAGES)}")
        package, pattern = FAQ_PACKAGES[lang]
        root = Path(cache_root) / package / FAQ_ROOT
        files = sorted(p for p in root.rglob(pattern) if not p.is_symlink() and not p.name.startswith("index."))
        if not files:
            raise FileNotFoundError(f"{root}: no {pattern} pages; run `make corpus` to fetch {package}")
        convs = []
        for path in files:
            name = f"{package}/{path.relative_to(Path(cache_root) / package).as_posix()}"
            try:
                html = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                quarantine.append(_quarantined("faq", name, "not_utf8", str(exc)))
                continue
            for anchor, question, answer in extract_faq_pairs(html, max_answer_bytes=max_answer_bytes):
                convs.append({"id": f"faq-{lang}-{anchor}", "category": "faq",
                              "messages": [{"role": "user", "content": question},
                                           {"role": "assistant", "content": answer}],
                              "metadata": {"language_group": lang, "license": FAQ_LICENSE, "package": package,
                                           "page": path.name, "unit": f"faq:{anchor}"}})
        stats[lang] = {"files": len(files), "pairs": len(convs)}
        logger.info("debian faq %s: %d question->answer pairs from %d pages", lang, len(convs), len(files))
        conversations += convs
    return conversations, stats
