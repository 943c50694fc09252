"""evaluation pipeline on an in-memory catalog: checkpoints -> metrics, generations, operations and the report."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from mlflow_helpers import isolated_run

from lmforge.pipelines.datasets import ArtifactDirectory
from lmforge.pipelines.evaluation import create_pipeline

SEED_NAMES = ("training speed (time per epoch)", "inference speed (requests per second)", "GPU utilisation",
              "precision", "recall", "F1", "pass@1", "memory use", "disk I/O", "network bandwidth", "crash rate",
              "restart count", "error rate", "response time (ms)", "user satisfaction")


ZH_TEXTS = ("单击保存按钮以保存当前文档。打开文件菜单，然后选择打印。", "这个函数返回列表中所有数字的和。")


def _translation(src, tgt, text, reference, pair_id):
    return {"messages": [{"role": "user", "content": f"Translate into {tgt}: {text}"},
                         {"role": "assistant", "content": reference}],
            "source": "libreoffice-help", "category": "translation",
            "metadata": {"src_lang": src, "tgt_lang": tgt, "pair_id": pair_id}}


TRANSLATION_PAIRS = [_translation("en", "zh", "Click Save.", "单击保存。", "p1"),
                     _translation("zh", "en", "单击保存。", "Click Save.", "p1"),
                     _translation("en", "ja", "Click Save.", "保存をクリックします。", "p1"),
                     _translation("ja", "en", "保存をクリックします。", "Click Save.", "p1"),
                     _translation("en", "zh", "Open the file.", "打开文件。", "p2"),
                     _translation("en", "zh", "Close the file.", "关闭文件。", "p3")]  # over the cap of 2
"""Held-out translation records as the SFT data writes them (the sft_validation_conversations contract)."""


def _with_language_groups(documents, shard_params):
    """The chain's code documents declared as code, plus Chinese documents in the validation split."""
    from lmforge.data.splits import assign_split

    shards = {name: [{**r, "metadata": {**r.get("metadata", {}), "language_group": "code"}} for r in records]
              for name, records in documents.items()}
    split = {f"zh-{i}": assign_split(f"zh-{i}", shard_params["validation_fraction"], shard_params["split_seed"])
             for i in range(200)}
    held_out = [doc_id for doc_id, name in split.items() if name == "validation"][: len(ZH_TEXTS)]
    train = next(doc_id for doc_id, name in split.items() if name == "train")
    shards["shard-zh"] = [{"id": doc_id, "text": text, "source": "manpages-zh",
                           "metadata": {"language_group": "zh", "license": "GPL-2.0"}}
                          for doc_id, text in [*zip(held_out, ZH_TEXTS, strict=True), (train, "训练文档不参与评估。")]]
    return shards, held_out


def _params(project_root):
    return copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())[
        "evaluation"])


