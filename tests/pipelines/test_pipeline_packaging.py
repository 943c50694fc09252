"""packaging pipeline on an in-memory catalog: gate -> SFT checkpoint + tokenizer -> a loadable HF model directory
-> the MLflow Model Registry."""

from __future__ import annotations

import copy

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow_helpers import isolated_run, isolated_store, migrated_store

from lmforge.pipelines.datasets import ArtifactDirectory
from lmforge.pipelines.packaging import create_pipeline


def sft_audit(tokenizer_dir, model_dir=None):
    """The template audit the sft stage writes for a checkpoint (what packaging checks its package against)."""
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.tokenizer.template_audit import training_audit

    return training_audit(ChatTokenizer.load(tokenizer_dir, model_dir=model_dir))


def engine_off_inputs(tmp_path):
    """The engine step's inputs where ``packaging.engine.enabled`` is false: no GGUF folder, no held-out chats."""
    return {"quantized_models": ArtifactDirectory(str(tmp_path / "data/06_models/gguf"), missing_ok=True),
            "sft_validation_conversations": MemoryDataset([])}


def disabled_align(tmp_path):
    """What the align stage writes when ``align.enabled`` is false: a folder with only its marker."""
    from lmforge.align.chat_model import DISABLED_MARKER

    folder = tmp_path / "data/06_models/align"
    folder.mkdir(parents=True)
    (folder / DISABLED_MARKER).write_text("align.enabled was false")
    return folder


@pytest.mark.slow  # its fixtures launch the 2-process pretraining and SFT runs
def test_packaging_pipeline(tmp_path, project_root, chain_sft, chain_pretrain, chain_tokenizer_dir, chain_token_shards):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.tokenizer.metrics import summarize_token_counts
    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
    from lmforge.tokenizer.shards import read_token_counts

    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_packaging.yml").read_text())[
        "packaging"])
    params["model_name"] = "lmforge-chat-test"
    params["registry"]["enabled"] = False  # the registry is covered by the fast tests below
    params["engine"]["enabled"] = False  # GGUF + engine parity: test_packaging_pipeline_ships_gguf_checked_on_the_engine
    sha256 = SentencePieceTokenizer.from_file(f"{chain_tokenizer_dir}/tokenizer.model").sha256
    package_dir = tmp_path / "data/07_model_output/lmforge-chat"
    catalog = DataCatalog({
        "sft_checkpoint": ArtifactDirectory(chain_sft[0]),
        "tokenizer": ArtifactDirectory(chain_tokenizer_dir),
        "data_processing_metrics": MemoryDataset({"records_in": 30, "records_out": 28}),
        # what the tokenizer stage reports: here its training tokens by source and licence from the chain's shards
        "tokenizer_metrics": MemoryDataset({"vocab_size": 1024, "sha256": sha256,
                                            **summarize_token_counts(read_token_counts(chain_token_shards))}),
        "pretrain_metrics": MemoryDataset(chain_pretrain[1]),
        "sft_metrics": MemoryDataset(chain_sft[1]),
        "evaluation_metrics": MemoryDataset({"sft.heldout.perplexity": 90.5, "heldout.perplexity_ratio": 1.1,
                                             "sft.sft_pairs.perplexity": 80.0, "sft_pairs.perplexity_ratio": 0.8}),
        "template_audit_sft": MemoryDataset(sft_audit(chain_sft[0])),
        "params:packaging": MemoryDataset(params),
        "params:gate": MemoryDataset(yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())[
            "gate"]),
        "params:pretrain": MemoryDataset({"run_dir": "pretrain_run", "train": {"lr": 3e-3, "max_steps": 20}}),
        "params:sft": MemoryDataset({"run_dir": "sft_run", "train": {"lr": 1e-3}}),
        # align switched off: its marker hands packaging the SFT model (the aligned case: the fast tests below)
        "align_checkpoint": ArtifactDirectory(str(disabled_align(tmp_path))),
        "align_metrics": MemoryDataset({"enabled": False}),
        "params:align": MemoryDataset({"run_dir": "align_run", "enabled": False}),
        "packaged_model": ArtifactDirectory(str(package_dir)),
        **engine_off_inputs(tmp_path),
    })

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    metrics = outputs["packaging_metrics"].load()
    assert metrics["loads"] is True
    assert metrics["max_logit_diff"] <= 1e-5  # the package reproduces the trained checkpoint
    assert metrics["gate_passed"] is True
    assert metrics["generated_tokens"] >= 1
    assert metrics["package_bytes"] == sum(p.stat().st_size for p in package_dir.rglob("*") if p.is_file())

    card = (package_dir / "README.md").read_text(encoding="utf-8")
    assert "lmforge-chat-test" in card
    assert sha256 in card
    assert "debug" in card  # the preset, from the pretrain metrics
    assert "| pretrain.train.lr | 0.003 |" in card  # key hyperparameters, from params:pretrain
    assert "| parameters.non_embedding |" in card  # counted from the checkpoint's safetensors
    assert "Decision: **passed**" in card and "| sft_pairs.perplexity_ratio | <= 1 |" in card  # the gate, bound by bound
    sources = card.split("### Sources and licences")[1].split("## Training")[0]  # each source, licence and share
    for source, licence in (("python-stdlib", "PSF-2.0"), ("libreoffice-help-zh-cn", "MPL-2.0"),
                            ("libreoffice-help-ja", "MPL-2.0"), ("libreoffice-help-en-us", "MPL-2.0")):
        assert f"| {source} | {licence} |" in sources, source

    model = AutoModelForCausalLM.from_pretrained(str(package_dir), dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(package_dir), local_files_only=True)
    assert tokenizer.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                           tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:]), str)


