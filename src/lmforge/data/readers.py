"""Readers for record-oriented sources: JSONL (plain, .gz, .zst), Parquet and `save_to_disk` datasets.

Every reader streams: JSONL line by line, Parquet and Arrow in record batches, so memory is bounded
by one batch (or one line), never by the file. `path` may be a file, a folder or a glob; files are
visited in sorted order. A record's id is the value of `id_field` when one is configured and
present, else the first 16 hex chars of sha256("{source}:{file}:{line or row}"), where `file` is
relative to the folder (or glob prefix) given, so ids do not depend on where the data lives.

Each format can also be read from a point inside a file, so that workers can share a file: JSONL from a
byte offset and line number (`scan_jsonl` finds them by a byte scan, nothing decoded; a compressed file only
from its start), Parquet and Arrow from a row (`parquet_rows` from the footer, `arrow_rows` from the
batches' lengths); `lmforge.data.ingest_units` plans the units.

Bad input: the rule is "a record-level fault is quarantined, a file-level fault is an error".

- A JSONL line that is not valid JSON, or not a JSON object, is yielded with the raw line as its
  text, flagged `metadata["malformed_json"] = "<file>:<line>: <parser message>"` (reason
  `malformed_json`).
- A record without the text field, or whose text is null or not a string, is yielded flagged
  `metadata["missing_text"]` naming the file, line/row and the fields present (reason `missing_text`).
- A JSONL line with invalid UTF-8 is decoded with replacement characters and flagged
  `metadata["encoding_error"] = "<file>:<line>"` (reason `encoding_error`).
- Empty text is kept as read; the cleaning step quarantines it (reason `empty`). Blank lines in a
  JSONL file are separators, not records: they are skipped and counted in a debug log.
- A huge record is read like any other; cleaning quarantines it (reason `too_long`) before any
  per-character work.
- A Parquet/Arrow file without the text (or id) column, with a text column that is not a string,
  or that is not readable at all raises `SourceError` naming the file, the column and the columns
  present: a wrong schema is a configuration fault, and quarantining every row would hide it.
- A `path` that matches no file raises `SourceError`.

Long because the three formats share one set of bad-input rules (above) and one record-to-document path
(`record_to_document`): split by format, each module would restate the rules and their flags, and a change to
one rule (what is quarantined with which reason) would have to be made three times.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import glob
import gzip
import hashlib
import io
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from lmforge.data.documents import Document
from lmforge.data.sources import match_glob

logger = logging.getLogger(__name__)

JSONL_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.json", "*.json.gz", "*.json.zst")
"""File names read from a JSONL folder (a glob `path` is used as given)."""
PARQUET_PATTERNS = ("*.parquet",)
"""File names read from a Parquet folder."""


class SourceError(ValueError):
    """A source that cannot be read as configured; the message names the file (and line)."""


def make_record_id(source: str, file: str, position: int) -> str:
    """Return a stable id: the first 16 hex chars of sha256("{source}:{file}:{position}")."""
    return hashlib.sha256(f"{source}:{file}:{position}".encode()).hexdigest()[:16]


def resolve_files(path: str, patterns: Sequence[str]) -> list[tuple[Path, str]]:
    """Return sorted (file, name relative to the folder or glob prefix) for a file, folder or glob.

    A folder is searched recursively for file names matching one of patterns.
    """
    if glob.has_magic(path):
        parts = Path(path).parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        base = Path(*parts[:fixed]) if fixed else Path(".")
        found = [Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file()]
    elif Path(path).is_dir():
        base = Path(path)
        found = [p for p in base.rglob("*") if p.is_file() and any(match_glob(p.name, pat) for pat in patterns)]
    elif Path(path).is_file():
        base = Path(path).parent
        found = [Path(path)]
    else:
        raise SourceError(f"source path does not exist: {path}")
    if not found:
        raise SourceError(f"no files match source path {path} (looked for {', '.join(patterns)})")
    return sorted((p, p.relative_to(base).as_posix()) for p in found)


@contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
    """Open a file for reading bytes, decompressing .gz (gzip) and .zst (zstandard) by extension."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            yield f
    elif path.suffix == ".zst":
        try:
            import zstandard
        except ImportError as exc:
            raise SourceError(f"{path}: reading .zst files needs the `zstandard` package "
                              "(pip install zstandard)") from exc
        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as f:
            yield io.BufferedReader(f)
    else:
        with open(path, "rb") as f:
            yield f