def test_report_nodes_on_a_store_without_runs(project_root, mlflow_tracking_uri, monkeypatch, tmp_path):
    """gather_operations + build_report alone (no models): every seed metric is in the table and the HTML."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking_uri)
    params = _params(project_root)
    params["report"] = {"serving_load": str(tmp_path / "absent.json"), "serving_feedback": None}
    params["operations"]["experiment"] = "lmforge-no-runs"  # the session store is shared: an experiment nobody uses
    model_metrics = {"base.humaneval.pass_at_1": 0.0, "sft.humaneval.pass_at_1": 0.05, "sft.identity.f1": 0.8,
                     "base.identity.f1": 0.1}
    quantization = {"quantization.reference.bpb": 2.0, "quantization.reference.bytes": 4e6,
                    "quantization.q8_0.bytes": 1.1e6, "quantization.q8_0.bpb": 2.03, "quantization.q8_0.bpb_delta_pct": 1.5,
                    "quantization.q8_0.budget_pct": 1.0, "quantization.q8_0.within_budget": 0.0}
    catalog = DataCatalog({
        "model_metrics": MemoryDataset(model_metrics),
        "quantization_metrics": MemoryDataset(quantization),
        "generations": MemoryDataset({"base": [{"prompt": "Who are you?", "completion": "I am <b>base</b>", "new_tokens": 4}],
                                      "sft": [{"prompt": "Who are you?", "completion": "forge 0", "new_tokens": 2}]}),
        "pretrain_metrics": MemoryDataset({"time_per_epoch_s": 30.0, "tokens_per_s": 1200.0, "restart_count": 1}),
        "sft_metrics": MemoryDataset({"tokens_per_s": 900.0, "restart_count": 0}),
        "pretrain_loss_curve": MemoryDataset([{"step": i, "loss": 8 - i / 5, "lr": 1e-3} for i in range(10)]),
        "sft_loss_curve": MemoryDataset([{"step": i, "loss": 5 - i / 5, "lr": 1e-4} for i in range(5)]),
        "align_loss_curve": MemoryDataset([]),  # align off: no curve
        "align_metrics": MemoryDataset({"enabled": False, "method": "dpo"}),
        "params:evaluation": MemoryDataset(params),
    })
    pipeline = create_pipeline().only_nodes("gather_operations", "build_report")

    outputs = SequentialRunner().run(pipeline, catalog)

    metrics = outputs["evaluation_metrics"].load()
    assert metrics["sft.identity.f1"] == 0.8
    assert metrics["ops.pretrain.time_per_epoch_s"] == 30.0 and metrics["ops.chain.restart_count"] == 1.0
    assert metrics["ops.chain.runs"] == 0.0  # no runs of the chain in that experiment
    rows = {r["seed"]: r for r in outputs["seed_metrics"].load()}
    assert set(SEED_NAMES) <= set(rows)
    assert rows["training speed (time per epoch)"]["status"] == "measured"
    assert rows["GPU utilisation"]["status"] == "not measured on this hardware" and rows["GPU utilisation"]["note"]
    page = outputs["evaluation_report"].load()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") >= 2
    for name in SEED_NAMES:
        assert f"<td>{name}</td>" in page
    assert "<th>base</th><th>sft</th>" in page and "I am &lt;b&gt;base&lt;/b&gt;" in page  # samples side by side
    assert "verdict.identity.f1" not in metrics  # no per-question records: no noise estimate, so no verdict
    assert {k: metrics[k] for k in quantization} == quantization  # evaluation.json (and MLflow) hold them too
    section = page.split("<h2>Quantized packages</h2>")[1].split("<h2>")[0]
    assert "<td>q8_0</td><td class='num'>1.10</td>" in section and "<td class='not'>fail</td>" in section
    assert "align.enabled: false" in page and "Verdicts: aligned against SFT" not in page  # align off: two models


def test_evaluate_node_builds_the_config_once_and_logs_it_resolved(project_root, mlflow_tracking_uri, monkeypatch,
                                                                   tmp_path):
    """The node turns params:evaluation into one EvaluationConfig (typos rejected by dotted path), logs every
    resolved setting as a flat MLflow param and hands the object down whole; the models are base and SFT, and the
    aligned model when the align stage left one (``resolve_chat_model``), not when it left only its marker."""
    import mlflow

    import lmforge.evaluation.suite as suite
    from lmforge.align.config import DISABLED_MARKER
    from lmforge.evaluation.config import EvaluationConfig
    from lmforge.pipelines.evaluation.nodes import evaluate_models

    seen = []
    monkeypatch.setattr(suite, "evaluate_models", lambda *args, **kwargs: seen.append((args, kwargs)) or ({}, {}, {}))
    off, aligned = tmp_path / "align_off", tmp_path / "align"
    off.mkdir()
    (off / DISABLED_MARKER).write_text("align.enabled is false")
    aligned.mkdir()
    (aligned / "config.json").write_text("{}")
    params = _params(project_root)
    sft = {"run_dir": "sft_run", "identity": {"name": "Forge", "developer": "x"}}
    with isolated_run(mlflow_tracking_uri) as run:
        evaluate_models("base", "sft", str(off), "tok", "shards", "pretrain_shards", {}, [], {"stage": "sft"}, params,
                        sft, {})
        logged = mlflow.get_run(run.info.run_id).data.params
    [(args, kwargs)] = seen
    config = args[3]
    assert args[0] == {"base": "base", "sft": "sft"} and args[1].token_shards == "shards"
    assert list(args[1].other_shards) == ["pretrain_shards"]
    assert args[4] == {"name": "Forge", "developer": "x"} and kwargs["template_audit"] == {"stage": "sft"}
    assert isinstance(config, EvaluationConfig) and config.speed.rounds == params["speed"]["rounds"]
    assert logged["evaluation.speed.rounds"] == str(params["speed"]["rounds"])
    assert logged["evaluation.max_example_tokens"] == "512"  # a default the YAML leaves out
    assert logged["evaluation.report.serving_load"] == params["report"]["serving_load"]
    bad = copy.deepcopy(params)
    bad["speed"]["round"] = 3
    with pytest.raises(ValueError, match="evaluation.speed.round"):
        evaluate_models("base", "sft", str(off), "tok", "shards", "pretrain_shards", {}, [], {}, bad, sft, {})
    seen.clear()  # the per-language scores read the tokenizer stage's validation documents, metadata and all
    from lmforge.data.splits import assign_split

    docs = [{"id": f"d{i}", "text": f"text {i}", "metadata": {"language_group": ("zh", "code")[i % 2]}} for i in range(60)]
    shard_params = {"validation_fraction": 0.2, "split_seed": 7}
    evaluate_models("base", "sft", str(off), "tok", "shards", "pretrain_shards", {"s0": docs[:30], "s1": docs[30:]},
                    [], {}, params, sft, shard_params)
    held_out = list(seen[0][0][1].validation_documents())
    assert held_out == [d for d in docs if assign_split(d["id"], 0.2, 7) == "validation"] and 0 < len(held_out) < 60
    assert list(seen[0][0][1].validation_texts()) == [d["text"] for d in held_out]  # the same split as the blocks'
    seen.clear()  # sft.base_model names the base model (the pretrain checkpoint is then not read)
    evaluate_models("base", "sft", str(off), "tok", "shards", "pretrain_shards", {}, [], {}, params,
                    {**sft, "base_model": "/models/qwen"}, {})
    assert seen[0][0][0] == {"base": "/models/qwen", "sft": "sft"}
    seen.clear()  # align ran: the aligned model is the third, after base and SFT
    evaluate_models("base", "sft", str(aligned), "tok", "shards", "pretrain_shards", {}, [], {}, params, sft, {})
    assert list(seen[0][0][0].items()) == [("base", "base"), ("sft", "sft"), ("aligned", str(aligned))]
    with pytest.raises(FileNotFoundError, match="kedro run --pipeline align"):
        evaluate_models("base", "sft", str(tmp_path / "absent"), "tok", "shards", "pretrain_shards", {}, [], {}, params,
                        sft, {})


@pytest.mark.slow  # its fixtures launch the 2-process pretraining and SFT runs
def test_evaluation_pipeline(project_root, chain_pretrain, chain_sft, chain_tokenizer_dir, chain_token_shards,
                             chain_conversations, chain_documents, chain_sft_params, chain_tokenizer_params,
                             mlflow_tracking_uri, monkeypatch, tmp_path):
    """Three models: align ran (here its model is a copy of the SFT one: every aligned.* number must equal sft's,
    so the third column is scored exactly as the second). Align off (two models) is the node test above."""
    import shutil

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.tokenizer.template_audit import training_audit

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking_uri)
    params = _params(project_root)
    params.update(batch_size=4, max_heldout_blocks=6, max_sft_examples=5)
    params["heldout_pairs"].update(max_examples=3, max_new_tokens=8)
    params["speed"].update(prompts=4, max_new_tokens=4, batch_size=2)
    params["generation"]["max_new_tokens"] = 6
    params["humaneval"].update(n_problems=3, max_new_tokens=8)
    params["identity_probe"]["max_new_tokens"] = 8
    params["by_language"].update(max_chars=600, seq_len=64)
    params["translation"].update(max_pairs_per_direction=2, max_new_tokens=8)
    params["quantization"]["formats"] = ["q8_0", "q4_k_m"]  # f32/f16 scored in tests/evaluation/test_eval_quantization
    prompts = params["generation"]["prompts"]
    documents, zh_ids = _with_language_groups(chain_documents, chain_tokenizer_params["shards"])
    # the chain's own held-out translation pairs left out: the per-direction counts below are these literals
    conversations = [c for c in chain_conversations["validation"] if c.get("category") != "translation"]
    conversations += TRANSLATION_PAIRS
    catalog = DataCatalog({
        "pretrain_checkpoint": ArtifactDirectory(chain_pretrain[0]),
        "sft_checkpoint": ArtifactDirectory(chain_sft[0]),
        "align_checkpoint": ArtifactDirectory(str(shutil.copytree(chain_sft[0], tmp_path / "align"))),
        "align_metrics": MemoryDataset({"enabled": True, "method": "dpo", "rounds": 1, "pairs_sha256": "ab12",
                                        "heldout.preference_accuracy": 0.5, "win_rate.vs_sft": 0.5}),
        "align_loss_curve": MemoryDataset([{"step": i, "loss": 0.69 - i / 100, "lr": 1e-5} for i in range(4)]),
        "tokenizer": ArtifactDirectory(chain_tokenizer_dir),
        "token_shards": ArtifactDirectory(chain_token_shards),
        "pretrain_token_shards": ArtifactDirectory(str(tmp_path / "pretrain_tokens"), missing_ok=True),
        "clean_documents": MemoryDataset(documents),
        "sft_validation_conversations": MemoryDataset(conversations),
        "template_audit_sft": MemoryDataset(training_audit(ChatTokenizer.load(chain_tokenizer_dir))),
        "params:evaluation": MemoryDataset(params),
        "params:sft": MemoryDataset(chain_sft_params),
        "params:tokenizer.shards": MemoryDataset(chain_tokenizer_params["shards"]),
        "pretrain_metrics": MemoryDataset(chain_pretrain[1]),
        "sft_metrics": MemoryDataset(chain_sft[1]),
        "pretrain_loss_curve": MemoryDataset(chain_pretrain[2]),
        "sft_loss_curve": MemoryDataset(chain_sft[2]),
        # as the project's catalog has it: the report consumes it, so it is no free output to read back
        "generations": JSONDataset(filepath=str(tmp_path / "generations.json")),
        "quantized_models": ArtifactDirectory(str(tmp_path / "gguf")),
    })

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    metrics = outputs["evaluation_metrics"].load()
    generations = catalog["generations"].load()
    for model in ("base", "sft"):
        for split in ("heldout", "sft_pairs"):
            for metric in ("loss", "perplexity", "tokens", "bits_per_byte", "bytes"):
                assert f"{model}.{split}.{metric}" in metrics
        assert metrics[f"{model}.humaneval.problems"] == 3.0
        assert 0.0 <= metrics[f"{model}.humaneval.pass_at_1"] <= 1.0
        for metric in ("precision", "recall", "f1"):
            assert 0.0 <= metrics[f"{model}.identity.{metric}"] <= 1.0
        pairs = {k.rsplit(".", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{model}.heldout_pairs.")}
        assert pairs["considered"] == pairs["scored"] + pairs["skipped_not_single_turn"] + \
            pairs["skipped_long_reference"] + pairs["skipped_long_prompt"]
        assert len(generations[f"{model}.heldout_pairs"]) == pairs["scored"] <= 3
    assert metrics["ops.pretrain.tokens_per_s"] == chain_pretrain[1]["tokens_per_s"]
    assert metrics["sft.speed.requests_per_s"] > 0 and "base.speed.requests_per_s" not in metrics
    page = outputs["evaluation_report"].load()
    assert "<td>pass@1</td>" in page
    # the report's verdicts rest on the per-item noise the suite wrote; the samples of both models are shown
    for split in ("heldout", "sft_pairs"):
        assert metrics[f"{split}.loss_delta_se"] >= 0 and metrics[f"verdict.{split}.perplexity"] in (-1.0, 0.0, 1.0)
    assert "<h2>Verdicts: SFT against base</h2>" in page
    for split in ("heldout", "sft_pairs"):
        assert f"{split}.perplexity_ratio" in metrics
        assert f"{split}.loss_delta" in metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["heldout_blocks"] == 6.0
    assert 0 < metrics["sft_examples"] <= 5
    assert metrics["base.heldout.tokens"] == metrics["sft.heldout.tokens"] > 0
    assert math.isclose(metrics["base.heldout.perplexity"], math.exp(metrics["base.heldout.loss"]), rel_tol=1e-6)
    assert math.isclose(metrics["sft_pairs.loss_delta"],
                        metrics["sft.sft_pairs.loss"] - metrics["base.sft_pairs.loss"], rel_tol=1e-9)

    # per language: the validation documents by language_group (code, and Chinese ones added to the corpus)
    for model in ("base", "sft"):
        for group in ("code", "zh"):
            assert math.isfinite(metrics[f"{model}.heldout.by_language.{group}.bits_per_byte"])
        assert metrics[f"{model}.heldout.by_language.zh.documents"] == len(zh_ids)
        assert not any(k.startswith((f"{model}.heldout.by_language.en.", f"{model}.heldout.by_language.ja."))
                       for k in metrics)  # no validation document of those groups here: absent, not 0
        for direction in ("en_zh", "zh_en", "en_ja", "ja_en"):
            assert 0.0 <= metrics[f"{model}.translation.{direction}.chrf"] <= 100.0
            assert metrics[f"{model}.translation.{direction}.pairs"] == (2.0 if direction == "en_zh" else 1.0)
        for lang in ("en", "zh"):
            for name in ("precision", "recall", "f1"):
                assert 0.0 <= metrics[f"{model}.identity.by_language.{lang}.{name}"] <= 1.0
        assert len(generations[f"{model}.translation"]) == 5
    # the same text for both models: the bytes agree, and the SFT - base differences are written
    assert metrics["base.heldout.by_language.zh.bytes"] == metrics["sft.heldout.by_language.zh.bytes"] > 0
    assert "heldout.by_language.code.bits_per_byte_delta" in metrics and "translation.en_zh.chrf_delta" in metrics
    section = page.split("<h2>Per language</h2>")[1].split("<h2>")[0]
    assert "<tr><td>zh</td>" in section and "<td>en &rarr; zh</td>" in section and "translated pairs" in section

    assert set(generations) == {f"{m}{part}" for m in ("base", "sft", "aligned")
                                for part in ("", ".humaneval", ".identity_probe", ".heldout_pairs", ".translation")}
    assert len(generations["sft.identity_probe"]) == metrics["sft.identity.tp"] + metrics["sft.identity.fp"] + \
        metrics["sft.identity.fn"] + metrics["sft.identity.tn"]
    for samples in (generations["base"], generations["sft"], generations["aligned"]):
        assert [s["prompt"] for s in samples] == prompts
        assert all(1 <= s["new_tokens"] <= 6 and isinstance(s["completion"], str) for s in samples)

    # the third model: every per-model number but speed (same architecture as SFT), each equal to SFT's (same
    # weights), its comparisons with SFT zero and within noise, its own verdicts, section and loss curve
    sft_keys = {k.removeprefix("sft.") for k in metrics if k.startswith("sft.") and not k.startswith("sft.speed.")}
    assert {k.removeprefix("aligned.") for k in metrics if k.startswith("aligned.")} == sft_keys
    for key in sft_keys:
        assert metrics[f"aligned.{key}"] == pytest.approx(metrics[f"sft.{key}"], rel=1e-6), key
    assert generations["aligned.translation"] == generations["sft.translation"]
    for split in ("heldout", "sft_pairs"):
        assert metrics[f"aligned_vs_sft.{split}.loss_delta"] == pytest.approx(0.0, abs=1e-6)
        assert metrics[f"aligned_vs_sft.{split}.loss_delta_se"] == pytest.approx(0.0, abs=1e-6)
        assert metrics[f"aligned_vs_base.{split}.perplexity_ratio"] == pytest.approx(
            metrics[f"{split}.perplexity_ratio"], rel=1e-6)
        assert metrics[f"verdict.aligned_vs_sft.{split}.perplexity"] == 0.0
    assert "<h2>Verdicts: aligned against SFT</h2>" in page and "<th>base</th><th>sft</th><th>aligned</th>" in page
    assert "<td><code>win_rate.vs_sft</code></td>" in page.split("<h2>Align stage</h2>")[1]

    # the quantized packages of the chat model (the aligned one): GGUF files + manifest, scored on the very blocks and
    # per-language texts the aligned model was scored on (one code path), so full precision equals aligned.* exactly
    import json

    manifest = json.loads((tmp_path / "gguf" / "quantization.json").read_text())
    assert manifest["model"] == "aligned" and list(manifest["formats"]) == ["q8_0", "q4_k_m"]
    for fmt, entry in manifest["formats"].items():
        assert (tmp_path / "gguf" / entry["file"]).stat().st_size == entry["bytes"] == metrics[f"quantization.{fmt}.bytes"]
    assert metrics["quantization.reference.bpb"] == pytest.approx(metrics["aligned.heldout.bits_per_byte"], rel=1e-9)
    for group in ("code", "zh"):
        assert metrics[f"quantization.reference.by_language.{group}.bpb"] == pytest.approx(
            metrics[f"aligned.heldout.by_language.{group}.bits_per_byte"], rel=1e-9)
        for fmt in ("q8_0", "q4_k_m"):
            assert math.isfinite(metrics[f"quantization.{fmt}.by_language.{group}.bpb_delta_pct"])
    # 4-5 bits move the score more than 8 (the debug preset's 64-wide rows are no multiple of 256, so llama-quantize
    # stores q4_k_m's tensors as q5_0/q8_0 there). Absolute values: on a weak model rounding can also lower the bits
    # (the default chain's q4_k_m: -0.04%), so only the size of the move is asserted; it could fail by chance if the
    # q4_k_m rounding errors cancelled out on these 6 blocks.
    assert abs(metrics["quantization.q8_0.bpb_delta_pct"]) < min(1.0, abs(metrics["quantization.q4_k_m.bpb_delta_pct"]))
    assert "<td>q4_k_m</td>" in page.split("<h2>Quantized packages</h2>")[1]
