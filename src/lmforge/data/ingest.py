"""Ingest the configured raw sources into JSONL shards (``data/01_raw``).

Each source in ``parameters_data_processing.yml`` has a ``format`` and its options. Records keep a
stable id, their source name and metadata (path, license, size), so every later artifact traces
back to the file it came from.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.documents import Document
from lmforge.data.sources import python_stdlib_root, read_code_folder, shard_documents

logger = logging.getLogger(__name__)

FORMATS = ("code_folder",)


@dataclass
class SourceConfig:
    """One raw source."""

    # Name stored on every record and mixed into its id.
    name: str
    # Reader: "code_folder" (a folder of text/code files matched by globs).
    format: str = "code_folder"
    # Folder to read; None = the running interpreter's standard library.
    root: str | None = None
    # Globs relative to root.
    patterns: Sequence[str] = ("**/*.py",)
    # Globs relative to root to leave out.
    exclude: Sequence[str] = ()
    # License of the source, stored in each record's metadata.
    license: str = "unknown"
    # Read at most this many files (sorted order); None = all.
    max_files: int | None = None
    # Free-form metadata added to every record.
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in source {d.get('name', '?')!r}; valid: {sorted(known)}")
        if d.get("format", "code_folder") not in FORMATS:
            raise ValueError(f"source {d.get('name')!r}: unknown format {d.get('format')!r}; supported: {FORMATS}")
        return cls(**d)


def read_source(source: SourceConfig) -> Iterator[Document]:
    """Documents of one source, in a deterministic order."""
    root = source.root or str(python_stdlib_root())
    docs = read_code_folder(root, tuple(source.patterns), source=source.name, license=source.license,
                            exclude=tuple(source.exclude))
    if source.max_files is not None:
        docs = itertools.islice(docs, source.max_files)
    extra = {**source.metadata}
    if source.root is None:
        extra.setdefault("python_version", sys.version.split()[0])
    for doc in docs:
        if extra:
            doc.metadata.update(extra)
        yield doc


def ingest_sources(sources: Sequence[Mapping[str, Any]], shard_size: int) -> dict[str, list[dict]]:
    """All configured sources as shards ``{"<source>-00000": [record, ...]}``."""
    if not sources:
        raise ValueError("data_processing.sources is empty: configure at least one source")
    shards: dict[str, list[dict]] = {}
    for raw in sources:
        source = SourceConfig.from_dict(raw)
        for name, records in shard_documents(read_source(source), shard_size).items():
            shards[f"{source.name}-{name}"] = records
        logger.info("ingested source %s into %d shard(s)", source.name,
                    sum(1 for k in shards if k.startswith(f"{source.name}-")))
    return shards
