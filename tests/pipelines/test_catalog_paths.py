"""catalog_path: the on-disk location of a catalog dataset, read from the project's Kedro config."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.pipelines.catalog_paths import catalog_path, dataset_filepath

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_catalog_path_reads_the_project_catalog():
    assert catalog_path("packaged_model", PROJECT_ROOT) == "data/07_model_output/lmforge-chat"
    assert catalog_path("raw_documents", PROJECT_ROOT) == "data/01_raw/corpus"  # PartitionedDataset: path
    # a wrapper dataset (MlflowArtifactDataset) answers with the wrapped dataset's filepath
    assert catalog_path("evaluation_report", PROJECT_ROOT) == "data/08_reporting/evaluation_report.html"


def test_catalog_path_rejects_unknown_and_in_memory_datasets():
    with pytest.raises(KeyError, match="not a dataset"):
        catalog_path("no_such_dataset", PROJECT_ROOT)
    with pytest.raises(KeyError, match="no filepath"):
        catalog_path("raw_validation", PROJECT_ROOT)


def test_catalog_path_follows_the_catalog(tmp_path):
    """Moving a dataset in catalog.yml moves it for every caller; conf/local overrides base."""
    (tmp_path / "conf" / "base").mkdir(parents=True)
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "base" / "catalog.yml").write_text(
        "packaged_model:\n  type: text.TextDataset\n  filepath: elsewhere/model\n"
        "tokenizer:\n  type: text.TextDataset\n  filepath: data/06_models/tokenizer\n")
    (tmp_path / "conf" / "local" / "catalog.yml").write_text(
        "tokenizer:\n  type: text.TextDataset\n  filepath: /scratch/tokenizer\n")
    assert catalog_path("packaged_model", tmp_path) == "elsewhere/model"
    assert catalog_path("tokenizer", tmp_path) == "/scratch/tokenizer"


def test_dataset_filepath_of_entries():
    assert dataset_filepath({"type": "kedro.io.MemoryDataset"}) is None
    assert dataset_filepath({"dataset": {"filepath": "a/b"}}) == "a/b"


def test_serving_clis_default_to_the_catalog(monkeypatch):
    """serve's --model/--feedback-db and loadtest's --out fall back to catalog entries (no data/ literal in them)."""
    import lmforge.packaging.loadtest as loadtest
    import lmforge.packaging.serve as serve

    monkeypatch.chdir(PROJECT_ROOT)
    assert serve._catalog_default(serve.MODEL_ENTRY) == "data/07_model_output/lmforge-chat"
    assert serve._catalog_default(serve.FEEDBACK_ENTRY) == "data/08_reporting/serving_feedback.sqlite"
    assert catalog_path(loadtest.REPORT_ENTRY, PROJECT_ROOT) == "data/08_reporting/serving_load.json"
    for name in ("serve", "loadtest"):
        assert '"data/0' not in (PROJECT_ROOT / "src/lmforge/packaging" / f"{name}.py").read_text()
