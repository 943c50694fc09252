"""The one record type that flows through every data step.

A `Document` is a piece of text with a stable id, the name of the source it came
from and free-form metadata (path, license, flags set by readers). On disk each
record is one JSON line `{"id", "text", "source", "metadata"}`; `to_dict` and
`from_dict` are the only (de)serialisation points, so every step agrees on it.

A set of records is handed between steps as shards (what Kedro's PartitionedDataset gives):
a mapping name -> records or name -> load callable; `iter_records` reads them one shard at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

REQUIRED_FIELDS = ("id", "text", "source")

CODE_GROUP = "code"
"""The language group of source code, whatever the language of its comments."""

ShardSource = Callable[[], list[dict]] | list[dict]
"""A shard of records: its records, or a callable that loads them (Kedro PartitionedDataset)."""


@dataclass
class Document:
    """One text record (a source file, a web page, a conversation...)."""

    id: str
    """Stable identifier; readers derive it from the source and the record's location."""
    text: str
    """The content itself."""
    source: str
    """Name of the corpus the record came from, e.g. "python-stdlib"."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form, JSON-serialisable facts about the record (path, license, flags)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the on-disk JSON-line form of this document."""
        return {
            "id": self.id,
            "text": self.text,
            "source": self.source,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Document:
        """Build a document from its dict form.

        Raises ValueError naming the missing field(s), TypeError naming a field of the wrong type.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"document record must be a mapping, got {type(d).__name__}")
        missing = [name for name in REQUIRED_FIELDS if name not in d]
        if missing:
            raise ValueError(f"document record is missing field(s): {', '.join(missing)}")
        for name in REQUIRED_FIELDS:
            if not isinstance(d[name], str):
                raise TypeError(f"document field {name!r} must be a str, got {type(d[name]).__name__}")
        metadata = d.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise TypeError(f"document field 'metadata' must be a mapping, got {type(metadata).__name__}")
        return cls(id=d["id"], text=d["text"], source=d["source"], metadata=dict(metadata))


def language_group(metadata: Mapping[str, Any]) -> str:
    """The group a document is counted under in every per-language metric: en, zh, ja, ... or "code".

    ``metadata["language_group"]`` when a reader declared it (the source's language, known before any
    step runs, so that in = kept + dropped holds per group); else "code" for documents of kind code;
    else the detected ``metadata["language"]``; else "unknown".
    """
    declared = metadata.get("language_group")
    if declared:
        return str(declared)
    if metadata.get("kind") == CODE_GROUP:
        return CODE_GROUP
    return str(metadata.get("language") or "unknown")


def load_shard(shard: ShardSource) -> list[dict]:
    """Return the records of a shard, calling its loader if it is lazy."""
    return shard() if callable(shard) else shard


def iter_records(shards: Mapping[str, ShardSource]) -> Iterator[dict]:
    """Yield every record of every shard, shards in name order, loading one at a time."""
    for name in sorted(shards):
        yield from load_shard(shards[name])