EVALUATION = {"sft.heldout.perplexity": 209.6, "heldout.perplexity_ratio": 1.19, "sft.sft_pairs.perplexity": 186.7,
              "sft_pairs.perplexity_ratio": 0.70}


ALIGN_METRICS = {"enabled": True, "method": "ipo", "rounds": 2, "pairs_trained": 24, "pairs_sha256": "5eed" * 16,
                 "heldout.preference_accuracy": 0.8, "win_rate.vs_sft": 0.6}
ALIGNED_EVALUATION = {**EVALUATION, "aligned.heldout.perplexity": 215.0, "aligned.sft_pairs.perplexity": 150.0,
                      "aligned_vs_base.heldout.perplexity_ratio": 1.22, "aligned_vs_base.sft_pairs.perplexity_ratio": 0.56}
"""evaluation.json with align on: the aligned model's numbers beside SFT's (what the gate then checks)."""


def _align_off(tmp_path):
    from lmforge.align.config import DISABLED_MARKER

    (tmp_path / "align_off").mkdir(exist_ok=True)
    (tmp_path / "align_off" / DISABLED_MARKER).write_text("align.enabled is false\n")
    return tmp_path / "align_off"


def _tiny_catalog(tmp_path, project_root, model_dir, tokenizer_dir, gate, align_dir=None):
    """The packaging inputs on the tiny model; ``align_dir`` an aligned model (None: align off, the marker only)."""
    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_packaging.yml").read_text())[
        "packaging"])
    params["registry"].update(model_name="lmforge-chat-tiny-test", max_new_tokens=2)
    params["engine"]["enabled"] = False  # the tiny BPE tokenizer is not the chain's; the engine test uses engine_package
    return DataCatalog({
        "sft_checkpoint": ArtifactDirectory(str(model_dir)),
        "align_checkpoint": ArtifactDirectory(str(align_dir or _align_off(tmp_path))),
        "align_metrics": MemoryDataset(ALIGN_METRICS if align_dir else {"enabled": False}),
        "params:align": MemoryDataset({"run_dir": "align_run", "enabled": align_dir is not None,
                                       "loss": {"method": "ipo", "beta": 0.2}}),
        "tokenizer": ArtifactDirectory(str(tokenizer_dir)),
        "data_processing_metrics": MemoryDataset({"records_out": 12}),
        "tokenizer_metrics": MemoryDataset({"vocab_size": 300, "sha256": "feedface"}),
        "pretrain_metrics": MemoryDataset({"preset": "debug", "model_params": 30_000}),
        "sft_metrics": MemoryDataset({"steps": 3}),
        "evaluation_metrics": MemoryDataset(ALIGNED_EVALUATION if align_dir else EVALUATION),
        "template_audit_sft": MemoryDataset(sft_audit(tokenizer_dir, model_dir)),
        "params:packaging": MemoryDataset(params),
        "params:gate": MemoryDataset(gate),
        "params:pretrain": MemoryDataset({"run_dir": "pretrain_run", "model": {"preset": "debug"}, "train": {"lr": 3e-3}}),
        "params:sft": MemoryDataset({"run_dir": "sft_run", "train": {"lr": 1e-3}, "finetuning": "full"}),
        "packaged_model": ArtifactDirectory(str(tmp_path / "data/07_model_output/lmforge-chat")),
        **engine_off_inputs(tmp_path),
    })


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):

    with isolated_store(migrated_store(tmp_path.resolve() / "mlflow.db")) as uri:
        yield uri


