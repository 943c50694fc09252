"""The built-in real chat sources of the SFT mix, read from the source cache, with held-out splits.

Three built-in sources (names of ``sft.sources``), each one category:

- ``libreoffice_translation`` (category ``translation``): aligned LibreOffice help paragraphs
  (``lmforge.data.parallel``), en<->zh and en<->ja; split unit: the help page;
- ``chatterbot_dialogue`` (``dialogue``): chatterbot-corpus en/zh/ja (``lmforge.data.chat_sources``);
  split unit: the first user turn;
- ``debian_faq`` (``faq``): Debian FAQ question->answer pairs en/zh/ja; split unit: the FAQ section.

``split_held_out`` puts every unit in train or validation by a hash of (seed, unit), per category, so
no page / question / section is on both sides; training conversations that repeat a held-out text
(the same paragraph on another page, the same question) are dropped as ``held_out_text``. The
validation side is then sampled down to ``max_validation_per_language`` per (category, language
group), deterministically: enough for a chrF / held-out loss, small enough to score on a CPU.

A missing cache stops with one line naming ``make corpus``.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.data.chat_config import CHAT_SOURCES, ChatSourcesConfig
from lmforge.data.splits import assign_split

logger = logging.getLogger(__name__)

def check_cache(source_cache: str | Path, packages: Iterable[str]) -> Path:
    """The cache root, or a one-line error naming what is missing and ``make corpus``."""
    root = Path(source_cache)
    missing = sorted(p for p in packages if not (root / p).is_dir())
    if not root.is_dir() or missing:
        what = f"{root} does not exist" if not root.is_dir() else f"{root} lacks {', '.join(missing)}"
        raise FileNotFoundError(f"SFT chat sources: {what}; run `make corpus` to fetch the packages "
                                f"(or drop the chat sources from sft.sources)")
    return root


def _held_out_texts(conversation: Mapping[str, Any]) -> set[str]:
    """Texts that must not be trained on once this conversation is held out."""
    texts = {conversation["messages"][0]["content"].strip()}
    meta = conversation.get("metadata") or {}
    if conversation.get("category") == "translation":
        texts |= {str(meta.get("source_text", "")).strip(), conversation["messages"][-1]["content"].strip()}
    return texts - {""}


def split_held_out(conversations: Sequence[dict], *, fraction: float, seed: int,
                   max_validation_per_language: int) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(train, validation, counts): by ``metadata["unit"]`` (or ``page``), per category; see the module doc."""
    from lmforge.data.documents import language_group

    train, held = [], []
    for conv in conversations:
        meta = conv.get("metadata") or {}
        unit = f"{conv.get('category')}:{meta.get('unit') or meta.get('page') or conv['id']}"
        (held if assign_split(unit, fraction, seed) == "validation" else train).append(conv)
    held_texts = set().union(*(_held_out_texts(c) for c in held)) if held else set()
    kept = [c for c in train if not (_held_out_texts(c) & held_texts)]
    leaked = Counter(c.get("category") for c in train if _held_out_texts(c) & held_texts)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, conv in enumerate(held):
        groups.setdefault((str(conv.get("category")), language_group(conv.get("metadata") or {})), []).append(i)
    chosen: list[int] = []
    for (category, lang), idx in sorted(groups.items()):
        rng = random.Random(f"{seed}:validation:{category}:{lang}")
        chosen += idx if len(idx) <= max_validation_per_language else rng.sample(idx, max_validation_per_language)
    validation = [held[i] for i in sorted(chosen)]
    counts = {"held_out_units_conversations": len(held), "validation": len(validation), "train": len(kept),
              "dropped_held_out_text": dict(sorted(leaked.items()))}
    return kept, validation, counts


def build_chat_sources(names: Iterable[str], config: ChatSourcesConfig, source_cache: str | Path) -> tuple[dict[str, list[dict]], list[dict],
                                                                                 list[dict], dict[str, Any]]:
    """(train conversations by source name, held-out conversations, quarantined records, stats) for the
    built-in chat sources in ``names`` (the others are ignored), read from the packages under ``source_cache``."""
    import time

    from lmforge.data.chat_sources import FAQ_PACKAGES, build_dialogues, build_faq, chatterbot_folder
    from lmforge.data.parallel import PACKAGES, build_translation_conversations

    names = [n for n in names if n in CHAT_SOURCES]
    if not names:
        return {}, [], [], {}
    needed = {"libreoffice_translation": ["libreoffice-help-en-us"] + [PACKAGES[lang] for lang in
                                                                       config.translation_languages if lang in PACKAGES],
              "chatterbot_dialogue": [chatterbot_folder(source_cache)],
              "debian_faq": [FAQ_PACKAGES[lang][0] for lang in config.faq_languages if lang in FAQ_PACKAGES]}
    root = check_cache(source_cache, sorted({p for n in names for p in needed[n]}))
    quarantine: list[dict] = []
    train: dict[str, list[dict]] = {}
    validation: list[dict] = []
    stats: dict[str, Any] = {}
    for name in names:
        start = time.perf_counter()
        if name == "libreoffice_translation":
            convs, read = build_translation_conversations(root, config.translation_languages,
                                                          min_english_chars=config.min_english_chars,
                                                          max_bytes=config.max_pair_bytes,
                                                          max_pages=config.max_translation_pages, seed=config.seed)
        elif name == "chatterbot_dialogue":
            convs, read = build_dialogues(root, config.dialogue_languages, quarantine=quarantine)
        else:
            convs, read = build_faq(root, config.faq_languages, max_answer_bytes=config.max_answer_bytes,
                                    quarantine=quarantine)
        train[name], held, split = split_held_out(convs, fraction=config.validation_fraction, seed=config.seed,
                                                  max_validation_per_language=config.max_validation_per_language)
        validation += [{**c, "source": name} for c in held]
        stats[name] = {"read": read, "split": split, "seconds": round(time.perf_counter() - start, 2)}
        logger.info("sft chat source %s: %d train, %d held out (%.1f s)", name, len(train[name]), len(held),
                    stats[name]["seconds"])
    return train, validation, quarantine, stats
