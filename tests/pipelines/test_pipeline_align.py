"""align pipeline on an in-memory catalog: preference files + identity pairs + one on-policy round -> aligned
checkpoint; and switched off, the marker that hands the later stages the SFT model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from lmforge.pipelines.align import create_pipeline
from lmforge.pipelines.datasets import ArtifactDirectory, JSONLinesDataset


@pytest.fixture
def align_params(project_root, tmp_path) -> dict:
    """conf/base/parameters_align.yml, one small on-policy round, 6 steps on 2 processes, a tmp run_dir."""
    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_align.yml").read_text())["align"])
    params["on_policy"].update(prompts_per_round=8, k=2, max_new_tokens=8, heldout_prompts=8)
    params["train"].update(max_steps=6, warmup_steps=1, checkpoint_every=3, lr=1e-3)
    params["max_length"], params["max_prompt_length"] = 256, 192
    params["launch"].update(nproc_per_node=2, timeout_s=300)
    params["run_dir"] = str(tmp_path / "align_run")
    return params


def _catalog(tmp_path: Path, params: dict, sft_params: dict, sft_checkpoint: str, tokenizer: str,
             conversations: dict, deepspeed_templates: dict) -> DataCatalog:
    return DataCatalog({
        "params:align": MemoryDataset(params), "params:sft": MemoryDataset(sft_params),
        "sft_checkpoint": ArtifactDirectory(sft_checkpoint), "tokenizer": ArtifactDirectory(tokenizer),
        "sft_train_conversations": MemoryDataset(conversations["train"]),
        "sft_validation_conversations": MemoryDataset(conversations["validation"]),
        "deepspeed_templates": MemoryDataset(deepspeed_templates),
        "align_checkpoint": ArtifactDirectory(str(tmp_path / "data/06_models/align")),
        "align_pairs": JSONLinesDataset(str(tmp_path / "data/04_feature/align_pairs.jsonl")),
        "align_quarantine": JSONLinesDataset(str(tmp_path / "data/04_feature/align_quarantine.jsonl")),
        "align_samples": JSONLinesDataset(str(tmp_path / "data/08_reporting/align_samples.jsonl")),
    })


def test_align_pipeline_switched_off_hands_on_the_sft_model(tmp_path, align_params, chain_sft_params):
    from lmforge.align.chat_model import DISABLED_MARKER, resolve_chat_model

    align_params["enabled"] = False
    sft, tokenizer = tmp_path / "sft", tmp_path / "tokenizer"
    for folder in (sft, tokenizer):  # never read: the stage only writes its marker
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    catalog = _catalog(tmp_path, align_params, chain_sft_params, str(sft), str(tokenizer),
                       {"train": [], "validation": []}, {})

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    align_dir = tmp_path / "data/06_models/align"
    assert [p.name for p in align_dir.iterdir()] == [DISABLED_MARKER]
    assert outputs["align_metrics"].load() == {"enabled": False, "data": {"enabled": False}}
    assert catalog["align_pairs"].load() == [] and outputs["align_loss_curve"].load() == []
    assert resolve_chat_model(str(align_dir), str(sft)) == (str(sft), "sft")


@pytest.mark.slow
def test_align_pipeline(tmp_path, align_params, chain_sft_params, chain_sft, chain_tokenizer_dir, chain_conversations,
                        deepspeed_templates):
    """A preference file with a bad record, the identity pairs and one on-policy round on the chain's SFT model:
    the bad record quarantined with file:line, counts that reconcile, every pair kept with its origin, every
    sampled candidate with its reward, a trained 2-process LoRA checkpoint (only the adapted weights move) that
    carries the template, and the win rate."""
    import torch
    from transformers import AutoModelForCausalLM

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("\n".join([
        json.dumps({"prompt": "Say hello.", "chosen": "Hello!", "rejected": "No."}),
        json.dumps({"prompt": [{"role": "user", "content": "Name a colour."}], "chosen": "Blue.", "rejected": "7"}),
        json.dumps({"prompt": "Same?", "chosen": "yes", "rejected": "yes"}),  # chosen == rejected
        "{not json",
    ]) + "\n")
    align_params["sources"] = [{"name": "mine", "path": str(prefs), "format": "pairs"}]
    align_params["finetuning"] = "lora"  # adapters on q and v only, merged; the reference: the model without them
    align_params["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    align_params["train"]["lr"] = 1e-2
    catalog = _catalog(tmp_path, align_params, chain_sft_params, chain_sft[0], chain_tokenizer_dir,
                       chain_conversations, deepspeed_templates)

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    metrics = outputs["align_metrics"].load()
    assert metrics["enabled"] and metrics["method"] == "dpo" and metrics["world_size"] == 2 and metrics["rounds"] == 1
    assert metrics["network"]["allreduce_ranks"] == 2 and metrics["network"]["allreduce_busbw_gbps"] > 0
    mine = metrics["data"]["sources"]["mine"]
    assert (mine["read"], mine["kept"], mine["quarantined"]) == (4, 2, 2)
    quarantine = catalog["align_quarantine"].load()
    assert sorted(q["origin"] for q in quarantine) == [f"{prefs}:3", f"{prefs}:4"]
    pairs = catalog["align_pairs"].load()
    assert len(pairs) == metrics["pairs_trained"] == metrics["by_round"][0]["pairs"]
    sources = {p["source"] for p in pairs}
    assert {"mine", "identity"} <= sources  # held-out pairs are split off by prompt: some of each stay in training
    on_policy = [p for p in pairs if p["source"] == "on_policy"]
    assert all(p["scores"]["chosen"] > p["scores"]["rejected"] for p in on_policy)
    samples = catalog["align_samples"].load()
    candidates = [s for s in samples if s.get("kind") != "win_rate"]
    assert len(candidates) == 2 * metrics["by_round"][0]["sampling"]["prompts"]  # k answers per prompt, each scored
    assert all(isinstance(s["reward"], float) for s in candidates)
    assert 0.0 <= metrics["win_rate"]["vs_sft"] <= 1.0 and metrics["win_rate"]["items"] > 0
    assert "preference_accuracy" in metrics["heldout"]
    curve = outputs["align_loss_curve"].load()
    assert [r["step"] for r in curve] == list(range(6)) and all("accuracy" in r and "margin" in r for r in curve)

    aligned_dir = tmp_path / "data/06_models/align"
    assert (aligned_dir / "tokenizer_config.json").is_file() and (aligned_dir / "generation_config.json").is_file()
    assert (aligned_dir / "adapter" / "adapter_config.json").is_file()  # the adapter kept beside the merged weights
    aligned = AutoModelForCausalLM.from_pretrained(aligned_dir, dtype=torch.float32).state_dict()
    sft = AutoModelForCausalLM.from_pretrained(chain_sft[0], dtype=torch.float32).state_dict()
    changed = {k for k in sft if not torch.equal(aligned[k], sft[k])}
    assert changed and all(".q_proj." in k or ".v_proj." in k for k in changed)
    assert metrics["trainable_params"] < metrics["model_params"] / 5
