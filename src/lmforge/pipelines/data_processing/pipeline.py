"""data_processing pipeline wiring: ingest -> raw suite -> clean/dedup/decontaminate -> cleaned + final suites."""

from kedro.pipeline import Node, Pipeline

from .nodes import clean_corpus, ingest_corpus, validate_corpus, validate_raw_corpus


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(ingest_corpus, "params:data_processing", "raw_documents", name="ingest_corpus"),
        Node(validate_raw_corpus, ["raw_documents", "params:data_processing"], "raw_validation",
             name="validate_raw_corpus"),
        Node(clean_corpus, ["raw_documents", "raw_validation", "params:data_processing"],
             ["clean_documents", "quarantine", "dedup_manifest", "data_processing_report"], name="clean_corpus"),
        Node(validate_corpus, ["clean_documents", "data_processing_report", "raw_validation", "params:data_processing"],
             ["data_docs", "data_processing_metrics"], name="validate_corpus"),
    ])
