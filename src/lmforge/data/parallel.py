"""Translation conversations from the LibreOffice help, aligned paragraph by paragraph across languages.

The help packages ``libreoffice-help-en-us`` / ``-zh-cn`` / ``-ja`` ship the same tree of HTML pages
(``usr/share/libreoffice/help/<en-US|zh-CN|ja>/text/...``); every paragraph carries a ``par_id``
that is identical across languages. A pair is the English paragraph and the paragraph with the same
(relative page path, par_id) in the other tree — a human translation, when there is one: the
translated trees fall back to the English text for paragraphs nobody translated, so a pair is kept
only when the other side contains CJK characters and differs from the English (``pair_drop_reason``).

Each pair becomes ONE conversation in one direction (en->xx or xx->en, chosen by a hash of the pair
id, so both directions are present without the same pair being seen twice), its prompt one of several
natural phrasings in English or in the source language (also chosen by hash: deterministic). The
assistant turn is the reference translation; ``metadata`` holds ``src_lang``, ``tgt_lang``,
``pair_id``, ``page`` (the split unit: a held-out page gives no paragraph to training) and
``source_text``.

Limits: a paragraph is aligned by id, not by content: a stale translation of an edited English
paragraph is kept as long as it is CJK (LibreOffice marks no staleness in the HTML).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PACKAGES = {"en": "libreoffice-help-en-us", "zh": "libreoffice-help-zh-cn", "ja": "libreoffice-help-ja"}
HELP_DIRS = {"en": "en-US", "zh": "zh-CN", "ja": "ja"}
HELP_ROOT = "usr/share/libreoffice/help"
LICENSE = "MPL-2.0"

PROMPTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("en", "zh"): ("Translate into Chinese:\n\n{text}",
                   "Translate the following English text into Simplified Chinese.\n\n{text}",
                   "把下面的英文翻译成中文：\n\n{text}",
                   "请将以下内容翻译成中文：\n{text}"),
    ("en", "ja"): ("Translate into Japanese:\n\n{text}",
                   "Translate the following English text into Japanese.\n\n{text}",
                   "次の英文を日本語に翻訳してください。\n\n{text}",
                   "以下の文章を日本語に訳してください：\n{text}"),
    ("zh", "en"): ("Translate into English:\n\n{text}",
                   "Translate the following Chinese text into English.\n\n{text}",
                   "把下面的中文翻译成英文：\n\n{text}",
                   "请将以下内容翻译成英语：\n{text}"),
    ("ja", "en"): ("Translate into English:\n\n{text}",
                   "Translate the following Japanese text into English.\n\n{text}",
                   "次の日本語を英語に翻訳してください。\n\n{text}",
                   "以下の文章を英語に訳してください：\n{text}"),
}

_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# A space between two CJK characters is a line break of the HTML source that whitespace collapsing
# turned into a space (Chinese and Japanese put no spaces between words).
_CJK_SPACE = re.compile(f"(?<=[{_CJK}]) (?=[{_CJK}])")
_PLACEHOLDER = re.compile(r"\$\[[^\]]*\]|%[A-Z]{3,}|<[a-z/][^>]*>|\bahelp\b")


def help_tree(cache_root: str | Path, lang: str) -> Path:
    """The folder of one language's help pages inside the source cache (``<package>/usr/share/...``)."""
    return Path(cache_root) / PACKAGES[lang] / HELP_ROOT / HELP_DIRS[lang]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def pair_drop_reason(english: str, other: str, *, min_english_chars: int, max_bytes: int) -> str | None:
    """Why an aligned (English, other) paragraph pair is not a translation pair, or None to keep it."""
    from lmforge.data.libreoffice_help import has_cjk

    if len(english) <= min_english_chars:
        return "english_too_short"
    if len(english.encode("utf-8")) > max_bytes or len(other.encode("utf-8")) > max_bytes:
        return "too_long"
    if _PLACEHOLDER.search(english) or _PLACEHOLDER.search(other):
        return "placeholder_or_markup"
    if not _LETTER.search(english):
        return "no_letters"
    if other.strip() == english.strip() or not has_cjk(other):
        return "untranslated"
    return None


