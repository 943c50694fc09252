"""Turn raw shards into clean, deduplicated shards, with a quarantine and a report.

This is the one entry point of the data-processing stage. Raw shards arrive as a
mapping name -> records or name -> load callable (what Kedro's PartitionedDataset
gives), are loaded one at a time in name order, parsed into Documents (a malformed
record is quarantined as "malformed_record", never a crash), cleaned, exact-deduped
and near-deduped (MinHash LSH, `near_dedup`) across all shards and re-sharded. Every
dropped record is in the quarantine with a reason, and the report reconciles:
records_in == records_out + sum(dropped.values()).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmforge.config import build_dataclass
from lmforge.data.cleaning import REASONS, CleaningConfig, clean_documents, count_bytes
from lmforge.data.dedup import DedupResult, exact_dedup
from lmforge.data.dedup_minhash import NearDedupConfig, near_dedup
from lmforge.data.documents import Document
from lmforge.data.sources import shard_documents
from lmforge.data.validation import ValidationSuiteConfig

logger = logging.getLogger(__name__)

ShardSource = Callable[[], list[dict]] | list[dict]
"""A raw shard: its records, or a callable that loads them (Kedro PartitionedDataset)."""


@dataclass
class DataProcessingConfig:
    """Everything the data-processing stage is configured by (`parameters_data_processing.yml`)."""

    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    """Normalisation and filter thresholds."""
    validation: ValidationSuiteConfig = field(default_factory=ValidationSuiteConfig)
    """Bounds of the validation suite run on the clean records."""
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    """MinHash LSH near-duplicate removal, run after exact dedup."""
    shard_size: int = 1000
    """Records per output shard (used when process_corpus is given no shard_size)."""
    sources: list[dict] = field(default_factory=list)
    """Raw source definitions, read by `lmforge.data.ingest`; not used by process_corpus."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataProcessingConfig:
        """Build the config from a params dict; raise ValueError naming any unknown key."""
        return build_dataclass(cls, d, path="data_processing")


@dataclass
class ProcessResult:
    """What `process_corpus` returns."""

    clean_shards: dict[str, list[dict]]
    """Kept documents as dicts, re-sharded "shard-00000", ..."""
    quarantine: list[dict]
    """Every dropped record with a "reason" (malformed, cleaning filters, exact and near duplicates)."""
    dedup_removed: list[dict]
    """One {"id", "kept_id", "similarity", "reason"} per duplicate removed (exact, then near)."""
    report: dict
    """{"records_in", "bytes_in", "records_out", "bytes_out", "dropped", "duplicates_removed"}."""

    def dedup_manifest(self) -> list[dict]:
        """One {"id", "kept_id", "similarity"} per removed duplicate: the audit trail of dedup."""
        return [{key: r[key] for key in ("id", "kept_id", "similarity")} for r in self.dedup_removed]


def load_shard(shard: ShardSource) -> list[dict]:
    """Return the records of a shard, calling its loader if it is lazy."""
    return shard() if callable(shard) else shard


def iter_records(shards: Mapping[str, ShardSource]) -> Iterator[dict]:
    """Yield every record of every shard, shards in name order, loading one at a time."""
    for name in sorted(shards):
        yield from load_shard(shards[name])


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


def quarantine_removed(docs: list[Document], dedup: DedupResult) -> list[dict]:
    """Return the quarantine entries (document + removal) of the documents a dedup stage removed.

    docs is the stage's input; its removals are in input order, like the documents missing from dedup.kept.
    """
    survivors = {id(doc) for doc in dedup.kept}
    removed_docs = [doc for doc in docs if id(doc) not in survivors]
    return [{**doc.to_dict(), **removal} for doc, removal in zip(removed_docs, dedup.removed, strict=True)]


def process_corpus(
    raw_shards: Mapping[str, ShardSource],
    config: DataProcessingConfig,
    shard_size: int | None = None,
) -> ProcessResult:
    """Clean and dedup (exact, then near) raw shards into shards of shard_size (default config.shard_size)."""
    from tqdm import tqdm

    shard_size = config.shard_size if shard_size is None else shard_size
    dropped = dict.fromkeys(("malformed_record", *REASONS, "exact_duplicate", "near_duplicate"), 0)
    records_in = bytes_in = 0
    kept: list[Document] = []
    quarantine: list[dict] = []
    for name in tqdm(sorted(raw_shards), desc="clean shards", unit="shard"):
        records = load_shard(raw_shards[name])
        docs, malformed, malformed_bytes = parse_records(records)
        cleaned = clean_documents(docs, config.cleaning)
        records_in += len(records)
        bytes_in += cleaned.counts["bytes_in"] + malformed_bytes
        dropped["malformed_record"] += len(malformed)
        for reason, n in cleaned.counts["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
        quarantine += malformed + cleaned.quarantined
        kept += cleaned.kept

    stages = [exact_dedup(kept)]
    if config.near_dedup.enabled:
        stages.append(near_dedup(stages[-1].kept, config.near_dedup))
    survivors = kept
    for dedup in stages:
        quarantine += quarantine_removed(survivors, dedup)
        for removal in dedup.removed:
            dropped[removal["reason"]] += 1
        survivors = dedup.kept
    removed = [removal for dedup in stages for removal in dedup.removed]

    report = {
        "records_in": records_in,
        "bytes_in": bytes_in,
        "records_out": len(survivors),
        "bytes_out": sum(count_bytes(doc.text) for doc in survivors),
        "dropped": dropped,
        "duplicates_removed": len(removed),
    }
    if report["records_in"] != report["records_out"] + sum(dropped.values()):
        raise AssertionError(f"data processing counts do not reconcile: {report}")
    logger.info(
        "Processed %d shard(s): %d records in (%d bytes) -> %d out (%d bytes); dropped %s",
        len(raw_shards),
        records_in,
        bytes_in,
        report["records_out"],
        report["bytes_out"],
        {reason: n for reason, n in dropped.items() if n},
    )
    return ProcessResult(
        clean_shards=shard_documents(survivors, shard_size),
        quarantine=quarantine,
        dedup_removed=removed,
        report=report,
    )
