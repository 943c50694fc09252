"""Nodes of the data_processing pipeline: plain functions over catalog data and params.

Each node turns ``params:data_processing`` into the stage's one typed config (`DataProcessingConfig`,
typos rejected, defaults from the dataclass) and passes it down whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmforge.locks import owned_tempdir

if TYPE_CHECKING:
    from lmforge.data.process import DataProcessingConfig


def build_config(params: dict[str, Any]) -> DataProcessingConfig:
    """``params:data_processing`` as the typed stage config, logged to the active MLflow run as flat params."""
    from lmforge.config import build_dataclass
    from lmforge.data.process import DataProcessingConfig
    from lmforge.tracking import log_config

    config = build_dataclass(DataProcessingConfig, params, path="data_processing")
    log_config(config, "data_processing")
    return config


def ingest_corpus(params: dict[str, Any]) -> dict[str, Any]:
    """Read the configured raw sources (from the source cache, never the network) into JSONL shards.

    The executor's workers read the sources into a spool; the shards returned are loaders of the spooled
    records, which the catalog saves one at a time.
    """
    from lmforge.data.ingest_units import ingest_sources

    config = build_config(params)
    return ingest_sources(config.sources, config.shard_size, source_cache=config.source_cache,
                          executor=config.executor)


def validate_raw_corpus(raw_documents: dict[str, Any], params: dict[str, Any]) -> Any:
    """Run the raw (schema) suite on the ingested shards; a violated expectation fails the stage with a summary."""
    from lmforge.data.documents import iter_records
    from lmforge.data.validation import validate_suites

    [report] = validate_suites(iter_records(raw_documents), build_config(params).validation, ["raw"])
    return report


def clean_corpus(
    raw_documents: dict[str, Any], raw_validation: Any, params: dict[str, Any]
) -> tuple[dict, list[dict], list[dict], dict]:
    """Normalise, filter, exact- and near-dedup, decontaminate; quarantined records keep their reason.

    raw_validation is not read: it orders this node after the raw suite, so a raw failure stops the run first.
    """
    from lmforge.data.process import process_corpus

    result = process_corpus(raw_documents, build_config(params))
    return result.clean_shards.lazy(), result.quarantine, result.dedup_manifest(), result.report


def validate_corpus(
    clean_documents: dict[str, Any], report: dict, raw_validation: Any, params: dict[str, Any]
) -> tuple[str, dict]:
    """Run the cleaned and final suites and write Data Docs of all three; a failed suite fails the stage."""
    from lmforge.data.documents import iter_records
    from lmforge.data.validation import validate_suites

    docs_dir = str(owned_tempdir("lmforge-data-docs-"))
    reports = validate_suites(iter_records(clean_documents), build_config(params).validation, ["cleaned", "final"],
                              data_docs_dir=docs_dir, earlier=[raw_validation])
    reports = [raw_validation, *reports]
    suites = {r.suite_name.removesuffix("_documents"): r.to_dict() for r in reports}
    return docs_dir, {**report, "validation": {"success": all(r.success for r in reports), **suites}}
