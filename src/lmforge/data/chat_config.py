"""``sft.chat``: the typed settings of the real chat sources of the SFT mix (``lmforge.data.sft_sources``).

Its own module so that the stages that only read ``SftConfig`` (evaluation, packaging) do not import
the readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHAT_SOURCES = {"libreoffice_translation": "translation", "chatterbot_dialogue": "dialogue", "debian_faq": "faq"}


@dataclass
class ChatSourcesConfig:
    """``sft.chat``: where the real chat sources are read and how they are cut and split."""

    # Languages translated to and from English (LibreOffice help trees): zh, ja.
    translation_languages: list[str] = field(default_factory=lambda: ["zh", "ja"])
    # chatterbot-corpus languages: en, zh (simplified), ja.
    dialogue_languages: list[str] = field(default_factory=lambda: ["en", "zh", "ja"])
    # Debian FAQ languages: en, zh, ja.
    faq_languages: list[str] = field(default_factory=lambda: ["en", "zh", "ja"])
    # Help pages aligned (a stable sample by seed; null: all 2,561, ~18 s of CPU instead of ~3 s).
    max_translation_pages: int | None = 400
    # A translation pair's English side must be longer than this (characters): shorter are UI labels.
    min_english_chars: int = 20
    # Longest side of a translation pair, in UTF-8 bytes (~ tokens x 3: fits max_length with the prompt).
    max_pair_bytes: int = 450
    # FAQ answers are cut to this many UTF-8 bytes, on a paragraph or sentence boundary.
    max_answer_bytes: int = 800
    # Share of split units (page, question, FAQ section) held out, per category.
    validation_fraction: float = 0.05
    # Held-out conversations kept per (category, language group), sampled by seed.
    max_validation_per_language: int = 100
    # Seed of the split and of the validation sample.
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"sft.chat.validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.max_translation_pages is not None and (isinstance(self.max_translation_pages, bool) or not isinstance(
                self.max_translation_pages, int) or self.max_translation_pages < 1):
            raise ValueError(f"sft.chat.max_translation_pages must be null or an integer >= 1, "
                             f"got {self.max_translation_pages!r}")
        for key in ("min_english_chars", "max_pair_bytes", "max_answer_bytes", "max_validation_per_language"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"sft.chat.{key} must be an integer >= 0, got {value!r}")
