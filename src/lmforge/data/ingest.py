"""Ingest the configured raw sources into JSONL shards (``data/01_raw``).

Each source in ``parameters_data_processing.yml`` has a ``format`` and its options. Records keep a
stable id, their source name and metadata (path, license, size, line/row), so every later artifact
traces back to the file it came from.

Formats, dispatched in one place (`read_source` / `FILE_READERS`):

- file formats, one or more records per file under ``root`` (matched by ``patterns``/``exclude``, capped
  by ``max_files``/``max_bytes``), read lazily shard by shard: ``code_folder`` (one record per file, see
  `lmforge.data.sources`), ``man_pages`` (troff rendered by groff, `lmforge.data.man_pages`),
  ``libreoffice_help`` (one record per help page, `lmforge.data.libreoffice_help`);
- ``pythonbible``: one record per chapter (or book) of a pythonbible module at ``path`` (`lmforge.data.bible`);
- record formats ``jsonl`` (also ``.gz``/``.zst`` and one-object-per-line ``.json``), ``parquet`` and
  ``hf_disk`` (a Hugging Face dataset written by ``save_to_disk``), read from ``path`` (a file, a folder
  or a glob) by `lmforge.data.readers`, whose docstring gives the bad-input rules (what is quarantined
  with which reason, what is an error).

A source with a ``package`` reads ``root``/``path`` inside that package's folder of the source cache
(``data_processing.source_cache``, filled by ``make corpus``, see `lmforge.data.packages`); a package
missing from the cache stops the stage with one line naming it and ``make corpus``. Every record
carries ``metadata["license"]``, and the source's ``language_group`` and ``kind`` when it declares them.

Where the reading happens: in the data_processing stage (`lmforge.data.ingest_units.ingest_sources(..., executor=...)`) on the
workers of ``data_processing.executor``, every format: this process only plans (lists files, byte-scans
JSONL, reads Parquet footers and Arrow batch lengths) and the workers read the units into a spool
(`lmforge.data.ingest_units`, which says how each format is cut). Before, the record formats and
pythonbible were read here by one sequential pass, and Kedro's save of ``raw_documents`` called the file
formats' lazy loaders here too, one shard after another. Measured on the default corpus (11 sources,
15 shards, 19.8 MB written; `bench/ingest_stage.py`: node + the catalog's save, ``local`` executor with 2
workers; bench/results/ingest_stage.json): this process's CPU 14-18 s -> 3.3-6.6 s, its peak RSS
325 -> 180 MB, the workers' (and groff's) CPU 27-33 -> 40-50 s (the work moved there), the written shards
byte-identical (same sha256) in every run. Wall time on this 2-core machine shared with other jobs (load
average 5-15) says little: 69-151 s before, 55-79 s after (file shards split into units of 100 files);
run back to back at load ~8, 79.4 s before and 79.1 s after: with both cores saturated the same CPU work
cannot end sooner. What changed is the shape: the parent's serial pass is gone, and with idle cores the
stage is bounded by its largest unit (100 man pages, ~3.5 s of groff CPU) instead of by one process.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import build_dataclass
from lmforge.data.documents import Document
from lmforge.data.packages import DEFAULT_SOURCE_CACHE, PackageConfig, require_package
from lmforge.data.readers import SourceError, read_hf_disk, read_jsonl, read_parquet
from lmforge.data.sources import (
    default_stdlib_excludes,
    list_files,
    make_document_id,
    python_stdlib_root,
    read_file_document,
)

logger = logging.getLogger(__name__)

FILE_FORMATS = ("code_folder", "man_pages", "libreoffice_help")
"""Formats read file by file from `root` (lazily, one shard of files at a time)."""
RECORD_FORMATS = ("jsonl", "parquet", "hf_disk")
"""Formats with one record per line/row, read from `path` with `text_field`/`id_field`."""
FORMATS = (*FILE_FORMATS, "pythonbible", *RECORD_FORMATS)
LANGUAGE_GROUPS = ("en", "zh", "ja", "code")
"""The groups of the default corpus; a source may declare any ISO 639-1/3 code (lowercase) or "code"."""
KINDS = ("text", "code")

MetadataValue = str | int | float | bool | None
"""A value of a source's `metadata` (stored in every record's JSON metadata)."""


@dataclass
class SourceConfig:
    """One raw source."""

    # Name stored on every record and mixed into its id.
    name: str
    # Reader: "code_folder" (a folder of text/code files matched by globs), "man_pages" (troff pages
    # rendered by groff), "libreoffice_help" (LibreOffice help HTML, one record per page), "pythonbible"
    # (a pythonbible module, one record per chapter), "jsonl" (JSON lines, also .gz/.zst and one-line
    # .json files), "parquet", or "hf_disk" (a Hugging Face dataset written by save_to_disk).
    format: str = "code_folder"
    # The package (in the source cache) this source reads: {client: apt|npm|pip, name, version};
    # `root` and `path` are then relative to the package's folder. None = a path on this machine.
    package: PackageConfig | None = None
    # File formats: folder to read (inside the package when one is declared); None = the running
    # interpreter's standard library (code_folder) or the package's folder.
    root: str | None = None
    # File formats: globs relative to root; None = ("**/*.py",).
    patterns: Sequence[str] | None = None
    # File formats: globs relative to root to leave out.
    exclude: Sequence[str] = ()
    # License of the source, stored in each record's metadata.
    license: str = "unknown"
    # Language group of every record (en | zh | ja | code, or another ISO 639 code), stored in metadata["language_group"]: the
    # group every per-language count uses. None = decided later (code for code, else the detected language).
    language_group: str | None = None
    # Kind of every record (text | code), stored in metadata["kind"]; None = cleaning decides
    # (data_processing.cleaning.source_kinds, then the file extension).
    kind: str | None = None
    # File formats: read at most this many files; None = all. Without max_bytes the first files in
    # sorted order, with it a deterministic sample (see max_bytes).
    max_files: int | None = None
    # File formats: read files up to this many bytes (as stored, e.g. compressed man pages), chosen in a
    # deterministic pseudo-random order (sha256 of source name and path) so the sample spreads over the
    # whole tree; the chosen files are read in sorted order. None = no byte cap.
    max_bytes: int | None = None
    # libreoffice_help: keep only paragraphs with Han/kana (the translated ones: the zh/ja trees fall
    # back to English for untranslated paragraphs).
    translated_only: bool = False
    # pythonbible: one record per "chapter" or per "book".
    unit: str = "chapter"
    # Metadata added to every record (JSON scalars: a tag, a version, a date).
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    # Record formats and pythonbible: a file, a folder (searched recursively) or a glob (`**` allowed),
    # inside the package when one is declared.
    path: str | None = None
    # Record formats: the field/column holding the text.
    text_field: str = "text"
    # Record formats: the field/column holding the record id; None = sha256(source:file:line/row).
    id_field: str | None = None
    # Record formats and pythonbible: read at most this many records (in file order); None = all.
    max_records: int | None = None
    # parquet: rows per read batch (memory is bounded by one batch).
    batch_size: int = 1024
    # hf_disk: the split of a DatasetDict to read; None = every split (stored in metadata["split"]).
    split: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"source {self.name!r}: unknown format {self.format!r}; supported: {FORMATS}")
        if (self.format in RECORD_FORMATS or self.format == "pythonbible") and not self.path:
            raise ValueError(f"source {self.name!r}: format {self.format!r} needs a `path` "
                             "(a file, a folder or a glob)")
        if self.format in ("man_pages", "libreoffice_help") and self.root is None and self.package is None:
            raise ValueError(f"source {self.name!r}: format {self.format!r} needs a `root` or a `package`")
        group = self.language_group
        if group is not None and not (group == "code" or (group.isascii() and group.isalpha() and group.islower()
                                                         and len(group) in (2, 3))):
            raise ValueError(f"source {self.name!r}: language_group must be an ISO 639 code (en, zh, ja, ...) "
                             f"or code, got {group!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"source {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.unit not in ("chapter", "book"):
            raise ValueError(f"source {self.name!r}: unit must be chapter or book, got {self.unit!r}")
        for name in ("max_files", "max_bytes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"source {self.name!r}: {name} must be >= 1 (or null), got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"source {self.name!r}: batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceConfig:
        """Build a source from its YAML mapping, naming unknown keys by their path."""
        return build_dataclass(cls, d, path=f"data_processing.sources[{d.get('name', '?')}]")


def python_stdlib_source(max_files: int | None = None, max_bytes: int | None = None) -> SourceConfig:
    """The stdlib source: the running interpreter's standard library, without tests and caches."""
    return SourceConfig(name="python-stdlib", format="code_folder", root=None, patterns=["**/*.py"],
                        exclude=list(default_stdlib_excludes), license="PSF-2.0", language_group="code",
                        kind="code", max_files=max_files, max_bytes=max_bytes)