def weights_sha256(model_dir):
    """sha256 over a saved model's tensors (names and values), whatever the file layout: which model a package holds."""
    import hashlib

    from safetensors.torch import load_file

    digest = hashlib.sha256()
    tensors = {k: v for f in sorted(model_dir.glob("model*.safetensors")) for k, v in load_file(f).items()}
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_packaging_pipeline_registers_a_gated_model(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir,
                                                     mlflow_store):
    """Align off (only its marker): the SFT model is packaged, and the version says align was off."""
    from mlflow import MlflowClient

    gate = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["gate"]
    catalog = _tiny_catalog(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir, gate)
    metrics = SequentialRunner().run(create_pipeline(), catalog)["packaging_metrics"].load()

    assert metrics["gate_passed"] is True and metrics["gate_bounds"] == 3
    assert metrics["max_logit_diff"] <= 1e-5
    version = MlflowClient(mlflow_store).get_model_version_by_alias("lmforge-chat-tiny-test", "champion")
    assert str(version.version) == metrics["registered_version"] == "1"
    assert version.tags["gate.passed"] == "true"
    assert version.tags["align.enabled"] == "false" and "align.method" not in version.tags
    package = tmp_path / "data/07_model_output/lmforge-chat"
    assert weights_sha256(package) == weights_sha256(tiny_model_dir) and metrics["packaged_aligned"] == 0.0
    card = (package / "README.md").read_text(encoding="utf-8")
    assert "| enabled | False |" in card.split("## Alignment")[1] and "preference-aligned" not in card


def test_packaging_pipeline_takes_the_aligned_model_when_align_ran(tmp_path, project_root, tiny_model_dir,
                                                                   tiny_tokenizer_dir, build_model, mlflow_store):
    """Align on: the aligned model (other weights than SFT's) is gated on its own numbers, packaged, and its card and
    registered version record the align run: method, pairs hash, the run id of the align stage's MLflow run."""
    from mlflow import MlflowClient

    aligned = build_model(tmp_path / "align", seed=1)  # the tiny SFT model's shape, its own weights
    client = MlflowClient(mlflow_store)
    experiment = client.create_experiment("lmforge")  # where kedro-mlflow logs the chain (conf/base/mlflow.yml)
    align_run = client.create_run(experiment, tags={"lmforge.pipelines": "align"}, run_name="align").info.run_id
    gate = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["gate"]
    catalog = _tiny_catalog(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir, gate, align_dir=aligned)

    metrics = SequentialRunner().run(create_pipeline(), catalog)["packaging_metrics"].load()

    package = tmp_path / "data/07_model_output/lmforge-chat"
    assert weights_sha256(package) == weights_sha256(aligned) != weights_sha256(tiny_model_dir)
    assert metrics["packaged_aligned"] == 1.0 and metrics["max_logit_diff"] <= 1e-5  # against the aligned checkpoint
    # the gate checked the aligned model's numbers, not SFT's
    assert metrics["gate.aligned.sft_pairs.perplexity.min.value"] == 150.0
    assert metrics["gate.aligned_vs_base.sft_pairs.perplexity_ratio.max.value"] == 0.56
    assert not any(k.startswith("gate.sft") for k in metrics)
    tags = client.get_model_version_by_alias("lmforge-chat-tiny-test", "champion").tags
    assert (tags["align.enabled"], tags["align.method"], tags["align.run_id"]) == ("true", "ipo", align_run)
    assert tags["align.pairs_sha256"] == "5eed" * 16
    assert "dvc.align_pairs" in tags and "dvc.align_checkpoint" in tags  # "absent: ..." here: no dvc.lock
    card = (package / "README.md").read_text(encoding="utf-8")
    section = card.split("## Alignment")[1].split("\n## ")[0]
    for row in ("| method | ipo |", "| beta | 0.2 |", "| rounds | 2 |", "| pairs | 24 |", f"| pairs_sha256 | {'5eed' * 16} |",
                "| heldout preference accuracy | 0.8 |", "| win rate vs SFT | 0.6 |", f"| MLflow run id | {align_run} |",
                "| align.loss.beta | 0.2 |"):
        assert row in section, row
    assert "preference-aligned" in card


@pytest.mark.parametrize(("gate", "error"), [
    ({"sft_pairs.perplexity_ratio": {"max": 0.5}}, r"quality gate: sft_pairs\.perplexity_ratio = 0\.7 \(required <= 0\.5\)"),
    ({"sft.pass_rate": {"min": 0.5}}, r"unknown metric 'sft\.pass_rate'.*sft_pairs\.perplexity_ratio"),
])
def test_packaging_pipeline_refuses_a_model_outside_the_gate(gate, error, tmp_path, project_root, tiny_model_dir,
                                                             tiny_tokenizer_dir, mlflow_store):
    from mlflow import MlflowClient

    catalog = _tiny_catalog(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir, gate)
    with pytest.raises(Exception, match=error):
        SequentialRunner().run(create_pipeline(), catalog)
    assert MlflowClient(mlflow_store).search_model_versions("name = 'lmforge-chat-tiny-test'") == []
    assert not (tmp_path / "data/07_model_output/lmforge-chat").exists()


