"""data_processing pipeline on an in-memory catalog: a tiny code folder -> clean shards, quarantine, metrics."""

from __future__ import annotations

import textwrap

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.partitions import PartitionedDataset

from lmforge.data.sources import make_document_id
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


def test_data_processing_pipeline(tmp_path):
    source = tmp_path / "src_folder"
    (source / "pkg").mkdir(parents=True)
    (source / "alpha.py").write_text(module_source("alpha"))
    (source / "pkg/beta.py").write_text(module_source("beta"))
    (source / "pkg/gamma.py").write_text(module_source("gamma"))
    (source / "zeta_copy.py").write_text(module_source("alpha"))  # exact duplicate of alpha.py (later in order)
    (source / "tiny.py").write_text("x = 1\n")  # too short
    (source / "notes.txt").write_text(module_source("ignored"))  # not matched by the pattern
    params = {
        "sources": [{"name": "tmpcode", "format": "code_folder", "root": str(source), "patterns": ["**/*.py"],
                     "exclude": [], "license": "MIT", "max_files": None}],
        "shard_size": 2,
        "cleaning": {"min_chars": 100, "max_chars": 100_000, "max_line_length": 500,
                     "min_alphanumeric_fraction": 0.25},
        "validation": {"min_records": 2, "min_chars": 100, "max_chars": 100_000, "max_duplicate_fraction": 0.0},
    }
    catalog = DataCatalog({
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
    assert metrics["validation"]["success"] is True
    assert any((tmp_path / "data/08_reporting/data_docs").rglob("*.html"))
