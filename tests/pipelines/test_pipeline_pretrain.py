"""pretrain pipeline on an in-memory catalog: token shards -> a 2-process DeepSpeed run -> checkpoint; and a
remote-code base model refused by the real `kedro run` (pretrain.base_model). Continued pretraining of a
foreign Hugging Face model through `kedro run` is checked in test_pipeline_foreign_models.py's walkthrough."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml
from foreign_models import build_remote_code_model
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow_helpers import isolated_run

from lmforge.pipelines.datasets import ArtifactDirectory, MetricsDataset
from lmforge.pipelines.pretrain import create_pipeline
from lmforge.pipelines.pretrain.nodes import NOT_BUILT_FILE, build_pretrain_config, tokenize_for_base_model

NAN_STEP = 2  # the step whose loss the fault injection makes NaN (skipped: no update, no record)
LOGGED = [step for step in range(20) if step != NAN_STEP]


@pytest.fixture
def pretrain_params(project_root, tmp_path) -> dict:
    """conf/base/parameters_pretrain.yml with the debug preset, 20 steps and a tmp run_dir; the loss of step 2 made
    NaN with ``nan_policy: skip`` and activation checkpointing on (formerly their own 2-process run in
    tests/training/test_training_resume.py: ~15 s of a clean 2-core machine saved)."""
    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_pretrain.yml").read_text())["pretrain"])
    params["model"] = {"preset": "debug", "overrides": {"n_layers": 1}}
    params["train"].update(max_steps=20, micro_batch_size=4, warmup_steps=2, log_every=1, nan_policy="skip",
                           activation_checkpointing=True,  # it must not change the loop
                           fault_injection={"nan_at_steps": [NAN_STEP]})
    params["launch"].update(nproc_per_node=2, timeout_s=300)
    params["run_dir"] = str(tmp_path / "pretrain_run")
    return params


@pytest.mark.slow
def test_pretrain_pipeline(tmp_path, pretrain_params, chain_token_shards, chain_tokenizer_dir, deepspeed_templates,
                           mlflow_tracking_uri, chain_documents, chain_tokenizer_params):
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
        "clean_documents": MemoryDataset(chain_documents),  # read only with pretrain.base_model set
        "params:tokenizer": MemoryDataset(chain_tokenizer_params),
        "pretrain_token_shards": ArtifactDirectory(str(tmp_path / "pretrain_tokens")),
        # the catalog's own class: data/08_reporting/pretrain.json, mirrored into the stage's run as pretrain.*
        "pretrain_metrics": MetricsDataset(str(tmp_path / "pretrain.json"), prefix="pretrain"),
    })

    with isolated_run(mlflow_tracking_uri, "test-pretrain-pipeline") as run:  # what kedro-mlflow opens around a run
        outputs = SequentialRunner().run(create_pipeline(), catalog)
    client = mlflow.MlflowClient(mlflow_tracking_uri)
    loss_history = sorted(client.get_metric_history(run.info.run_id, "pretrain.loss"), key=lambda m: m.step)
    run_params = client.get_run(run.info.run_id).data.params
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "deepspeed")]
    run_metrics = client.get_run(run.info.run_id).data.metrics

    metrics = catalog.load("pretrain_metrics")
    curve = outputs["pretrain_loss_curve"].load()
    assert metrics["final_loss"] < metrics["initial_loss"]
    assert metrics["loss_decreased"] is True
    assert metrics["world_size"] == 2
    assert metrics["zero_stage"] == pretrain_params["deepspeed"]["zero_stage"]
    assert metrics["preset"] == "debug"
    # tokens per language of the training shards, as the tokenizer stage recorded them in the shard index
    assert set(metrics["shards"]["by_language"]) == {"en", "zh", "ja", "code"}
    assert all(entry["tokens"] > 0 for entry in metrics["shards"]["by_language"].values())
    assert sum(entry["token_share"] for entry in metrics["shards"]["by_language"].values()) == pytest.approx(1.0)
    # the NaN step is dropped and counted (train.nan_policy: skip); every other step trained and was recorded
    assert metrics["skipped_steps"] == 1
    assert [point["step"] for point in curve] == LOGGED and len(curve) == metrics["steps"] == 19
    assert all(math.isfinite(point["loss"]) for point in curve)
    # the all-reduce bus bandwidth of the job's 2 gloo ranks, measured at start (training/bandwidth.py), in Gbps:
    # in the stage's metrics file and its MLflow run
    network = metrics["network"]
    assert network["allreduce_ranks"] == 2 and network["allreduce_busbw_gbps"] > 0
    for size in network["allreduce_by_size"].values():  # nccl-tests: busbw = S / t * 2 (n - 1) / n, here in Gbps
        assert size["busbw_gbps"] == pytest.approx(size["bytes"] * 8 / 1e9 / size["time_s"] * 2 * (2 - 1) / 2)
    assert run_metrics["pretrain.network.allreduce_busbw_gbps"] == pytest.approx(network["allreduce_busbw_gbps"])

    # rank 0 of the launched job logged every step into the stage's run; the resolved DeepSpeed config is an artifact
    assert [m.step for m in loss_history] == LOGGED
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
    assert [p.name for p in (tmp_path / "pretrain_tokens").iterdir()] == [NOT_BUILT_FILE]  # no base model: a note


def test_a_remote_code_base_model_is_refused_before_anything_runs(tmp_path):
    remote = build_remote_code_model(tmp_path / "internlm2-remote")

    with pytest.raises(PermissionError) as refused:
        build_pretrain_config({"run_dir": str(tmp_path / "run"), "base_model": str(remote)})

    message = str(refused.value)
    assert "\n" not in message and "pretrain.trust_remote_code: true" in message and "internlm2" in message
    config = build_pretrain_config({"run_dir": str(tmp_path / "run"), "base_model": str(remote),
                                    "trust_remote_code": True})
    assert config.trust_remote_code and config.train.lr == config.continued.lr


def test_without_a_base_model_the_corpus_is_not_retokenized(tmp_path, chain_tokenizer_params):
    config = build_pretrain_config({"run_dir": str(tmp_path / "run")})

    out_dir, counts = tokenize_for_base_model({}, config, chain_tokenizer_params)

    assert counts == {} and json.loads((Path(out_dir) / NOT_BUILT_FILE).read_text())["base_model"] is None


def test_the_pretrain_pipeline_refuses_a_remote_code_base_model_in_one_line(tmp_path, chain_documents,
                                                                             chain_tokenizer_params):
    """The pretrain pipeline with ``pretrain.base_model`` a remote-code model (on an in-memory catalog: no
    tokenizer or shards at all) stops at its first node, before anything is tokenized or launched, and the
    project's error hook makes the error the one `error: ...` line `kedro run` prints. (Formerly a real
    `kedro run --pipeline pretrain` of its own, ~15 s of CPU mostly starting Kedro; the pretrain stage's real
    `kedro run`s are the walkthrough's in test_pipeline_foreign_models.py, the hook's one line through the CLI
    is test_pipeline_foreign_models.py's sft refusal and tests/test_errors.py's.)"""
    from lmforge.error_hooks import ErrorPresentationHooks

    remote = build_remote_code_model(tmp_path / "internlm2-remote")
    params = {"run_dir": str(tmp_path / "run"), "base_model": str(remote),
              "train": {"max_steps": 6, "micro_batch_size": 2, "checkpoint_every": 0}}
    catalog = DataCatalog({
        "params:pretrain": MemoryDataset(params),
        "clean_documents": MemoryDataset(chain_documents),
        "params:tokenizer": MemoryDataset(chain_tokenizer_params),
        "pretrain_token_shards": ArtifactDirectory(str(tmp_path / "pretrain_tokens")),
        "pretrain_checkpoint": ArtifactDirectory(str(tmp_path / "data/06_models/pretrain")),
        # the tokenizer stage's outputs as the catalog names them (never built here, never read)
        "token_shards": ArtifactDirectory(str(tmp_path / "data/05_model_input/tokens")),
        "tokenizer": ArtifactDirectory(str(tmp_path / "data/06_models/tokenizer")),
        "deepspeed_templates": MemoryDataset({}),
    })

    with pytest.raises(PermissionError) as refused:
        SequentialRunner().run(create_pipeline(), catalog)
    with pytest.raises(SystemExit) as shown:
        ErrorPresentationHooks().on_pipeline_error(refused.value, {}, None, catalog)

    last = str(shown.value.code)
    assert "\n" not in last
    assert last.startswith("error: pretrain.base_model: ") and "pretrain.trust_remote_code: true" in last, last
    assert not (tmp_path / "pretrain_tokens").exists() and not (tmp_path / "run").exists()
    assert not (tmp_path / "data").exists()
