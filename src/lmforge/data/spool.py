"""The spool: per-shard files that data-processing workers write, and lazy views that read them back.

Why a spool: the stage's memory must be bounded by a shard, not by the corpus. A worker cleans
one shard and writes its kept documents, its quarantine and (near dedup on) its shingle hashes
to a temporary folder, returning only small per-document facts; the global dedup then decides
by index, and the outputs are views that read the surviving records from the spool on access.

- `Spool`: the folder, removed when the last object using it is gone; a killed stage's spool folders
  (named by their owner: `lmforge.locks.owned_tempdir`) are removed by the next stage that makes a spool;
- `write_jsonl` / `read_jsonl`: the JSON-lines format of its files (read by line index);
- `SpooledCorpus`: every shard's kept documents addressed by one global index (input order);
- `SpooledShards`: output shards of surviving documents (`.lazy()` for Kedro's PartitionedDataset);
- `SpooledQuarantine`: every dropped record with its reason.
"""

from __future__ import annotations

import bisect
import functools
import json
import shutil
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from lmforge.locks import owned_tempdir

SPOOL_PREFIX = "lmforge-spool-"


class Spool:
    """A temporary folder of per-shard files, removed when the last object using it is gone.

    Shard i has `<i>.kept.jsonl` (cleaned documents), `<i>.quarantine.jsonl` (malformed and
    filtered records) and, with near dedup, `<i>.shingles.npy` / `<i>.bounds.npy` (shingle
    hashes of the kept documents and each document's [start, end) in them).
    """

    def __init__(self, parent: str | None = None):
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = owned_tempdir(SPOOL_PREFIX, parent)  # a killed run's spools are removed first
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def file(self, index: int, kind: str) -> Path:
        return spool_file(self.path, index, kind)

    def __deepcopy__(self, memo: dict) -> Spool:
        return self  # read-only once written; Kedro's MemoryDataset deep-copies outputs


def spool_file(spool: str | Path, index: int, kind: str) -> Path:
    """Path of one of shard index's spool files (kind: kept.jsonl, quarantine.jsonl, shingles.npy, bounds.npy)."""
    return Path(spool) / f"{index:05d}.{kind}"


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Write records as JSON lines (non-JSON values as their str)."""
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def read_jsonl(path: Path, wanted: Iterable[int] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line index, record) of a spool file; only the lines in `wanted` (sorted) when given."""
    targets = None if wanted is None else iter(wanted)
    target = None if targets is None else next(targets, None)
    if targets is not None and target is None:
        return
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if target is None and targets is None:
                yield i, json.loads(line)
            elif i == target:
                yield i, json.loads(line)
                target = next(targets, None)
                if target is None:
                    return


class SpooledCorpus:
    """The kept documents of every shard, addressed by global index (input order), text in the spool."""

    def __init__(self, spool: Spool, shard_ids: Sequence[Sequence[str]], shard_sizes: Sequence[Sequence[int]]):
        """shard_ids / shard_sizes: per input shard, the ids and UTF-8 sizes of its kept documents."""
        self.spool = spool
        self.ids = [doc_id for ids in shard_ids for doc_id in ids]
        self.sizes = [size for sizes in shard_sizes for size in sizes]
        self.offsets = np.cumsum([0] + [len(ids) for ids in shard_ids]).tolist()  # shard i: [off[i], off[i+1])
        self.n_shards = len(shard_ids)

    def shard_of(self, g: int) -> tuple[int, int]:
        """(shard index, line in its kept file) of global index g."""
        shard = bisect.bisect_right(self.offsets, g) - 1
        return shard, g - self.offsets[shard]

    def by_shard(self, indices: Iterable[int]) -> dict[int, list[int]]:
        """Sorted global indices grouped by shard: {shard: [line, ...]}."""
        groups: dict[int, list[int]] = {}
        for g in indices:
            shard, line = self.shard_of(g)
            groups.setdefault(shard, []).append(line)
        return groups

    def read(self, indices: Iterable[int]) -> Iterator[tuple[int, dict]]:
        """Yield (global index, kept record) for sorted global indices, reading one shard file at a time."""
        for shard, lines in self.by_shard(indices).items():
            for line, record in read_jsonl(self.spool.file(shard, "kept.jsonl"), lines):
                yield self.offsets[shard] + line, record


class SpooledShards(Mapping):
    """Output shards "shard-00000", ... of shard_size surviving documents, read from the spool on access."""

    def __init__(self, corpus: SpooledCorpus, survivors: list[int], shard_size: int):
        self._corpus = corpus
        self._survivors = survivors
        self._shard_size = shard_size
        n = -(-len(survivors) // shard_size)
        self._names = [f"shard-{k:05d}" for k in range(n)]

    def __getitem__(self, name: str) -> list[dict]:
        try:
            k = self._names.index(name)
        except ValueError:
            raise KeyError(name) from None
        chunk = self._survivors[k * self._shard_size : (k + 1) * self._shard_size]
        return [record for _, record in self._corpus.read(chunk)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def lazy(self) -> dict[str, Callable[[], list[dict]]]:
        """{name: load callable}: what Kedro's PartitionedDataset saves one shard at a time."""
        return {name: functools.partial(self.__getitem__, name) for name in self._names}

    def __deepcopy__(self, memo: dict) -> SpooledShards:
        return self


class SpooledQuarantine:
    """Every dropped record with its reason, read from the spool when iterated.

    Order: per input shard its malformed then filtered records, then each dedup/document stage's
    removals in input order (document + removal fields).
    """

    def __init__(self, corpus: SpooledCorpus, filtered: int, stages: list[dict[int, dict]]):
        self._corpus = corpus
        self._filtered = filtered
        self._stages = stages

    def __iter__(self) -> Iterator[dict]:
        for shard in range(self._corpus.n_shards):
            for _, record in read_jsonl(self._corpus.spool.file(shard, "quarantine.jsonl")):
                yield record
        for removed in self._stages:
            for g, record in self._corpus.read(sorted(removed)):
                yield {**record, **removed[g]}

    def __len__(self) -> int:
        return self._filtered + sum(len(removed) for removed in self._stages)

    def __deepcopy__(self, memo: dict) -> SpooledQuarantine:
        return self
