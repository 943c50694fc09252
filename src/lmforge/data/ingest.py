"""Ingest the configured raw sources into JSONL shards (``data/01_raw``).

Each source in ``parameters_data_processing.yml`` has a ``format`` and its options. Records keep a
stable id, their source name and metadata (path, license, size, line/row), so every later artifact
traces back to the file it came from.

Formats: ``code_folder`` (one record per file under ``root``, see `lmforge.data.sources`), and the
record formats ``jsonl`` (also ``.gz``/``.zst``), ``parquet`` and ``hf_disk`` (a Hugging Face dataset
written by ``save_to_disk``), read from ``path`` (a file, a folder or a glob) by
`lmforge.data.readers`, whose docstring gives the bad-input rules (what is quarantined with which
reason, what is an error).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmforge.config import build_dataclass
from lmforge.data.documents import Document
from lmforge.data.readers import SourceError, read_hf_disk, read_jsonl, read_parquet
from lmforge.data.sources import python_stdlib_root, read_code_folder, shard_documents

logger = logging.getLogger(__name__)

FORMATS = ("code_folder", "jsonl", "parquet", "hf_disk")
RECORD_FORMATS = ("jsonl", "parquet", "hf_disk")
"""Formats with one record per line/row, read from `path` with `text_field`/`id_field`."""


@dataclass
class SourceConfig:
    """One raw source."""

    # Name stored on every record and mixed into its id.
    name: str
    # Reader: "code_folder" (a folder of text/code files matched by globs), "jsonl" (JSON lines,
    # also .gz/.zst), "parquet", or "hf_disk" (a Hugging Face dataset written by save_to_disk).
    format: str = "code_folder"
    # code_folder: folder to read; None = the running interpreter's standard library.
    root: str | None = None
    # code_folder: globs relative to root; None = ("**/*.py",).
    patterns: Sequence[str] | None = None
    # code_folder: globs relative to root to leave out.
    exclude: Sequence[str] = ()
    # License of the source, stored in each record's metadata.
    license: str = "unknown"
    # code_folder: read at most this many files (sorted order); None = all.
    max_files: int | None = None
    # Free-form metadata added to every record.
    metadata: dict[str, Any] = field(default_factory=dict)
    # Record formats: a file, a folder (searched recursively) or a glob (`**` allowed).
    path: str | None = None
    # Record formats: the field/column holding the text.
    text_field: str = "text"
    # Record formats: the field/column holding the record id; None = sha256(source:file:line/row).
    id_field: str | None = None
    # Record formats: read at most this many records (in file order); None = all.
    max_records: int | None = None
    # parquet: rows per read batch (memory is bounded by one batch).
    batch_size: int = 1024
    # hf_disk: the split of a DatasetDict to read; None = every split (stored in metadata["split"]).
    split: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceConfig:
        if d.get("format", "code_folder") not in FORMATS:
            raise ValueError(f"source {d.get('name')!r}: unknown format {d.get('format')!r}; supported: {FORMATS}")
        source = build_dataclass(cls, d, path=f"data_processing.sources[{d.get('name', '?')}]")
        if source.format in RECORD_FORMATS and not source.path:
            raise ValueError(f"source {source.name!r}: format {source.format!r} needs a `path` "
                             "(a file, a folder or a glob)")
        if source.batch_size < 1:
            raise ValueError(f"source {source.name!r}: batch_size must be >= 1, got {source.batch_size}")
        return source


def read_source(source: SourceConfig) -> Iterator[Document]:
    """Documents of one source, in a deterministic order (raises SourceError on unreadable input)."""
    if source.format in RECORD_FORMATS:
        yield from _read_records(source)
        return
    root = source.root or str(python_stdlib_root())
    patterns = tuple(source.patterns) if source.patterns is not None else ("**/*.py",)
    docs = read_code_folder(root, patterns, source=source.name, license=source.license,
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


def _read_records(source: SourceConfig) -> Iterator[Document]:
    """Documents of a jsonl/parquet/hf_disk source."""
    assert source.path is not None  # checked by from_dict
    common = {"source": source.name, "text_field": source.text_field, "id_field": source.id_field,
              "metadata": {"license": source.license, **source.metadata}}
    if source.format == "jsonl":
        docs = read_jsonl(source.path, **common)
    elif source.format == "parquet":
        docs = read_parquet(source.path, batch_size=source.batch_size, **common)
    else:
        docs = read_hf_disk(source.path, split=source.split, **common)
    if source.max_records is not None:
        docs = itertools.islice(docs, source.max_records)
    yield from docs


def ingest_sources(sources: Sequence[Mapping[str, Any]], shard_size: int) -> dict[str, list[dict]]:
    """All configured sources as shards ``{"<source>-00000": [record, ...]}``."""
    if not sources:
        raise ValueError("data_processing.sources is empty: configure at least one source")
    shards: dict[str, list[dict]] = {}
    for raw in sources:
        source = SourceConfig.from_dict(raw)
        try:
            source_shards = shard_documents(read_source(source), shard_size)
        except SourceError as exc:
            raise SourceError(f"source {source.name!r}: {exc}") from exc
        for name, records in source_shards.items():
            shards[f"{source.name}-{name}"] = records
        logger.info("ingested source %s into %d shard(s)", source.name,
                    sum(1 for k in shards if k.startswith(f"{source.name}-")))
    return shards
