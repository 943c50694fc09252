"""Sources cut into units that one worker reads alone, and the spool that turns units into raw shards.

Why: the data_processing stage's first node used to read every record source (jsonl, parquet, hf_disk,
pythonbible) in the parent, one record after another, and Kedro's save of ``raw_documents`` then called the
file formats' lazy loaders in the parent too (groff for man pages, HTML parsing for help pages). Now the
parent only plans, and the workers of the configured executor read:

- plan (parent, nothing decoded): a file-format source is listed and cut into shards of ``shard_size``
  files (as before), each read as units of at most `FILES_PER_UNIT` files (a shard is its units' records); a plain JSONL file is byte-scanned for where its records start (`scan_jsonl`); a
  Parquet file's rows come from its footer, a ``save_to_disk`` Arrow file's from its batches' lengths
  (memory-mapped); the scan runs ~210 MB/s where reading the same JSONL runs ~27 MB/s (1 KB records,
  one loaded core). A record source becomes `Unit`s of ``shard_size`` records, each a list of `Piece`s
  (a run of records of one file: a byte offset and line number, or a row range), aligned on the shards
  the sequential reader would make, so unit k holds shard k's records;
- compressed JSONL (``.gz``/``.zst``) cannot be entered at an offset (a shard k would decompress the file
  up to it: quadratic in the file), so such a file is one unit, read whole by one worker; a pythonbible
  source (one module parsed whole) is one unit too. The shards of such a source are cut by
  ``shard_size`` from the units' spooled records in order (`SpooledShard` ranges), so names, records, ids
  and order are those of the sequential reader whatever the units;
- read (workers, `map_in_order` on ``data_processing.executor``): each unit is read and written as JSON
  lines to its file in a `Spool` (an owned temp folder: a killed run's is removed by the next); a worker
  returns only its record count. The node returns `SpooledShard` loaders, which Kedro's
  PartitionedDataset calls one at a time when it saves ``data/01_raw``: the parent only re-reads the
  spooled lines (JSON parse + the dataset's dump: the same bytes as before).

Bad input keeps `lmforge.data.readers`'s rules: a record-level fault is a flagged record, a file-level fault
one SourceError naming the source and file (raised in the worker, re-raised by the parent in unit order;
a schema fault or a missing file is found by the plan, so with two bad files the plan's may come first).
``max_records`` is applied by the plan (and by the cut, after a compressed file of unknown length).

Measured on the default corpus (before/after, `bench/ingest_stage.py`): see `lmforge.data.ingest`'s docstring.

`ingest_sources`, the stage's entry point, is here: it builds on `lmforge.data.ingest` (the sources' config and
readers), which must not import this module back.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.documents import Document
from lmforge.data.executor import ExecutorConfig, map_in_order
from lmforge.data.ingest import (
    FILE_FORMATS,
    SourceConfig,
    list_source_files,
    package_base,
    read_bible,
    read_source,
    read_source_files,
    source_metadata,
)
from lmforge.data.packages import DEFAULT_SOURCE_CACHE
from lmforge.data.readers import (
    JSONL_PATTERNS,
    PARQUET_PATTERNS,
    SourceError,
    arrow_rows,
    hf_disk_files,
    is_compressed,
    parquet_rows,
    read_arrow_file,
    read_jsonl_file,
    read_parquet_file,
    resolve_files,
    scan_jsonl,
)
from lmforge.data.sources import shard_documents
from lmforge.data.spool import Spool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Piece:
    """A run of records of one file of a record source."""

    file: str
    """Absolute path of the file."""
    name: str
    """Its name relative to the source's path (in ids and metadata)."""
    start: int = 0
    """jsonl: byte offset of the first record's line; parquet/hf_disk: its row."""
    first_line: int = 1
    """jsonl: line number of that line."""
    count: int | None = None
    """Records in the run; None = to the end of the file (a compressed jsonl file)."""
    split: str | None = None
    """hf_disk: the split the file belongs to."""


