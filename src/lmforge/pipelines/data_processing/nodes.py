"""Nodes of the data_processing pipeline: plain functions over catalog data and params."""

from __future__ import annotations

import tempfile
from typing import Any


def _validation_config(params: dict[str, Any]) -> Any:
    from lmforge.config import build_dataclass
    from lmforge.data.validation import ValidationSuiteConfig

    return build_dataclass(ValidationSuiteConfig, params.get("validation", {}), path="data_processing.validation")


def ingest_corpus(params: dict[str, Any]) -> dict[str, list[dict]]:
    """Read the configured raw sources into JSONL shards."""
    from lmforge.data.ingest import ingest_sources

    return ingest_sources(params["sources"], params.get("shard_size", 500), lazy=True)


def validate_raw_corpus(raw_documents: dict[str, Any], params: dict[str, Any]) -> Any:
    """Run the raw (schema) suite on the ingested shards; a violated expectation fails the stage with a summary."""
    from lmforge.data.process import iter_records
    from lmforge.data.validation import validate_suites

    [report] = validate_suites(iter_records(raw_documents), _validation_config(params), ["raw"])
    return report


def clean_corpus(
    raw_documents: dict[str, Any], raw_validation: Any, params: dict[str, Any]
) -> tuple[dict, list[dict], list[dict], dict]:
    """Normalise, filter, exact- and near-dedup, decontaminate; quarantined records keep their reason.

    raw_validation is not read: it orders this node after the raw suite, so a raw failure stops the run first.
    """
    from lmforge.data.process import DataProcessingConfig, process_corpus

    config = DataProcessingConfig.from_dict(
        {k: params[k] for k in ("cleaning", "validation", "near_dedup", "decontamination", "executor") if k in params}
    )
    result = process_corpus(raw_documents, config, shard_size=params.get("shard_size", 500))
    return result.clean_shards.lazy(), result.quarantine, result.dedup_manifest(), result.report


def validate_corpus(
    clean_documents: dict[str, Any], report: dict, raw_validation: Any, params: dict[str, Any]
) -> tuple[str, dict]:
    """Run the cleaned and final suites and write Data Docs of all three; a failed suite fails the stage."""
    from lmforge.data.process import iter_records
    from lmforge.data.validation import validate_suites

    docs_dir = tempfile.mkdtemp(prefix="lmforge-data-docs-")
    reports = validate_suites(iter_records(clean_documents), _validation_config(params), ["cleaned", "final"],
                              data_docs_dir=docs_dir, earlier=[raw_validation])
    reports = [raw_validation, *reports]
    suites = {r.suite_name.removesuffix("_documents"): r.to_dict() for r in reports}
    return docs_dir, {**report, "validation": {"success": all(r.success for r in reports), **suites}}
