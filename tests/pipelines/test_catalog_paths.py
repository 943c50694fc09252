"""The CLIs' default paths come from the Kedro catalog (conf/base/catalog.yml), not from literals."""

from __future__ import annotations

import pytest
import yaml

from lmforge.pipelines.catalog_paths import catalog_filepath, find_project_root


def test_filepaths_are_the_catalog_entries(project_root):
    catalog = yaml.safe_load((project_root / "conf/base/catalog.yml").read_text())
    for name in ("packaged_model", "serving_load", "serving_feedback"):
        assert catalog_filepath(name, project_root) == catalog[name]["filepath"]
    assert catalog_filepath("evaluation_report", project_root) == catalog["evaluation_report"]["dataset"]["filepath"]
    with pytest.raises(KeyError, match="no_such_dataset"):
        catalog_filepath("no_such_dataset", project_root)


def test_project_root_is_found_from_a_subdirectory(project_root):
    assert find_project_root(project_root / "src" / "lmforge") == project_root.resolve()


def test_serving_clis_default_to_the_catalog(project_root, monkeypatch):
    """serve's --model/--feedback-db and loadtest's --out fall back to catalog entries (no data/ literal in them)."""
    import lmforge.packaging.loadtest as loadtest
    import lmforge.packaging.serve as serve

    monkeypatch.chdir(project_root)
    assert serve._catalog_default(serve.MODEL_ENTRY) == "data/07_model_output/lmforge-chat"
    assert serve._catalog_default(serve.FEEDBACK_ENTRY) == "data/08_reporting/serving_feedback.sqlite"
    assert loadtest.REPORT_ENTRY == "serving_load"
    for module in (serve, loadtest):
        assert '"data/0' not in (project_root / "src/lmforge/packaging" / f"{module.__name__.rsplit('.', 1)[1]}.py"
                                 ).read_text()