def test_packaging_node_logs_its_resolved_config(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir,
                                                 mlflow_store):
    """The node builds PackagingConfig once and logs it flat (gate included) before the gate refuses the model."""
    import mlflow

    catalog = _tiny_catalog(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir,
                            {"sft_pairs.perplexity_ratio": {"max": 0.5}})
    with isolated_run(mlflow_store) as run:
        with pytest.raises(Exception, match="quality gate"):
            SequentialRunner().run(create_pipeline(), catalog)
    params = mlflow.get_run(run.info.run_id).data.params
    assert params["packaging.registry.max_new_tokens"] == "2"
    assert params["packaging.gate.sft_pairs.perplexity_ratio.max"] == "0.5"
    assert params["packaging.license"] == "apache-2.0"


def test_packaging_node_rejects_a_misspelt_parameter(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir):
    catalog = _tiny_catalog(tmp_path, project_root, tiny_model_dir, tiny_tokenizer_dir, {"x": {"mx": 1.0}})
    with pytest.raises(Exception, match=r"gate\.x\.mx"):
        SequentialRunner().run(create_pipeline(), catalog)


HELD_OUT = [  # sft_validation_conversations records: prompts of every script the selection orders
    {"messages": [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "7"}]},
    {"messages": [{"role": "user", "content": "用一句话介绍你自己。"}, {"role": "assistant", "content": "我是助手。"}]},
    {"messages": [{"role": "user", "content": "日本語で挨拶してください。"}, {"role": "assistant", "content": "こんにちは。"}]},
]


def test_packaging_pipeline_ships_gguf_checked_on_the_engine(tmp_path, project_root, engine_package, mlflow_store):
    """packaging.engine on: the evaluation stage's GGUF files are shipped beside the package with a Modelfile, each
    checked on llama-server against the package (f32's greedy tokens equal ours), and the numbers recorded."""
    import hashlib
    import json

    hf_dir, gguf = engine_package
    gate = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["gate"]
    catalog = _tiny_catalog(tmp_path, project_root, hf_dir, hf_dir, gate)
    params = catalog.load("params:packaging")
    params["registry"]["enabled"] = False
    params["engine"].update(enabled=True, conversations=2, n_tokens=6)
    catalog["params:packaging"] = MemoryDataset(params)
    catalog["quantized_models"] = ArtifactDirectory(str(gguf["f32"].path.parent))  # export_gguf's folder, no manifest
    catalog["sft_validation_conversations"] = MemoryDataset(HELD_OUT)
    catalog["packaged_gguf"] = ArtifactDirectory(str(tmp_path / "data/07_model_output/lmforge-chat-gguf"))

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    metrics, audit = outputs["packaging_metrics"].load(), outputs["template_audit_engine"].load()
    shipped = tmp_path / "data/07_model_output/lmforge-chat-gguf"
    name = params["model_name"]
    for fmt, source in gguf.items():
        copy = shipped / f"{name}-{fmt}.gguf"
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == source.sha256 == audit["formats"][fmt]["sha256"]
        assert metrics[f"engine.{fmt}.bytes"] == source.bytes == copy.stat().st_size
        assert metrics[f"engine.{fmt}.prompt_ids_equal"] == 1.0 and metrics[f"engine.{fmt}.stop_ok"] == 1.0
        assert 0.0 <= metrics[f"engine.{fmt}.greedy_agreement"] <= 1.0
    assert metrics["engine.f32.greedy_agreement"] == 1.0 and metrics["engine.parity_passed"] == 1.0
    # the audit conversation, then the zh and ja held-out prompts (ordered first), assistant answers dropped
    assert [c[-1]["content"] for c in audit["conversations"]] == [
        "请用中文再说一遍。", HELD_OUT[1]["messages"][0]["content"], HELD_OUT[2]["messages"][0]["content"]]
    assert metrics["engine.conversations"] == 3.0
    modelfile = (shipped / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{name}-q4_k_m.gguf") and "<|im_end|>" in modelfile
    assert f"llama-server -m {name}-q4_k_m.gguf" in (shipped / "README.md").read_text()
    card = (tmp_path / "data/07_model_output/lmforge-chat/README.md").read_text(encoding="utf-8")
    assert f"| q8_0 | {name}-q8_0.gguf | {gguf['q8_0'].bytes:,} |" in card.split("## Run it on an engine")[1]
    json.dumps(audit)  # JSON-ready as the catalog writes it
