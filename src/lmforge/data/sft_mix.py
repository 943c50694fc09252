"""The SFT data mix: named sources, each with a weight or a cap, sampled reproducibly by seed.

A mix is a list of sources (``sft.sources`` in parameters_sft.yml). Five are built in and need no
``path``: ``corpus_instructions`` (signature+docstring -> body pairs from the corpus, train split,
category ``code``), ``identity`` (the identity conversations, default weight ``identity.repeat``) and
the real chat sources of ``lmforge.data.sft_sources`` read from the source cache:
``libreoffice_translation``, ``chatterbot_dialogue`` and ``debian_faq``. Any other source reads
Alpaca / ShareGPT / OpenAI-messages files (``lmforge.data.sft_formats``).

How one source is sampled, in this order:

1. ``per_language_cap``: at most that many conversations of each language group
   (``documents.language_group`` of the conversation's metadata), chosen at random;
2. ``per_category_cap``: at most that many conversations of each category (the record field named by
   ``category_field``; the built-in sources carry their own ``category``), chosen at random — the
   seed recipe's "500 per category";
3. then either ``weight`` (a multiplier of what is left: 0.25 keeps a random quarter, 1 keeps all,
   2.5 repeats everything twice and adds a random half) or ``max_samples`` (at most that many, chosen
   at random; fewer available means all of them, never repeats); neither means weight 1.

Sampling is without replacement inside each step, keeps the input order of what it keeps, and draws
from ``random.Random(f"{seed}:{source}...")``: the same seed and inputs give the same mix on any
machine, and adding a source does not change what another source draws. Sources are concatenated in
config order (the training sampler shuffles).

``build_mix`` returns the realised mix: per source how many were read, valid, quarantined (by
reason), left after the language and category caps, selected, their share of the mix and per-category
and per-language counts (names made safe as metric keys by ``metric_key``); over the whole mix, the
counts per category and per language (``by_category``, ``by_language``).
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmforge.config import build_dataclass
from lmforge.data.sft_formats import FORMATS, ReadStats, read_conversations

logger = logging.getLogger(__name__)

BUILTIN_SOURCES = ("corpus_instructions", "identity", "libreoffice_translation", "chatterbot_dialogue", "debian_faq")
# The default mix (parameters_sft.yml repeats it): every category capped at 500 (the seed recipe), the
# multilingual sources balanced per language first, identity repeated (its weight: identity.repeat).
DEFAULT_SOURCES = [
    {"name": "libreoffice_translation", "per_language_cap": 250, "per_category_cap": 500},
    {"name": "chatterbot_dialogue", "per_language_cap": 160, "per_category_cap": 500},
    {"name": "debian_faq", "per_language_cap": 120, "per_category_cap": 500},
    {"name": "corpus_instructions", "per_category_cap": 500},
    {"name": "identity"},
]


@dataclass
class SourceSpec:
    """One source of the SFT mix."""

    # Name in the realised mix and in each conversation's ``source``; a built-in name or your own.
    name: str
    # File, folder or glob of .jsonl/.json/.parquet files (.gz allowed); None for the built-in sources.
    path: str | None = None
    # alpaca | sharegpt | openai | auto (decided per record).
    format: str = "auto"
    # Multiplier of the source's size (fractions subsample, >1 repeats); exclusive with max_samples.
    weight: float | None = None
    # At most this many conversations (sampled); exclusive with weight.
    max_samples: int | None = None
    # Record field holding a category (user sources); its value becomes the conversation's ``category``.
    category_field: str | None = None
    # At most this many conversations per category, before weight / max_samples.
    per_category_cap: int | None = None
    # At most this many conversations per language group (metadata language_group), before the category cap.
    per_language_cap: int | None = None

    def __post_init__(self) -> None:
        where = f"sft.sources[{self.name!r}]"
        if not isinstance(self.name, str) or not re.fullmatch(r"[\w\-]+", self.name):
            raise ValueError(f"sft.sources: a source name is letters, digits, _ and - (it names metrics), "
                             f"got {self.name!r}")
        if self.name in BUILTIN_SOURCES:
            if self.path is not None or self.category_field is not None:
                raise ValueError(f"{where} is built in: remove path/category_field, or rename the source")
        elif not self.path:
            raise ValueError(f"{where} has no path; give a file/folder/glob of .jsonl/.json/.parquet, "
                             f"or use a built-in source ({', '.join(BUILTIN_SOURCES)})")
        if self.format not in FORMATS:
            raise ValueError(f"{where}.format must be one of {FORMATS}, got {self.format!r}")
        if self.weight is not None and self.max_samples is not None:
            raise ValueError(f"{where}: give weight or max_samples, not both")
        if self.weight is not None and (isinstance(self.weight, bool) or not isinstance(self.weight, int | float)
                                        or not 0 <= self.weight < math.inf):
            raise ValueError(f"{where}.weight must be a number >= 0, got {self.weight!r}")
        for key in ("max_samples", "per_category_cap", "per_language_cap"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{where}.{key} must be an integer >= 0, got {value!r}")
        if self.per_category_cap is not None and self.name not in BUILTIN_SOURCES and not self.category_field:
            raise ValueError(f"{where}.per_category_cap needs category_field (the record field naming the category)")


def parse_sources(raw: Sequence[Mapping[str, Any]] | None, *, path: str = "sft.sources") -> list[SourceSpec]:
    """Typed sources from ``params['sources']`` (None: the default mix, ``DEFAULT_SOURCES``)."""
    raw = DEFAULT_SOURCES if raw is None else raw
    if isinstance(raw, Mapping | str) or not isinstance(raw, Sequence):
        raise TypeError(f"{path} must be a list of sources ({{name, path, format, weight | max_samples, ...}})")
    specs = [build_dataclass(SourceSpec, item, path=f"{path}[{i}]") for i, item in enumerate(raw)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: source names must be unique, repeated: {duplicates}")
    return specs


def metric_key(name: str) -> str:
    """``name`` made safe as one part of an MLflow metric name: anything but letters, digits, _ - and
    space becomes ``_`` (``.`` would nest, ``/`` can make the name a path MLflow rejects)."""
    return re.sub(r"[^\w\- ]", "_", str(name)) or "_"


def category_of(conversation: Mapping[str, Any]) -> str:
    """The conversation's category as a string (``(none)`` when it has none)."""
    category = conversation.get("category")
    return "(none)" if category is None else str(category)