@dataclass(frozen=True)
class Unit:
    """Records one worker reads alone: a shard of a file-format source's files, a run of a record source's
    records (its pieces) or a whole pythonbible source. Calling it returns the records (a lazy loader)."""

    source: SourceConfig
    root: str | None = None
    """File formats: the (absolute) folder; `paths` are relative to it."""
    paths: tuple[str, ...] = ()
    pieces: tuple[Piece, ...] = ()
    limit: int | None = None
    """At most this many records (a piece of unknown length under max_records)."""
    source_cache: str | None = None
    """pythonbible: the (absolute) source cache; the whole source is the unit."""

    def documents(self) -> Iterator[Document]:
        """The unit's documents, in the source's order."""
        source = self.source
        if source.format in FILE_FORMATS:
            assert self.root is not None
            yield from read_source_files(source, self.root, self.paths)
            return
        if source.format == "pythonbible":
            yield from read_bible(source, self.source_cache or ".")
            return
        common: dict[str, Any] = {"source": source.name, "text_field": source.text_field, "id_field": source.id_field,
                                  "metadata": source_metadata(source)}
        for piece in self.pieces:
            path = Path(piece.file)
            stop = None if piece.count is None else piece.start + piece.count
            if source.format == "jsonl":
                yield from read_jsonl_file(path, piece.name, offset=piece.start, first_line=piece.first_line,
                                           limit=self.limit if piece.count is None else piece.count, **common)
            elif source.format == "parquet":
                yield from read_parquet_file(path, piece.name, batch_size=source.batch_size, start=piece.start,
                                             stop=stop, **common)
            else:
                yield from read_arrow_file(path, piece.name, split=piece.split, start=piece.start, stop=stop,
                                           **common)

    def __call__(self) -> list[dict]:
        try:
            return [doc.to_dict() for doc in self.documents()]
        except SourceError as exc:
            raise SourceError(f"source {self.source.name!r}: {exc}") from exc


@dataclass
class SourcePlan:
    """A source cut into units. aligned: unit k is shard k (else shards are cut from the units' records);
    parts: a file-format source's units per shard, when its shards are split (shard = its units, in order)."""

    source: SourceConfig
    units: list[Unit]
    aligned: bool
    parts: list[int] | None = None


FILES_PER_UNIT = 100
"""A file-format shard is read by the executor as units of at most this many files: a shard of 500 man pages
(~16 s of groff CPU) or help pages spreads over several workers instead of being the stage's critical path."""