def source_metadata(source: SourceConfig) -> dict[str, Any]:
    """What every record of the source carries: license, declared language group and kind, its metadata."""
    extra: dict[str, Any] = {"license": source.license}
    if source.language_group is not None:
        extra["language_group"] = source.language_group
    if source.kind is not None:
        extra["kind"] = source.kind
    if source.package is not None:
        extra["package"] = source.package.name
    return {**extra, **source.metadata}


def package_base(source: SourceConfig, source_cache: str | Path) -> Path | None:
    """The package's folder in the cache (a one-line error naming ``make corpus`` when missing), or None."""
    if source.package is None:
        return None
    return require_package(source_cache, source.package, source=source.name)


def read_source(source: SourceConfig, source_cache: str | Path = DEFAULT_SOURCE_CACHE) -> Iterator[Document]:
    """Documents of one source, in a deterministic order (raises SourceError on unreadable input)."""
    if source.format in FILE_FORMATS:
        root, paths = list_source_files(source, source_cache)
        yield from read_source_files(source, root, paths)
    elif source.format == "pythonbible":
        yield from read_bible(source, source_cache)
    else:
        yield from _read_records(source, source_cache)


def list_source_files(source: SourceConfig, source_cache: str | Path = DEFAULT_SOURCE_CACHE) -> tuple[str, list[str]]:
    """Return (root, relative paths) of a file-format source, sampled by max_files / max_bytes."""
    base = package_base(source, source_cache)
    if base is not None:
        root = str(base / (source.root or ""))
    else:
        root = source.root or str(python_stdlib_root())
    if not Path(root).is_dir():
        raise FileNotFoundError(f"source {source.name!r}: folder does not exist: {root} (fix `root`)")
    patterns = tuple(source.patterns) if source.patterns is not None else ("**/*.py",)
    paths = list_files(root, patterns, tuple(source.exclude))
    if source.format != "code_folder":  # a symlinked page or help file is another name for one already read
        paths = [p for p in paths if not (Path(root) / p).is_symlink()]
    paths = sample_files(source.name, root, paths, source.max_files, source.max_bytes)
    logger.info("source %s: %d files under %s", source.name, len(paths), root)
    return root, paths