def _sample_indices(n: int, k: int, rng: random.Random) -> list[int]:
    """k of range(n) without replacement, in increasing order."""
    return sorted(rng.sample(range(n), k)) if k < n else list(range(n))


def language_of(conversation: Mapping[str, Any]) -> str:
    """The conversation's language group (``documents.language_group`` of its metadata)."""
    from lmforge.data.documents import language_group

    return language_group(conversation.get("metadata") or {})


def _cap_by(conversations: Sequence[dict], cap: int, key: Any, *, seed: int, source: str, what: str) -> list[dict]:
    groups: dict[str, list[int]] = {}
    for i, conv in enumerate(conversations):
        groups.setdefault(key(conv), []).append(i)
    keep: list[int] = []
    for name, indices in groups.items():
        rng = random.Random(f"{seed}:{source}:{what}:{name}")
        keep += [indices[j] for j in _sample_indices(len(indices), cap, rng)]
    return [conversations[i] for i in sorted(keep)]


def cap_categories(conversations: Sequence[dict], cap: int, *, seed: int, source: str) -> list[dict]:
    """At most ``cap`` conversations of each category, drawn at random (input order kept)."""
    return _cap_by(conversations, cap, category_of, seed=seed, source=source, what="category")


def cap_languages(conversations: Sequence[dict], cap: int, *, seed: int, source: str) -> list[dict]:
    """At most ``cap`` conversations of each language group, drawn at random (input order kept)."""
    return _cap_by(conversations, cap, language_of, seed=seed, source=source, what="language")


def sample_source(conversations: Sequence[dict], spec: SourceSpec, *, seed: int,
                  default_weight: float = 1.0) -> tuple[list[dict], dict[str, Any]]:
    """The conversations this source contributes, and how many there were at each step."""
    pool = list(conversations)
    if spec.per_language_cap is not None:
        pool = cap_languages(pool, spec.per_language_cap, seed=seed, source=spec.name)
    if spec.per_category_cap is not None:
        pool = cap_categories(pool, spec.per_category_cap, seed=seed, source=spec.name)
    rng = random.Random(f"{seed}:{spec.name}")
    n = len(pool)
    if spec.max_samples is not None:
        selected = [pool[i] for i in _sample_indices(n, spec.max_samples, rng)]
        weight = None
    else:
        weight = default_weight if spec.weight is None else float(spec.weight)
        whole = math.floor(weight)
        extra = round((weight - whole) * n)
        selected = pool * whole + [pool[i] for i in _sample_indices(n, extra, rng)]
    categories = Counter(metric_key(category_of(c)) for c in selected)
    languages = Counter(metric_key(language_of(c)) for c in selected)
    info = {"available": len(conversations), "after_category_cap": n, "selected": len(selected),
            "weight": weight, "max_samples": spec.max_samples, "per_category_cap": spec.per_category_cap,
            "per_language_cap": spec.per_language_cap, "categories": dict(sorted(categories.items())),
            "languages": dict(sorted(languages.items()))}
    return selected, info


def build_mix(specs: Sequence[SourceSpec], builtin: Mapping[str, Sequence[dict]], *, seed: int,
              default_weights: Mapping[str, float] | None = None) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(mixed conversations, quarantined records, realised mix).

    ``builtin`` holds the conversations of the built-in sources by name; every other source is read
    from its ``path``. Each conversation gets ``source`` = its source's name.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"sft.mix_seed must be an integer, got {seed!r}")
    default_weights = default_weights or {}
    mixed: list[dict] = []
    quarantine: list[dict] = []
    sources: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if spec.name in BUILTIN_SOURCES:
            if spec.name not in builtin:
                raise ValueError(f"built-in source {spec.name!r} was not provided to build_mix")
            conversations = [{"metadata": {}, **c, "source": spec.name} for c in builtin[spec.name]]
            read = {"read": len(conversations), "valid": len(conversations), "quarantined": {}}
        else:
            stats = ReadStats()
            conversations = list(read_conversations(spec.path, spec.format, source=spec.name,
                                                    category_field=spec.category_field, stats=stats,
                                                    quarantine=quarantine))
            read = stats.as_dict()
        selected, info = sample_source(conversations, spec, seed=seed,
                                       default_weight=default_weights.get(spec.name, 1.0))
        sources[spec.name] = {**read, **info}
        mixed += selected
    total = len(mixed)
    for info in sources.values():
        info["share"] = info["selected"] / total if total else 0.0
    by_category = Counter(metric_key(category_of(c)) for c in mixed)
    by_language = Counter(metric_key(language_of(c)) for c in mixed)
    realised = {"seed": seed, "conversations": total, "quarantined": len(quarantine), "sources": sources,
                "by_category": dict(sorted(by_category.items())), "by_language": dict(sorted(by_language.items()))}
    logger.info("sft mix (seed %d): %d conversations: %s", seed, total,
                ", ".join(f"{name} {info['selected']} ({info['share']:.1%})" for name, info in sources.items()))
    return mixed, quarantine, realised