def plan_source(source: SourceConfig, shard_size: int, source_cache: str | Path,
                unit_files: int | None = None) -> SourcePlan:
    """Cut a source into units without reading its records (see the module docstring); errors name the source.

    unit_files: split each file-format shard into units of at most this many files (None: one unit per shard).
    """
    try:
        if source.format in FILE_FORMATS:
            root, paths = list_source_files(source, source_cache)
            root = str(Path(root).absolute())  # a worker of another process (or node) may have another cwd
            step = min(unit_files or shard_size, shard_size)
            units: list[Unit] = []
            parts: list[int] = []
            for k in range(0, len(paths), shard_size):
                shard = paths[k : k + shard_size]
                units += [Unit(source, root=root, paths=tuple(shard[j : j + step])) for j in range(0, len(shard), step)]
                parts.append(-(-len(shard) // step))
            return SourcePlan(source, units, aligned=True, parts=parts if step < shard_size else None)
        if source.format == "pythonbible":
            return SourcePlan(source, [Unit(source, source_cache=str(Path(source_cache).absolute()))], aligned=False)
        return _plan_records(source, shard_size, source_cache)
    except SourceError as exc:
        raise SourceError(f"source {source.name!r}: {exc}") from exc


def _record_files(source: SourceConfig, source_cache: str | Path) -> list[tuple[Path, str, str | None]]:
    assert source.path is not None
    base = package_base(source, source_cache)
    path = str(base / source.path) if base is not None else source.path
    if source.format == "hf_disk":
        return hf_disk_files(path, source.split)
    patterns = JSONL_PATTERNS if source.format == "jsonl" else PARQUET_PATTERNS
    return [(file, name, None) for file, name in resolve_files(path, patterns)]


def _plan_records(source: SourceConfig, shard_size: int, source_cache: str | Path) -> SourcePlan:
    """Units of shard_size records over a record source's files, in file order (max_records applied)."""
    units: list[Unit] = []
    pieces: list[Piece] = []
    filled = 0  # records in the unit being built
    planned = 0  # records planned so far (a lower bound after a file of unknown length)
    aligned = True
    limit = source.max_records

    def flush() -> None:
        nonlocal pieces, filled
        if pieces:
            units.append(Unit(source, pieces=tuple(pieces)))
        pieces, filled = [], 0

    for file_path, name, split in _record_files(source, source_cache):
        remaining = None if limit is None else limit - planned
        if remaining is not None and remaining <= 0:
            break
        file = str(file_path.absolute())
        if source.format == "jsonl" and is_compressed(file_path):
            flush()
            units.append(Unit(source, pieces=(Piece(file, name),), limit=remaining))
            aligned = False  # its length is known once read: later units no longer line up with the shards
            continue
        starts: dict[int, tuple[int, int]] = {}
        if source.format == "jsonl":
            count, found = scan_jsonl(file_path, filled, shard_size, remaining)
            starts = {index - filled: (offset, line) for index, offset, line in found}
        else:
            rows = parquet_rows if source.format == "parquet" else arrow_rows
            count = rows(file_path, source.text_field, source.id_field)
            count = count if remaining is None else min(count, remaining)
        i = 0
        while i < count:
            take = min(shard_size - filled, count - i)
            offset, line = starts.get(i, (i, 1))  # parquet/hf_disk: the row itself
            pieces.append(Piece(file, name, start=offset, first_line=line, count=take, split=split))
            filled += take
            i += take
            if filled == shard_size:
                flush()
        planned += count
    flush()
    return SourcePlan(source, units, aligned)


class SpooledShard:
    """A raw shard: line ranges [start, stop) of spooled unit files, read (and parsed) when called.

    Picklable: a copy holds only the file names (valid while the spool lives), the original keeps the spool alive.
    """

    def __init__(self, ranges: Sequence[tuple[str, int, int]], spool: Spool | None = None):
        self.ranges = tuple(ranges)
        self._spool = spool

    def __call__(self) -> list[dict]:
        records = []
        for path, start, stop in self.ranges:
            with open(path, "rb") as fh:
                for i, line in enumerate(fh):
                    if i >= stop:
                        break
                    if i >= start:
                        records.append(json.loads(line))
        return records

    def __reduce__(self) -> tuple:
        return SpooledShard, (self.ranges,)

    def __deepcopy__(self, memo: dict) -> SpooledShard:
        return self


def spool_unit(task: tuple[Unit, str]) -> int:
    """Read one unit (in a worker) into its spool file as JSON lines; return its record count."""
    unit, path = task
    count = 0
    try:
        with open(path, "w", encoding="utf-8") as fh:
            for doc in unit.documents():
                fh.write(json.dumps(doc.to_dict(), ensure_ascii=False) + "\n")
                count += 1
    except SourceError as exc:
        raise SourceError(f"source {unit.source.name!r}: {exc}") from None
    return count


def cut_shards(files: Sequence[tuple[str, int]], shard_size: int, limit: int | None = None) -> list[list[tuple[str, int, int]]]:
    """Shards of shard_size records over spooled files [(path, records)] in order (at most limit records):
    each shard a list of (path, first line, end line) ranges."""
    shards: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    filled = total = 0
    for path, count in files:
        line = 0
        while line < count and (limit is None or total < limit):
            take = min(shard_size - filled, count - line)
            if limit is not None:
                take = min(take, limit - total)
            current.append((path, line, line + take))
            line += take
            filled += take
            total += take
            if filled == shard_size:
                shards.append(current)
                current, filled = [], 0
    if current:
        shards.append(current)
    return shards


def ingest_on_executor(sources: Sequence[SourceConfig], shard_size: int, source_cache: str | Path,
                       executor: ExecutorConfig) -> dict[str, SpooledShard]:
    """Every source's shards, read by the executor's workers into a spool: {"<source>-shard-00000": loader}."""
    from tqdm import tqdm

    plans = [plan_source(source, shard_size, source_cache, FILES_PER_UNIT) for source in sources]
    spool = Spool(executor.spool_dir)
    tasks = [(unit, str(spool.file(i, "raw.jsonl"))) for i, unit in enumerate(u for p in plans for u in p.units)]
    counts = list(tqdm(map_in_order(spool_unit, tasks, executor), total=len(tasks), desc="ingest", unit="unit"))
    shards: dict[str, SpooledShard] = {}
    done = 0
    for plan in plans:
        files = [(path, count) for (_, path), count in zip(tasks[done : done + len(plan.units)],
                                                              counts[done : done + len(plan.units)], strict=True)]
        done += len(plan.units)
        if plan.parts is not None:  # shard k = its units (a file-format shard of .so pages may even be empty)
            ends = itertools.accumulate(plan.parts)
            ranges = [[(path, 0, count) for path, count in files[end - n : end]]
                      for n, end in zip(plan.parts, ends, strict=True)]
        elif plan.aligned:  # unit k is shard k
            ranges = [[(path, 0, count)] for path, count in files]
        else:
            ranges = cut_shards(files, shard_size, plan.source.max_records)
        for k, shard in enumerate(ranges):
            shards[f"{plan.source.name}-shard-{k:05d}"] = SpooledShard(shard, spool)
        logger.info("ingested source %s into %d shard(s) (%d records) on the %s executor", plan.source.name,
                    len(ranges), sum(count for _, count in files), executor.kind)
    return shards


def ingest_sources(
    sources: Sequence[SourceConfig | Mapping[str, Any]], shard_size: int, lazy: bool = False,
    source_cache: str | Path = DEFAULT_SOURCE_CACHE, executor: ExecutorConfig | None = None,
) -> dict[str, list[dict] | Callable[[], list[dict]]]:
    """All configured sources as shards ``{"<source>-00000": [record, ...]}``.

    ``source_cache``: the folder holding the sources' packages (`lmforge.data.packages`).
    With an ``executor`` (what the data_processing stage does) every source is cut into units by a plan
    that reads no record, the executor's workers read the units into a spool, and each shard is a loader
    of its spooled records (`lmforge.data.ingest_units`): nothing is read in this process.
    Without one, lazy=True makes each shard a picklable loader that reads its own files or records
    (Kedro's PartitionedDataset saves such a mapping one shard at a time, and `process_corpus` workers can
    read shards in parallel), except the sources the plan cannot cut on shard boundaries (compressed
    jsonl, pythonbible), read here; lazy=False reads every source here by one sequential pass
    (`read_source`, the reference the other two modes are tested against).
    """
    if not sources:
        raise ValueError("data_processing.sources is empty: configure at least one source")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    configs = [raw if isinstance(raw, SourceConfig) else SourceConfig.from_dict(raw) for raw in sources]
    if executor is not None:
        return dict(ingest_on_executor(configs, shard_size, source_cache, executor))
    shards: dict[str, list[dict] | Callable[[], list[dict]]] = {}
    for source in configs:
        plan = plan_source(source, shard_size, source_cache) if lazy else None
        source_shards: Mapping[str, list[dict] | Callable[[], list[dict]]]
        if plan is not None and plan.aligned:
            source_shards = {f"shard-{k:05d}": unit for k, unit in enumerate(plan.units)}
        else:
            try:
                source_shards = shard_documents(read_source(source, source_cache), shard_size)
            except SourceError as exc:
                raise SourceError(f"source {source.name!r}: {exc}") from exc
        for name, records in source_shards.items():
            shards[f"{source.name}-{name}"] = records
        logger.info("ingested source %s into %d shard(s)%s", source.name, len(source_shards),
                    " (lazy)" if plan is not None and plan.aligned else "")
    return shards
