"""pretrain pipeline on an in-memory catalog: token shards -> a 2-process DeepSpeed run -> checkpoint; and
continued pretraining of a foreign Hugging Face model through the real `kedro run` (pretrain.base_model)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml
from cli_helpers import copy_project, kedro_run
from foreign_models import build_foreign_model, build_remote_code_model
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow_helpers import isolated_run

from lmforge.pipelines.datasets import ArtifactDirectory
from lmforge.pipelines.pretrain import create_pipeline
from lmforge.pipelines.pretrain.nodes import NOT_BUILT_FILE, build_pretrain_config, tokenize_for_base_model


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
    # tokens per language of the training shards, as the tokenizer stage recorded them in the shard index
    assert set(metrics["shards"]["by_language"]) == {"en", "zh", "ja", "code"}
    assert all(entry["tokens"] > 0 for entry in metrics["shards"]["by_language"].values())
    assert sum(entry["token_share"] for entry in metrics["shards"]["by_language"].values()) == pytest.approx(1.0)
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


def _step0_loss(model_dir: Path, shards_dir: Path, *, micro_batch_size: int, world_size: int, seed: int,
                fresh: bool = False) -> float:
    """The loss the job's first step reports (mean of every rank's first micro-batch), of the weights in
    ``model_dir`` (or, ``fresh``, of a new random init of the same architecture)."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmforge.tokenizer.shards import TokenShards
    from lmforge.training.data import sample_indices

    if fresh:
        torch.manual_seed(seed + 1)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)), dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    shards = TokenShards.open(shards_dir)
    losses = []
    with torch.no_grad():
        for rank in range(world_size):
            idx = sample_indices(0, 0, rank, world_size=world_size, micro_batch_size=micro_batch_size, accumulation=1,
                                 n_items=shards.n_blocks("train"), seed=seed)
            ids = torch.from_numpy(np.stack([shards.block("train", int(i)) for i in idx]).astype(np.int64))
            losses.append(float(model(input_ids=ids, labels=ids).loss))
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_kedro_run_pretrain_continues_a_foreign_qwen2_model(tmp_path, project_root, chain_documents):
    """`kedro run --pipeline pretrain --params pretrain.base_model=<dir>` in a copy of the project that holds
    only the cleaned corpus (no tokenizer, no token shards): a remote-code model is refused in one line; a
    foreign Qwen2 model is trained 6 steps by 2 processes on the corpus in its own tokens, starting from its
    own loss, and the checkpoint carries its tokenizer, chat template and generation config.
    About 60 s on 2 cores (two `kedro run`s, the second starting 2 DeepSpeed processes)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    root = copy_project(project_root, tmp_path / "project", chain_documents)
    qwen2 = build_foreign_model("qwen2", tmp_path / "qwen2")
    remote = build_remote_code_model(tmp_path / "internlm2-remote")
    steps, micro, seed = 6, 2, 0
    tiny = (f"pretrain.train.max_steps={steps},pretrain.train.micro_batch_size={micro},pretrain.train.checkpoint_every=0,"
            "pretrain.continued.lr=0.002,pretrain.launch.timeout_s=300,tokenizer.shards.seq_len=64,"
            "tokenizer.shards.num_proc=1")

    refused = kedro_run(root, tmp_path, "--pipeline", "pretrain", "--params", f"pretrain.base_model={remote},{tiny}",
                        timeout=120)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pretrain.base_model: ") and "pretrain.trust_remote_code: true" in last, last
    assert "Traceback" not in refused.stderr

    ran = kedro_run(root, tmp_path, "--pipeline", "pretrain", "--params", f"pretrain.base_model={qwen2},{tiny}",
                    timeout=400)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
    metrics = json.loads((root / "data/08_reporting/pretrain.json").read_text())
    curve = json.loads((root / "data/08_reporting/pretrain_loss.json").read_text())
    shards = root / "data/05_model_input/pretrain_tokens"
    assert metrics["continued"] is True and metrics["base_model"] == str(qwen2.resolve())
    assert metrics["steps"] == steps and metrics["world_size"] == 2 and metrics["tokens.train_blocks"] > 0
    assert metrics["final_loss"] < metrics["initial_loss"] and metrics["loss_decreased"] is True
    # the first step is the base model's loss on that step's blocks, not a fresh initialisation's
    base_loss = _step0_loss(qwen2, shards, micro_batch_size=micro, world_size=2, seed=seed)
    assert curve[0]["loss"] == pytest.approx(base_loss, rel=1e-4)
    assert abs(_step0_loss(qwen2, shards, micro_batch_size=micro, world_size=2, seed=seed, fresh=True)
               - base_loss) > 1e-3
    assert curve[0]["lr"] == pytest.approx(0.002 / max(1, round(0.03 * steps)))  # the continued schedule

    checkpoint = root / "data/06_models/pretrain"
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(str(qwen2), dtype=torch.float32, local_files_only=True)
    assert type(model) is type(base) and model.config.vocab_size == base.config.vocab_size
    assert not torch.equal(model.get_input_embeddings().weight, base.get_input_embeddings().weight)
    chat = ChatTokenizer.load(checkpoint)
    assert chat.template == ChatTokenizer.load(qwen2).template and chat.end_of_turn == "<|im_end|>"
    assert json.loads((checkpoint / "generation_config.json").read_text()) == json.loads(
        (qwen2 / "generation_config.json").read_text())
    assert not (root / "data/06_models/tokenizer").exists() and not (root / "data/05_model_input/tokens").exists()
