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

import functools
import itertools
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import build_dataclass
from lmforge.data.documents import Document
from lmforge.data.readers import SourceError, read_hf_disk, read_jsonl, read_parquet
from lmforge.data.sources import (
    default_stdlib_excludes,
    list_files,
    python_stdlib_root,
    read_file_document,
    shard_documents,
)

logger = logging.getLogger(__name__)

FORMATS = ("code_folder", "jsonl", "parquet", "hf_disk")
RECORD_FORMATS = ("jsonl", "parquet", "hf_disk")
"""Formats with one record per line/row, read from `path` with `text_field`/`id_field`."""

MetadataValue = str | int | float | bool | None
"""A value of a source's `metadata` (stored in every record's JSON metadata)."""


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
    # Metadata added to every record (JSON scalars: a tag, a version, a date).
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
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

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"source {self.name!r}: unknown format {self.format!r}; supported: {FORMATS}")
        if self.format in RECORD_FORMATS and not self.path:
            raise ValueError(f"source {self.name!r}: format {self.format!r} needs a `path` "
                             "(a file, a folder or a glob)")
        if self.batch_size < 1:
            raise ValueError(f"source {self.name!r}: batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceConfig:
        """Build a source from its YAML mapping, naming unknown keys by their path."""
        return build_dataclass(cls, d, path=f"data_processing.sources[{d.get('name', '?')}]")


def python_stdlib_source() -> SourceConfig:
    """The default raw source: the running interpreter's standard library, without tests and caches."""
    return SourceConfig(name="python-stdlib", format="code_folder", root=None, patterns=["**/*.py"],
                        exclude=list(default_stdlib_excludes), license="PSF-2.0", max_files=None)


def read_source(source: SourceConfig) -> Iterator[Document]:
    """Documents of one source, in a deterministic order (raises SourceError on unreadable input)."""
    if source.format in RECORD_FORMATS:
        yield from _read_records(source)
        return
    yield from read_code_files(source, *list_code_files(source))


def list_code_files(source: SourceConfig) -> tuple[str, list[str]]:
    """Return (root, sorted relative paths, capped at max_files) of a code_folder source."""
    root = source.root or str(python_stdlib_root())
    if not Path(root).is_dir():
        raise FileNotFoundError(f"source {source.name!r}: folder does not exist: {root} (fix `root`)")
    patterns = tuple(source.patterns) if source.patterns is not None else ("**/*.py",)
    paths = list_files(root, patterns, tuple(source.exclude))
    if source.max_files is not None:
        paths = paths[: source.max_files]
    logger.info("source %s: %d files under %s", source.name, len(paths), root)
    return root, paths


def read_code_files(source: SourceConfig, root: str, paths: Sequence[str]) -> Iterator[Document]:
    """Documents of some files of a code_folder source (see `lmforge.data.sources.read_file_document`)."""
    extra = {**source.metadata}
    if source.root is None:
        extra.setdefault("python_version", sys.version.split()[0])
    for relative_path in paths:
        doc = read_file_document(Path(root), relative_path, source=source.name, license=source.license)
        if extra:
            doc.metadata.update(extra)
        yield doc


def load_code_shard(source: SourceConfig, root: str, paths: Sequence[str]) -> list[dict]:
    """Records of one lazy code_folder shard: what `ingest_sources(..., lazy=True)` hands out (picklable)."""
    return [doc.to_dict() for doc in read_code_files(source, root, paths)]


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


def ingest_sources(
    sources: Sequence[SourceConfig | Mapping[str, Any]], shard_size: int, lazy: bool = False
) -> dict[str, list[dict] | Callable[[], list[dict]]]:
    """All configured sources as shards ``{"<source>-00000": [record, ...]}``.

    With lazy=True a code_folder source is only listed here: each shard is a picklable load
    callable that reads its own files (Kedro's PartitionedDataset saves such a mapping one shard
    at a time, and `process_corpus` workers can read shards in parallel). Record formats (jsonl,
    parquet, hf_disk) are read here in both modes: they are sharded by a single sequential pass.
    """
    if not sources:
        raise ValueError("data_processing.sources is empty: configure at least one source")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards: dict[str, list[dict] | Callable[[], list[dict]]] = {}
    for raw in sources:
        source = raw if isinstance(raw, SourceConfig) else SourceConfig.from_dict(raw)
        try:
            if lazy and source.format == "code_folder":
                root, paths = list_code_files(source)
                source_shards = {
                    f"shard-{k // shard_size:05d}": functools.partial(load_code_shard, source, root,
                                                                      paths[k : k + shard_size])
                    for k in range(0, len(paths), shard_size)
                }
            else:
                source_shards = shard_documents(read_source(source), shard_size)
        except SourceError as exc:
            raise SourceError(f"source {source.name!r}: {exc}") from exc
        for name, records in source_shards.items():
            shards[f"{source.name}-{name}"] = records
        logger.info("ingested source %s into %d shard(s)%s", source.name, len(source_shards),
                    " (lazy)" if lazy and source.format == "code_folder" else "")
    return shards
