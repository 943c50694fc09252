"""packaging pipeline on an in-memory catalog: SFT checkpoint + tokenizer -> a loadable HF model directory."""

from __future__ import annotations

import copy

import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from lmforge.pipelines.datasets import ArtifactDirectory
from lmforge.pipelines.packaging import create_pipeline


@pytest.mark.slow  # its fixtures launch the 2-process pretraining and SFT runs
def test_packaging_pipeline(tmp_path, project_root, chain_sft, chain_pretrain, chain_tokenizer_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

    params = copy.deepcopy(yaml.safe_load((project_root / "conf/base/parameters_packaging.yml").read_text())[
        "packaging"])
    params["model_name"] = "lmforge-chat-test"
    sha256 = SentencePieceTokenizer.from_file(f"{chain_tokenizer_dir}/tokenizer.model").sha256
    package_dir = tmp_path / "data/07_model_output/lmforge-chat"
    catalog = DataCatalog({
        "sft_checkpoint": ArtifactDirectory(chain_sft[0]),
        "tokenizer": ArtifactDirectory(chain_tokenizer_dir),
        "data_processing_metrics": MemoryDataset({"records_in": 30, "records_out": 28}),
        "tokenizer_metrics": MemoryDataset({"vocab_size": 400, "sha256": sha256}),
        "pretrain_metrics": MemoryDataset(chain_pretrain[1]),
        "sft_metrics": MemoryDataset(chain_sft[1]),
        "evaluation_metrics": MemoryDataset({"sft.heldout.perplexity": 90.5, "heldout.perplexity_ratio": 1.1}),
        "params:packaging": MemoryDataset(params),
        "packaged_model": ArtifactDirectory(str(package_dir)),
    })

    outputs = SequentialRunner().run(create_pipeline(), catalog)

    metrics = outputs["packaging_metrics"].load()
    assert metrics["loads"] is True
    assert metrics["generated_tokens"] >= 1
    assert metrics["package_bytes"] == sum(p.stat().st_size for p in package_dir.rglob("*") if p.is_file())

    card = (package_dir / "README.md").read_text(encoding="utf-8")
    assert "lmforge-chat-test" in card
    assert sha256 in card
    assert "debug" in card  # the preset, from the pretrain metrics

    model = AutoModelForCausalLM.from_pretrained(str(package_dir), dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(package_dir), local_files_only=True)
    assert tokenizer.chat_template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                           tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:]), str)