def sample_files(name: str, root: str, paths: Sequence[str], max_files: int | None,
                 max_bytes: int | None) -> list[str]:
    """The files a source reads: all; the first max_files; or, with max_bytes, a deterministic sample.

    With max_bytes, files are taken in sha256("{name}:{path}") order while they fit in max_bytes (and
    max_files), so a few MB spread over the whole tree, the same on every machine; returned sorted.
    """
    if max_bytes is None:
        return list(paths[:max_files]) if max_files is not None else list(paths)
    order = sorted(paths, key=lambda p: hashlib.sha256(f"{name}:{p}".encode()).digest())
    chosen: list[str] = []
    total = 0
    for path in order:
        if max_files is not None and len(chosen) >= max_files:
            break
        size = (Path(root) / path).stat().st_size
        if total + size > max_bytes:
            continue
        chosen.append(path)
        total += size
    return sorted(chosen)


def read_source_files(source: SourceConfig, root: str, paths: Sequence[str]) -> Iterator[Document]:
    """Documents of some files of a file-format source, by the format's reader (`FILE_READERS`)."""
    reader = FILE_READERS[source.format]
    extra = source_metadata(source)
    for doc in reader(source, Path(root), paths):
        doc.metadata.update(extra)
        yield doc


def read_code_files(source: SourceConfig, root: str | Path, paths: Sequence[str]) -> Iterator[Document]:
    """code_folder: one document per file (see `lmforge.data.sources.read_file_document`)."""
    for relative_path in paths:
        doc = read_file_document(Path(root), relative_path, source=source.name, license=source.license)
        if source.root is None and source.package is None:
            doc.metadata.setdefault("python_version", sys.version.split()[0])
        yield doc


