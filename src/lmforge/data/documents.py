"""The one record type that flows through every data step.

A `Document` is a piece of text with a stable id, the name of the source it came
from and free-form metadata (path, license, flags set by readers). On disk each
record is one JSON line `{"id", "text", "source", "metadata"}`; `to_dict` and
`from_dict` are the only (de)serialisation points, so every step agrees on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

REQUIRED_FIELDS = ("id", "text", "source")


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