def align_pages(en_root: str | Path, other_root: str | Path, lang: str, *, min_english_chars: int = 20,
                max_bytes: int = 450, drops: Counter | None = None,
                english_cache: dict[str, list[tuple[str, str]]] | None = None,
                pages: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Aligned pairs ``{"pair_id", "page", "par_id", "en", lang: text}`` of two help trees, in page order.

    Pages are matched by relative path and paragraphs (``libreoffice_help.iter_paragraphs``: ``p`` and
    headings with an id) by id, the k-th occurrence of an id with the k-th; an English paragraph with no
    counterpart counts as ``not_in_<lang>``. A pair whose (English, translation) texts were already
    yielded from an earlier page counts as ``duplicate`` (help pages repeat boilerplate). ``drops``
    counts every paragraph not yielded, by reason. ``english_cache`` (page -> paragraphs) spares parsing
    the English tree again for the next language. ``pages`` (relative paths): only these English pages.
    """
    from lmforge.data.libreoffice_help import iter_paragraphs

    en_root, other_root = Path(en_root), Path(other_root)
    drops = drops if drops is not None else Counter()
    seen: set[tuple[str, str]] = set()
    for rel in sorted(pages) if pages is not None else list_pages(en_root):
        en_page = en_root / rel
        other_page = other_root / rel
        try:
            if english_cache is None or rel not in english_cache:
                english = list(iter_paragraphs(en_page))
                if english_cache is not None:
                    english_cache[rel] = english
            else:
                english = english_cache[rel]
            if not other_page.is_file():
                drops[f"page_not_in_{lang}"] += len(english)
                continue
            other: dict[str, list[str]] = {}
            for par_id, text in iter_paragraphs(other_page):
                other.setdefault(par_id, []).append(text)
        except UnicodeDecodeError as exc:
            logger.warning("%s: not UTF-8 (%s); page skipped", rel, exc.reason)
            drops["page_not_utf8"] += 1
            continue
        occurrence: Counter = Counter()
        for par_id, en_text in english:
            k = occurrence[par_id]  # an id may occur twice in a page: align the k-th with the k-th
            occurrence[par_id] += 1
            if k >= len(other.get(par_id, ())):
                drops[f"not_in_{lang}"] += 1
                continue
            text = _CJK_SPACE.sub("", other[par_id][k])
            reason = pair_drop_reason(en_text, text, min_english_chars=min_english_chars, max_bytes=max_bytes)
            if reason is None and (en_text, text) in seen:
                reason = "duplicate"
            if reason is not None:
                drops[reason] += 1
                continue
            seen.add((en_text, text))
            suffix = f"~{k}" if k else ""
            yield {"pair_id": f"{lang}:{rel}#{par_id}{suffix}", "page": rel, "par_id": par_id, "en": en_text,
                   lang: text}


def list_pages(root: str | Path) -> list[str]:
    """Relative paths of every help page under ``root``, sorted."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))


def sample_pages(pages: Sequence[str], max_pages: int | None, seed: int) -> list[str]:
    """At most ``max_pages`` of ``pages``, the ones with the smallest hash of (seed, page): a stable sample
    (raising ``max_pages`` only adds pages), sorted. None: all of them."""
    if max_pages is None or len(pages) <= max_pages:
        return sorted(pages)
    return sorted(sorted(pages, key=lambda page: _hash(f"{seed}:{page}"))[:max_pages])


def translation_conversation(pair: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """One aligned pair -> one translation conversation (direction and phrasing chosen by hash of its id)."""
    h = _hash(pair["pair_id"])
    src, tgt = ("en", lang) if h % 2 == 0 else (lang, "en")
    prompts = PROMPTS[(src, tgt)]
    prompt = prompts[(h // 2) % len(prompts)].format(text=pair[src])
    return {"id": f"translation-{pair['pair_id']}",
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": pair[tgt]}],
            "category": "translation",
            "metadata": {"src_lang": src, "tgt_lang": tgt, "pair_id": pair["pair_id"], "page": pair["page"],
                         "source_text": pair[src], "language_group": lang, "license": LICENSE,
                         "package": PACKAGES[lang]}}


def build_translation_conversations(cache_root: str | Path, languages: Sequence[str] = ("zh", "ja"), *,
                                    min_english_chars: int = 20, max_bytes: int = 450, max_pages: int | None = None,
                                    seed: int = 0) -> tuple[list[dict], dict[str, Any]]:
    """Translation conversations of every language in ``languages`` against English, and counts.

    ``max_pages``: align only that many help pages (``sample_pages``; parsing all 3 x 2,561 pages takes
    ~18 s of CPU, and a few hundred pages already give thousands of pairs). Stats: per language, pairs
    kept, pages, paragraphs dropped by reason and conversations per direction.
    """
    en_root = help_tree(cache_root, "en")
    all_pages = list_pages(en_root)
    pages = sample_pages(all_pages, max_pages, seed)
    conversations: list[dict] = []
    stats: dict[str, Any] = {}
    english_cache: dict[str, list[tuple[str, str]]] = {}
    for lang in languages:
        if lang not in PACKAGES or lang == "en":
            raise ValueError(f"sft.chat.translation_languages: no LibreOffice help tree for {lang!r}; "
                             f"have {sorted(set(PACKAGES) - {'en'})}")
        drops: Counter = Counter()
        pairs = list(align_pages(en_root, help_tree(cache_root, lang), lang, min_english_chars=min_english_chars,
                                 max_bytes=max_bytes, drops=drops, english_cache=english_cache, pages=pages))
        convs = [translation_conversation(p, lang) for p in pairs]
        directions = Counter(f"{c['metadata']['src_lang']}_{c['metadata']['tgt_lang']}" for c in convs)
        stats[lang] = {"pairs": len(pairs), "pages_read": len(pages), "pages_in_package": len(all_pages),
                       "pages": len({p["page"] for p in pairs}),
                       "dropped": dict(sorted(drops.items())), "directions": dict(sorted(directions.items()))}
        logger.info("libreoffice translation en-%s: %d pairs from %d pages; dropped %s", lang, len(pairs),
                    stats[lang]["pages"], dict(drops))
        conversations += convs
    return conversations, stats