def read_man_page_files(source: SourceConfig, root: Path, paths: Sequence[str]) -> Iterator[Document]:
    """man_pages: one document per page rendered by groff; a page groff cannot render carries read_error."""
    from lmforge.data.man_pages import page_name, render_pages

    skipped = 0
    for relative_path, text, error in render_pages(root, paths):
        if text is None and error is None:
            skipped += 1  # a `.so` page: an alias of another page
            continue
        name, section = page_name(relative_path)
        metadata: dict[str, Any] = {"path": relative_path, "page": name, "section": section,
                                    "size_bytes": (root / relative_path).stat().st_size}
        if error is not None:
            metadata["read_error"] = f"{relative_path}: {error}"
        yield Document(id=make_document_id(source.name, relative_path), text=text or "", source=source.name,
                       metadata=metadata)
    if skipped:
        logger.info("source %s: %d .so page(s) (aliases of other pages) skipped", source.name, skipped)


def read_help_files(source: SourceConfig, root: Path, paths: Sequence[str]) -> Iterator[Document]:
    """libreoffice_help: one document per page, its paragraphs one per line (translated ones only if asked)."""
    from lmforge.data.libreoffice_help import read_help_page

    for relative_path in paths:
        metadata: dict[str, Any] = {"path": relative_path, "size_bytes": (root / relative_path).stat().st_size}
        text = ""
        try:
            text, total, untranslated = read_help_page(root / relative_path, translated_only=source.translated_only)
            metadata.update(paragraphs=total, paragraphs_untranslated=untranslated)
        except UnicodeDecodeError as exc:
            metadata["encoding_error"] = f"{relative_path}: {exc.reason} at byte {exc.start}"
        except OSError as exc:
            metadata["read_error"] = f"{relative_path}: {type(exc).__name__}: {exc.strerror or exc}"
        yield Document(id=make_document_id(source.name, relative_path), text=text, source=source.name,
                       metadata=metadata)


FILE_READERS: dict[str, Callable[[SourceConfig, Path, Sequence[str]], Iterator[Document]]] = {
    "code_folder": read_code_files,
    "man_pages": read_man_page_files,
    "libreoffice_help": read_help_files,
}
"""The reader of each file format: (source, root, relative paths) -> documents, one file after another."""


def load_file_shard(source: SourceConfig, root: str, paths: Sequence[str]) -> list[dict]:
    """Records of one lazy file-format shard: what `ingest_sources(..., lazy=True)` hands out (picklable)."""
    return [doc.to_dict() for doc in read_source_files(source, root, paths)]


load_code_shard = load_file_shard


def _resolved_path(source: SourceConfig, source_cache: str | Path) -> str:
    assert source.path is not None  # checked by __post_init__
    base = package_base(source, source_cache)
    return str(base / source.path) if base is not None else source.path


def read_bible(source: SourceConfig, source_cache: str | Path) -> Iterator[Document]:
    """pythonbible: one document per chapter (or book) of each module the path names."""
    from lmforge.data.bible import BibleFormatError, read_passages
    from lmforge.data.readers import resolve_files

    extra = source_metadata(source)
    count = 0
    for file_path, name in resolve_files(_resolved_path(source, source_cache), ("*.py",)):
        try:
            passages = list(read_passages(file_path, unit=source.unit))
        except (BibleFormatError, SyntaxError, UnicodeDecodeError) as exc:
            raise SourceError(str(exc) if isinstance(exc, BibleFormatError) else f"{file_path}: {exc}") from exc
        for p in passages:
            if source.max_records is not None and count >= source.max_records:
                return
            count += 1
            where = f"{p.book_title} {p.chapter}" if p.chapter is not None else p.book_title
            metadata = {"path": name, "book": p.book_title, "book_number": p.book, **extra}
            if p.chapter is not None:
                metadata["chapter"] = p.chapter
            yield Document(id=make_document_id(source.name, f"{name}#{where}"), text=p.text, source=source.name,
                           metadata=metadata)


def _read_records(source: SourceConfig, source_cache: str | Path) -> Iterator[Document]:
    """Documents of a jsonl/parquet/hf_disk source."""
    path = _resolved_path(source, source_cache)
    common = {"source": source.name, "text_field": source.text_field, "id_field": source.id_field,
              "metadata": source_metadata(source)}
    if source.format == "jsonl":
        docs = read_jsonl(path, **common)
    elif source.format == "parquet":
        docs = read_parquet(path, batch_size=source.batch_size, **common)
    else:
        docs = read_hf_disk(path, split=source.split, **common)
    if source.max_records is not None:
        docs = itertools.islice(docs, source.max_records)
    yield from docs