def to_jsonable(value: Any) -> Any:
    """Return value as JSON-serialisable data (dates as ISO strings, bytes as base64, others str)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def record_to_document(
    record: Mapping[str, Any],
    *,
    source: str,
    file: str,
    position: tuple[str, int],
    text_field: str,
    id_field: str | None,
    metadata: Mapping[str, Any],
) -> Document:
    """Turn one parsed record into a Document; a missing/non-string text is flagged, not raised."""
    kind, number = position
    doc_id = make_record_id(source, file, number)
    if id_field is not None and record.get(id_field) is not None:
        doc_id = str(record[id_field])
    meta: dict[str, Any] = {"path": file, kind: number, **metadata}
    for key, value in record.items():
        if key not in (text_field, id_field):
            meta.setdefault(key, to_jsonable(value))
    text = record.get(text_field)
    if not isinstance(text, str):
        what = "is missing" if text_field not in record else (
            "is null" if text is None else f"is a {type(text).__name__}, not a string")
        meta["missing_text"] = f"{file}:{kind} {number}: field {text_field!r} {what}; fields: {sorted(record)}"
        text = ""
    return Document(id=doc_id, text=text, source=source, metadata=meta)


def _parse_json(line: bytes) -> Any:
    """Parse one JSON document (orjson when installed: ~5x faster on huge lines)."""
    try:
        import orjson
    except ImportError:
        return json.loads(line)
    return orjson.loads(line)


def read_jsonl(
    path: str,
    *,
    source: str,
    text_field: str = "text",
    id_field: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[Document]:
    """Yield one Document per JSON line of every file in path (file, folder or glob; .gz/.zst ok)."""
    for file_path, name in resolve_files(path, JSONL_PATTERNS):
        yield from read_jsonl_file(file_path, name, source=source, text_field=text_field, id_field=id_field,
                                   metadata=metadata)


def is_compressed(path: Path) -> bool:
    """Whether a JSONL file is compressed (.gz/.zst): it cannot be entered at a byte offset."""
    return path.suffix in (".gz", ".zst")


def read_jsonl_file(
    file_path: Path,
    name: str,
    *,
    source: str,
    text_field: str = "text",
    id_field: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    offset: int = 0,
    first_line: int = 1,
    limit: int | None = None,
) -> Iterator[Document]:
    """Yield the Documents of one JSONL file: from byte `offset` (line `first_line`), at most `limit` records.

    `offset`/`first_line` come from `scan_jsonl` (a plain file only: a compressed one is read from its start).
    """
    metadata = dict(metadata or {})
    blank = records = 0
    line_no = first_line - 1
    try:
        with open_binary(file_path) as f:
            if offset:
                f.seek(offset)
            for line_no, raw in enumerate(f, start=first_line):
                if limit is not None and records >= limit:
                    break
                if not raw.strip():
                    blank += 1
                    continue
                records += 1
                position = ("line", line_no)
                flags: dict[str, Any] = {}
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raw = raw.decode("utf-8", errors="replace").encode("utf-8")
                    flags["encoding_error"] = f"{name}:{line_no}: {exc.reason} at byte {exc.start}"
                try:
                    record = _parse_json(raw)
                    if not isinstance(record, dict):
                        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                except ValueError as exc:  # json.JSONDecodeError and orjson.JSONDecodeError subclass it
                    meta = {"path": name, "line": line_no, **metadata, **flags,
                            "malformed_json": f"{name}:{line_no}: {exc}"}
                    text = raw.decode("utf-8").rstrip("\r\n")  # quarantined as read, for audit
                    yield Document(id=make_record_id(source, name, line_no), text=text, source=source,
                                   metadata=meta)
                    continue
                doc = record_to_document(record, source=source, file=name, position=position,
                                         text_field=text_field, id_field=id_field, metadata=metadata)
                doc.metadata.update(flags)
                yield doc
    except (OSError, EOFError) as exc:  # truncated/corrupt .gz or .zst; a file gone or replaced mid-run
        raise _unreadable(file_path, line_no, first_line, exc) from exc
    if blank:
        logger.debug("%s: skipped %d blank line(s)", file_path, blank)


def _unreadable(file_path: Path, line_no: int, first_line: int, exc: BaseException) -> SourceError:
    if line_no == first_line - 1 and isinstance(exc, OSError) and exc.errno is not None:
        return SourceError(f"{file_path}: cannot be read ({exc.strerror}): it was there when the source was "
                           f"listed; restore it, or take it out of the source, and rerun")
    return SourceError(f"{file_path}: unreadable after line {line_no}: {exc}")


def scan_jsonl(file_path: Path, first_index: int, step: int, limit: int | None = None
               ) -> tuple[int, list[tuple[int, int, int]]]:
    """Find where records start in a plain JSONL file, without decoding or parsing it (a byte scan).

    The file's records are numbered from `first_index` on; returns (records in the file, at most
    `limit`, and [(record number, byte offset, line number)] of every record whose number is a multiple
    of `step`, plus its first record), so a reader can enter the file at a record (`read_jsonl_file`).
    """
    starts: list[tuple[int, int, int]] = []
    index = first_index
    offset = line_no = 0
    try:
        with open(file_path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if raw.strip():
                    if limit is not None and index - first_index >= limit:
                        break
                    if index % step == 0 or index == first_index:
                        starts.append((index, offset, line_no))
                    index += 1
                offset += len(raw)
    except OSError as exc:
        raise _unreadable(file_path, line_no, 1, exc) from exc
    return index - first_index, starts


def _check_schema(file_path: Path, names: Sequence[str], types: Mapping[str, Any], text_field: str,
                  id_field: str | None) -> None:
    """Raise SourceError naming the file, the missing/mistyped column and the columns present."""
    import pyarrow as pa

    for column in (text_field, id_field):
        if column is not None and column not in names:
            raise SourceError(f"{file_path}: column {column!r} not found; columns present: {list(names)}")
    text_type = types[text_field]
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
            or pa.types.is_string_view(text_type) or pa.types.is_null(text_type)):
        raise SourceError(f"{file_path}: text column {text_field!r} has type {text_type}, expected a string; "
                          f"columns present: {list(names)}")


def _iter_batch_documents(batches: Iterator[Any], *, file_path: Path, name: str, source: str,
                          text_field: str, id_field: str | None, metadata: Mapping[str, Any],
                          first_row: int = 0, start: int = 0, stop: int | None = None) -> Iterator[Document]:
    """Yield Documents of rows [start, stop) from Arrow record batches whose first row is `first_row`,
    numbering rows from 0 across the file (batches before `start` are skipped undecoded)."""
    import pyarrow as pa

    row = first_row
    try:
        for batch in batches:
            end = row + batch.num_rows
            if end <= start:
                row = end
                continue
            if row < start:
                batch = batch.slice(start - row)
                row = start
            if stop is not None and end > stop:
                batch = batch.slice(0, max(stop - row, 0))
            for record in batch.to_pylist():
                yield record_to_document(record, source=source, file=name, position=("row", row),
                                         text_field=text_field, id_field=id_field, metadata=metadata)
                row += 1
            if stop is not None and row >= stop:
                return
    except (pa.ArrowException, OSError) as exc:  # corrupt pages, truncated streams
        raise SourceError(f"{file_path}: unreadable after row {row}: {exc}") from exc


def open_parquet(file_path: Path, text_field: str = "text", id_field: str | None = None) -> Any:
    """The `pyarrow.parquet.ParquetFile`, its schema checked (SourceError naming the file otherwise)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file_path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{file_path}: not a readable Parquet file: {exc}") from exc
    schema = parquet.schema_arrow
    _check_schema(file_path, schema.names, {f.name: f.type for f in schema}, text_field, id_field)
    return parquet


