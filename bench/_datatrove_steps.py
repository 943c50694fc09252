"""datatrove steps used by `data_stage_vs_datatrove.py`, in their own module so that datatrove's
worker processes (forkserver/spawn) can import them by name and the "ours" child never imports datatrove.

datatrove's Gopher and C4 filters are English web-text rules; our cleaning runs its quality heuristics on
documents of kind "text" only. These subclasses pass documents of kind "code" through unchanged, so
both pipelines apply the quality rules to the same documents.
"""

from __future__ import annotations

from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter


class _SkipCode:
    """Mixin: keep code (metadata kind or language_group "code") without running the filter."""

    def filter(self, doc):
        if doc.metadata.get("kind") == "code" or doc.metadata.get("language_group") == "code":
            return True
        return super().filter(doc)


class TextGopherRepetitionFilter(_SkipCode, GopherRepetitionFilter):
    """GopherRepetitionFilter on documents of kind text only."""

    name = "👯 Gopher Repetition (text only)"


class TextGopherQualityFilter(_SkipCode, GopherQualityFilter):
    """GopherQualityFilter on documents of kind text only."""

    name = "🥇 Gopher Quality (text only)"


class TextC4QualityFilter(_SkipCode, C4QualityFilter):
    """C4QualityFilter (drops and removes lines) on documents of kind text only."""

    name = "⛰ C4 Quality (text only)"
