"""data_processing pipeline on an in-memory catalog: a tiny code folder -> clean shards, quarantine, metrics."""

from __future__ import annotations

import json
import tempfile
import textwrap
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.partitions import PartitionedDataset
from mlflow_helpers import isolated_run, migrated_store

from lmforge.data.sources import make_document_id
from lmforge.data.validation import DataValidationError
from lmforge.pipelines.data_processing import create_pipeline
from lmforge.pipelines.datasets import ArtifactDirectory, JSONLinesDataset, MetricsDataset


def module_source(name: str) -> str:
    return textwrap.dedent(f'''\
        """Helpers for {name}: small, documented, and long enough to pass the length filter."""

        def {name}_total(values):
            """Return the sum of the values, ignoring None entries."""
            total = 0
            for value in values:
                if value is not None:
                    total += value
            return total


        def {name}_count(values):
            """Return how many values are not None."""
            return sum(1 for value in values if value is not None)
        ''')


def write_corpus(source) -> None:
    (source / "pkg").mkdir(parents=True)
    (source / "alpha.py").write_text(module_source("alpha"))
    (source / "pkg/beta.py").write_text(module_source("beta"))
    (source / "pkg/gamma.py").write_text(module_source("gamma"))
    (source / "zeta_copy.py").write_text(module_source("alpha"))  # exact duplicate of alpha.py (later in order)
    (source / "tiny.py").write_text("x = 1\n")  # too short
    (source / "notes.txt").write_text(module_source("ignored"))  # not matched by the pattern


def make_params(source, **validation) -> dict:
    return {
        "sources": [{"name": "tmpcode", "format": "code_folder", "root": str(source), "patterns": ["**/*.py"],
                     "exclude": [], "license": "MIT", "max_files": None}],
        "shard_size": 2,
        "executor": {"kind": "sequential"},  # one process: fast; the process pool is tested in tests/data
        "cleaning": {"min_chars": 100, "max_chars": 100_000, "max_line_length": 500,
                     "min_alphanumeric_fraction": 0.25},
        "decontamination": {"enabled": True, "ngram": 13, "min_matches": 1, "eval_sets": ["humaneval"]},
        "validation": {"min_records": 2, "min_chars": 100, "max_chars": 100_000, "max_duplicate_fraction": 0.0,
                       "max_pii_per_document": 0, "min_median_chars": None, "max_median_chars": None,
                       "min_language_share": 0.0, "language_share_bounds": None,
                       "language_char_share_bounds": None, **validation},
    }


def make_catalog(tmp_path, params: dict) -> DataCatalog:
    return DataCatalog({
        "params:data_processing": MemoryDataset(params),
        "clean_documents": PartitionedDataset(path=str(tmp_path / "data/03_primary/documents"),
                                              dataset="lmforge.pipelines.datasets.JSONLinesDataset",
                                              filename_suffix=".jsonl", overwrite=True),
        "quarantine": JSONLinesDataset(str(tmp_path / "data/02_intermediate/quarantine.jsonl")),
        "dedup_manifest": JSONLinesDataset(str(tmp_path / "data/08_reporting/dedup_manifest.jsonl")),
        "data_docs": ArtifactDirectory(str(tmp_path / "data/08_reporting/data_docs")),
        "data_processing_metrics": MetricsDataset(str(tmp_path / "data/08_reporting/data_processing.json"),
                                                  prefix="data_processing"),
    })