def read_parquet(
    path: str,
    *,
    source: str,
    text_field: str = "text",
    id_field: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    batch_size: int = 1024,
) -> Iterator[Document]:
    """Yield one Document per row of every Parquet file in path, reading batch_size rows at a time."""
    for file_path, name in resolve_files(path, PARQUET_PATTERNS):
        yield from read_parquet_file(file_path, name, source=source, text_field=text_field, id_field=id_field,
                                     metadata=metadata, batch_size=batch_size)


def read_parquet_file(
    file_path: Path,
    name: str,
    *,
    source: str,
    text_field: str = "text",
    id_field: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    batch_size: int = 1024,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Document]:
    """Yield the Documents of rows [start, stop) of one Parquet file, reading only the row groups that hold them."""
    parquet = open_parquet(file_path, text_field, id_field)
    groups: list[int] = []
    first_row = row = 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if row + rows > start and (stop is None or row < stop):
            if not groups:
                first_row = row
            groups.append(group)
        row += rows
    yield from _iter_batch_documents(parquet.iter_batches(batch_size=batch_size, row_groups=groups),
                                     file_path=file_path, name=name, source=source, text_field=text_field,
                                     id_field=id_field, metadata=metadata or {}, first_row=first_row, start=start,
                                     stop=stop)


def parquet_rows(file_path: Path, text_field: str = "text", id_field: str | None = None) -> int:
    """Rows of a Parquet file, from its footer (nothing decoded); its schema checked."""
    return open_parquet(file_path, text_field, id_field).metadata.num_rows


