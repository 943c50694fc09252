"""Nodes of the data_processing pipeline: plain functions over catalog data and params."""

from __future__ import annotations

import tempfile
from typing import Any


def ingest_corpus(params: dict[str, Any]) -> dict[str, list[dict]]:
    """Read the configured raw sources into JSONL shards."""
    from lmforge.data.ingest import ingest_sources

    return ingest_sources(params["sources"], params.get("shard_size", 500))


def clean_corpus(
    raw_documents: dict[str, Any], params: dict[str, Any]
) -> tuple[dict, list[dict], list[dict], dict]:
    """Normalise, filter, exact- and near-dedup; quarantined records keep their reason."""
    from lmforge.data.process import DataProcessingConfig, process_corpus

    config = DataProcessingConfig.from_dict(
        {k: params[k] for k in ("cleaning", "validation", "near_dedup") if k in params}
    )
    result = process_corpus(raw_documents, config, shard_size=params.get("shard_size", 500))
    return result.clean_shards, result.quarantine, result.dedup_manifest(), result.report


def validate_corpus(clean_documents: dict[str, Any], report: dict, params: dict[str, Any]) -> tuple[str, dict]:
    """Run the Great Expectations suite; a violated expectation fails the stage with a summary."""
    from lmforge.data.process import iter_records
    from lmforge.data.validation import ValidationSuiteConfig, build_data_docs, validate_documents

    records = list(iter_records(clean_documents))
    validation = validate_documents(records, ValidationSuiteConfig(**params.get("validation", {})),
                                    suite_name="clean_documents")
    docs_dir = tempfile.mkdtemp(prefix="lmforge-data-docs-")
    build_data_docs(validation, docs_dir)
    validation.raise_for_failure()
    return docs_dir, {**report, "validation": validation.to_dict()}