def test_data_processing_pipeline(tmp_path):
    source = tmp_path / "src_folder"
    write_corpus(source)
    catalog = make_catalog(tmp_path, make_params(source))

    SequentialRunner().run(create_pipeline(), catalog)

    doc_id = {path: make_document_id("tmpcode", path)
              for path in ("alpha.py", "pkg/beta.py", "pkg/gamma.py", "zeta_copy.py", "tiny.py")}
    clean = catalog["clean_documents"].load()  # {partition: loader}
    kept = [r for name in sorted(clean) for r in clean[name]()]
    assert {r["id"] for r in kept} == {doc_id["alpha.py"], doc_id["pkg/beta.py"], doc_id["pkg/gamma.py"]}
    assert len(clean) == 2  # 3 records in shards of 2
    assert {r["metadata"]["license"] for r in kept} == {"MIT"}

    quarantine = {r["id"]: r for r in catalog["quarantine"].load()}
    assert set(quarantine) == {doc_id["zeta_copy.py"], doc_id["tiny.py"]}
    assert quarantine[doc_id["tiny.py"]]["reason"] == "too_short"
    assert quarantine[doc_id["zeta_copy.py"]]["reason"] == "exact_duplicate"
    assert quarantine[doc_id["zeta_copy.py"]]["kept_id"] == doc_id["alpha.py"]

    manifest = catalog["dedup_manifest"].load()
    assert manifest == [{"id": doc_id["zeta_copy.py"], "kept_id": doc_id["alpha.py"], "similarity": 1.0}]

    metrics = catalog["data_processing_metrics"].load()
    assert metrics["records_in"] == 5
    assert metrics["records_out"] == 3
    assert metrics["records_in"] == metrics["records_out"] + sum(metrics["dropped"].values())
    assert {k: v for k, v in metrics["dropped"].items() if v} == {"too_short": 1, "exact_duplicate": 1}
    assert metrics["dropped"]["contaminated"] == 0
    # A code folder is one language group, "code", whatever its comments' language.
    assert {g: (c["documents_in"], c["kept"], c["dropped"]) for g, c in metrics["by_language"].items()} == {
        "code": (5, 3, {"exact_duplicate": 1, "too_short": 1})}
    validation = metrics["validation"]
    assert validation["success"] is True
    assert [validation[s]["suite_name"] for s in ("raw", "cleaned", "final")] == [
        "raw_documents", "cleaned_documents", "final_documents"]
    assert validation["raw"]["statistics"]["successful_expectations"] == 14
    assert all(validation[s]["success"] and not validation[s]["failures"] for s in ("raw", "cleaned", "final"))
    docs = tmp_path / "data/08_reporting/data_docs"
    assert (docs / "index.html").is_file()
    pages = {p.relative_to(docs / "validations").parts[0] for p in (docs / "validations").rglob("*.html")}
    assert pages == {"raw_documents", "cleaned_documents", "final_documents"}
    saved = json.loads((tmp_path / "data/08_reporting/data_processing.json").read_text())
    assert saved["validation"]["final"]["success"] is True


def test_raw_suite_failure_stops_the_stage_before_cleaning(tmp_path):
    records = tmp_path / "ext" / "records.jsonl"
    records.parent.mkdir()
    rows = [{"uid": "same", "content": module_source(name)} for name in ("alpha", "beta")]
    records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    params = make_params(tmp_path)
    params["sources"] = [{"name": "ext", "format": "jsonl", "path": str(records), "text_field": "content",
                          "id_field": "uid"}]
    catalog = make_catalog(tmp_path, params)
    with pytest.raises(DataValidationError) as raised:
        SequentialRunner().run(create_pipeline(), catalog)
    message = str(raised.value)
    assert "suite 'raw_documents' failed 1 of 14 expectation(s)" in message
    assert "expect_column_values_to_be_unique column='id': unexpected 2 of 2" in message
    assert "ids ['same' (records.jsonl" in message
    assert not catalog["quarantine"].exists()  # cleaning never ran


@pytest.mark.parametrize(
    ("validation", "expected"),
    [
        ({"max_chars": 300}, ["suite 'cleaned_documents' failed 1 of 3",
                              "expect_column_values_to_be_between column='n_chars': unexpected 3 of 3"]),
        ({"min_records": 4}, ["suite 'final_documents' failed 1 of 4",
                              "expect_table_row_count_to_be_between: observed_value=3; bound: min_value=4"]),
    ],
    ids=["cleaned", "final"],
)
def test_cleaned_and_final_suite_failures_fail_the_stage_with_docs(tmp_path, monkeypatch, validation, expected):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the failed run's Data Docs stay in a temp folder
    source = tmp_path / "src_folder"
    write_corpus(source)
    catalog = make_catalog(tmp_path, make_params(source, **validation))
    with pytest.raises(DataValidationError) as raised:
        SequentialRunner().run(create_pipeline(), catalog)
    message = str(raised.value)
    for line in expected:
        assert line in message
    docs_line = [line for line in message.splitlines() if line.startswith("Data Docs of the failed run: ")]
    assert docs_line and docs_line[0].endswith("index.html")
    assert Path(docs_line[0].removeprefix("Data Docs of the failed run: ")).is_file()
    assert not catalog["data_processing_metrics"].exists()  # a failed suite publishes no metrics


def test_nodes_build_the_typed_config_once_and_log_it_resolved(tmp_path):
    import mlflow

    from lmforge.data.process import DataProcessingConfig
    from lmforge.pipelines.data_processing.nodes import build_config

    with isolated_run(migrated_store(tmp_path / "mlflow.db")) as run:
        config = build_config(make_params(tmp_path))
        params = mlflow.get_run(run.info.run_id).data.params

    assert isinstance(config, DataProcessingConfig) and config.shard_size == 2
    assert config.sources[0].name == "tmpcode"
    assert params["data_processing.shard_size"] == "2"
    assert params["data_processing.near_dedup.num_perm"] == "128"  # a default the params left out
    with pytest.raises(ValueError, match=r"data_processing\.shard_sise"):
        build_config({"shard_sise": 3})