def hf_disk_files(path: str, split: str | None = None) -> list[tuple[Path, str, str | None]]:
    """Return (arrow file, name relative to path, split) of a `save_to_disk` Dataset or DatasetDict.

    A DatasetDict folder holds `dataset_dict.json` ({"splits": [...]}) and one Dataset folder per
    split; a Dataset folder holds `state.json` (its `_data_files` list, in order) and `data-*.arrow`.
    """
    root = Path(path)
    if not root.is_dir():
        raise SourceError(f"hf_disk source path is not a folder: {path}")
    dict_file = root / "dataset_dict.json"
    if dict_file.is_file():
        splits = json.loads(dict_file.read_text())["splits"]
        if split is not None:
            if split not in splits:
                raise SourceError(f"{dict_file}: split {split!r} not found; splits: {splits}")
            splits = [split]
        return [(f, f"{s}/{n}", s) for s in splits for f, n, _ in hf_disk_files(str(root / s))]
    if split is not None:
        raise SourceError(f"{root}: split {split!r} given, but this is a single Dataset (no dataset_dict.json)")
    state = root / "state.json"
    if state.is_file():
        names = [entry["filename"] for entry in json.loads(state.read_text()).get("_data_files", [])]
    else:
        names = sorted(p.name for p in root.glob("data-*.arrow"))
    if not names:
        raise SourceError(f"{root}: no data-*.arrow files (expected a folder written by Dataset.save_to_disk)")
    return [(root / n, n, None) for n in names]


def read_hf_disk(
    path: str,
    *,
    source: str,
    text_field: str = "text",
    id_field: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    split: str | None = None,
) -> Iterator[Document]:
    """Yield one Document per row of a Hugging Face dataset saved with `save_to_disk`.

    The Arrow IPC stream files are read with pyarrow one record batch at a time, so the `datasets`
    package is not needed. A DatasetDict yields every split (or only `split`), stored in metadata.
    """
    for file_path, name, split_name in hf_disk_files(path, split):
        yield from read_arrow_file(file_path, name, source=source, text_field=text_field, id_field=id_field,
                                   metadata=metadata, split=split_name)


@contextmanager
def open_arrow_stream(file_path: Path, text_field: str = "text", id_field: str | None = None) -> Iterator[Any]:
    """A memory-mapped Arrow IPC stream reader of a `save_to_disk` file, its schema checked."""
    import pyarrow as pa

    with pa.memory_map(str(file_path)) as source_file:
        try:
            reader = pa.ipc.open_stream(source_file)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{file_path}: not a readable Arrow stream file: {exc}") from exc
        schema = reader.schema
        _check_schema(file_path, schema.names, {f.name: f.type for f in schema}, text_field, id_field)
        yield reader


def read_arrow_file(
    file_path: Path,
    name: str,
    *,
    source: str,
    text_field: str = "text",
    id_field: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    split: str | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Document]:
    """Yield the Documents of rows [start, stop) of one `save_to_disk` Arrow file (split stored in metadata)."""
    extra = {**(metadata or {}), **({"split": split} if split else {})}
    with open_arrow_stream(file_path, text_field, id_field) as reader:
        yield from _iter_batch_documents(iter(reader), file_path=file_path, name=name, source=source,
                                         text_field=text_field, id_field=id_field, metadata=extra, start=start,
                                         stop=stop)


def arrow_rows(file_path: Path, text_field: str = "text", id_field: str | None = None) -> int:
    """Rows of a `save_to_disk` Arrow file: the batches' lengths, memory-mapped (no column decoded)."""
    import pyarrow as pa

    with open_arrow_stream(file_path, text_field, id_field) as reader:
        rows = 0
        try:
            for batch in reader:
                rows += batch.num_rows
        except (pa.ArrowException, OSError) as exc:  # the message a reader gives for the same fault
            raise SourceError(f"{file_path}: unreadable after row {rows}: {exc}") from exc
        return rows
