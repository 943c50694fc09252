"""notebooks/compare_runs.ipynb executed with nbclient against a temp MLflow store and fake DVC metrics.

Two fake chains are logged (pretrain with a per-step loss history, evaluation with scores and params)
into a fresh sqlite store; the notebook must run without an error output, draw the loss curves and the
evaluation scores of both runs, and show the workspace's data/08_reporting metrics. Takes ~10 s: most
of it is the kernel starting and importing mlflow and pandas.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow_helpers import migrated_store

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "compare_runs.ipynb"


def execute_notebook(path: Path, cwd: Path, timeout: int = 180):
    """The executed notebook (nbclient, kernel ``python3``); raises on a cell error."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def outputs(notebook) -> list:
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def text_of(notebook) -> str:
    parts = []
    for out in outputs(notebook):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture
def fake_project(tmp_path, monkeypatch) -> tuple[Path, dict[str, str]]:
    """A project folder with data/08_reporting metrics and an MLflow store holding two fake chains."""
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    reporting = tmp_path / "data" / "08_reporting"
    reporting.mkdir(parents=True)
    (reporting / "pretrain.json").write_text(json.dumps({"initial_loss": 8.0, "final_loss": 5.5, "steps": 10}))
    (reporting / "evaluation.json").write_text(json.dumps({"sft": {"heldout": {"perplexity": 33.25}}}))
    (reporting / "pretrain_loss.json").write_text(json.dumps([{"step": i, "loss": 8.0 - i} for i in range(3)]))
    (reporting / "broken.json").write_text("{not json")  # must be skipped with a warning, not fail

    uri = migrated_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("lmforge")
    run_ids: dict[str, str] = {}
    for chain, lr in (("a", 3e-3), ("b", 1e-3)):
        pretrain = client.create_run(experiment_id, run_name="pretrain")
        history = [Metric("pretrain.loss", 8.0 - 0.3 * step * (2 if chain == "b" else 1), 0, step) for step in range(10)]
        client.log_batch(pretrain.info.run_id, metrics=history,
                         params=[Param("pretrain.train.lr", str(lr)), Param("pretrain.train.max_steps", "10")])
        client.log_metric(pretrain.info.run_id, "pretrain.final_loss", history[-1].value)
        client.set_terminated(pretrain.info.run_id)
        evaluation = client.create_run(experiment_id, run_name="evaluation")
        client.log_batch(evaluation.info.run_id, params=[Param("evaluation.max_heldout_blocks", "16")], metrics=[
            Metric("evaluation.sft.heldout.perplexity", 40.5 if chain == "a" else 21.75, 0, 0),
            Metric("evaluation.base.heldout.perplexity", 60.0, 0, 0),
            Metric("evaluation.sft.heldout.tokens", 4096, 0, 0),  # a count: not plotted
        ])
        client.set_terminated(evaluation.info.run_id)
        run_ids[chain] = pretrain.info.run_id
        run_ids[f"eval-{chain}"] = evaluation.info.run_id
    mlflow.set_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LMFORGE_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("LMFORGE_USE_DVC", "0")
    return tmp_path, run_ids


def test_notebook_compares_two_fake_runs(fake_project):
    root, run_ids = fake_project
    notebook = execute_notebook(NOTEBOOK, cwd=root)
    outs = outputs(notebook)
    assert not [o for o in outs if o.output_type == "error"]
    images = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "expected the loss-curve figure and the evaluation-score figure"
    text = text_of(notebook)
    assert str(root) in text  # the project came from LMFORGE_PROJECT_DIR
    for chain in ("a", "b"):  # both pretrain runs are curves, both evaluation runs are bars
        assert f"pretrain {run_ids[chain][:8]}" in text
        assert f"evaluation {run_ids['eval-' + chain][:8]}" in text
    assert "40.5" in text and "21.75" in text  # the evaluation scores table
    assert "workspace (DVC)" not in text  # curves came from the MLflow histories, not the DVC fallback
    assert "5.3" in text and "2.6" in text  # last losses of chains a (8 - 0.3 * 9) and b (8 - 0.6 * 9)
    assert "33.25" in text  # workspace metrics from data/08_reporting
    assert "broken.json is not valid JSON" in text

