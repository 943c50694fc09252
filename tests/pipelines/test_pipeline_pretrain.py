"""pretrain pipeline on an in-memory catalog: token shards -> a 2-process DeepSpeed run -> checkpoint."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow_helpers import isolated_run

from lmforge.pipelines.datasets import ArtifactDirectory
from lmforge.pipelines.pretrain import create_pipeline


@pytest.fixture
def pretrain_params(project_root, tmp_path) -> dict:
    """conf/base/parameters_pretrain.yml with the debug preset, 20 steps and a tmp run_dir."""
    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_pretrain.yml").read_text())["pretrain"])
    params["model"] = {"preset": "debug", "overrides": {"n_layers": 1}}
    params["train"].update(max_steps=20, micro_batch_size=4, warmup_steps=2, log_every=1)
    params["launch"].update(nproc_per_node=2, timeout_s=300)
    params["run_dir"] = str(tmp_path / "pretrain_run")
    return params


@pytest.mark.slow
def test_pretrain_pipeline(tmp_path, pretrain_params, chain_token_shards, chain_tokenizer_dir, deepspeed_templates,
                           mlflow_tracking_uri):
    import mlflow
    import torch
    from transformers import AutoModelForCausalLM

    checkpoint_dir = tmp_path / "data/06_models/pretrain"
    catalog = DataCatalog({
        "token_shards": ArtifactDirectory(chain_token_shards),
        "tokenizer": ArtifactDirectory(chain_tokenizer_dir),
        "deepspeed_templates": MemoryDataset(deepspeed_templates),
        "params:pretrain": MemoryDataset(pretrain_params),
        "pretrain_checkpoint": ArtifactDirectory(str(checkpoint_dir)),
    })

    with isolated_run(mlflow_tracking_uri, "test-pretrain-pipeline") as run:  # what kedro-mlflow opens around a run
        outputs = SequentialRunner().run(create_pipeline(), catalog)
    client = mlflow.MlflowClient(mlflow_tracking_uri)
    loss_history = sorted(client.get_metric_history(run.info.run_id, "pretrain.loss"), key=lambda m: m.step)
    run_params = client.get_run(run.info.run_id).data.params
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "deepspeed")]

    metrics = outputs["pretrain_metrics"].load()
    curve = outputs["pretrain_loss_curve"].load()
    assert metrics["final_loss"] < metrics["initial_loss"]
    assert metrics["loss_decreased"] is True
    assert metrics["world_size"] == 2
    assert metrics["zero_stage"] == pretrain_params["deepspeed"]["zero_stage"]
    assert metrics["preset"] == "debug"
    assert len(curve) == metrics["steps"] == 20
    assert all(math.isfinite(point["loss"]) for point in curve)

    # rank 0 of the launched job logged every step into the stage's run; the resolved DeepSpeed config is an artifact
    assert [m.step for m in loss_history] == list(range(20))
    assert [m.value for m in loss_history] == pytest.approx([point["loss"] for point in curve])
    assert run_params["pretrain.world_size"] == "2"
    assert artifacts == ["deepspeed/pretrain.json"]
    # the fully resolved PretrainConfig as flat params, defaults the YAML leaves out included
    assert run_params["pretrain.model.preset"] == "debug" and run_params["pretrain.model.overrides.n_layers"] == "1"
    assert run_params["pretrain.train.max_steps"] == "20" and run_params["pretrain.launch.nnodes"] == "1"
    assert run_params["pretrain.deepspeed.offload_pin_memory"] == "true"

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=torch.float32, local_files_only=True)
    assert model.config.num_hidden_layers == 1  # the override reached the launched processes
    assert sum(p.numel() for p in model.parameters()) == metrics["model_params"]
    run_dir = tmp_path / "pretrain_run"
    assert not (run_dir / "export").exists()  # moved into place by the catalog
    assert {"job.json", "train.log", "result.json"} <= {p.name for p in run_dir.iterdir()}
