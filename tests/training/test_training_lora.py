"""LoRA: only adapters train; the merged model loads without peft and computes the adapter model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.training.lora import LoraArgs, apply_lora, is_adapter_dir, merge_adapter


def _trained_like_adapter(model_dir, targets=("q_proj", "v_proj")):
    """A LoRA model whose B matrices are non-zero (fresh adapters start at B = 0, i.e. no change)."""
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = apply_lora(base, LoraArgs(r=4, alpha=8, dropout=0.0, target_modules=list(targets)))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return model.eval()


def test_only_adapter_parameters_train(tiny_model_dir):
    model = _trained_like_adapter(tiny_model_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert all(".q_proj." in n or ".v_proj." in n for n in trainable)
    assert not any(".k_proj." in n for n in trainable)


def test_all_linear_adapts_every_linear_layer_of_any_architecture(tmp_path):
    import torch
    from foreign_models import build_foreign_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(build_foreign_model("bloom", tmp_path / "bloom"), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"match no module.*query_key_value"):  # BLOOM names its projections its way
        apply_lora(base, LoraArgs())
    model = apply_lora(base, LoraArgs(target_modules=["all-linear"]))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}  # not the output head
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_unknown_target_module_is_named(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\['qkv'\] match no module.*q_proj"):
        apply_lora(base, LoraArgs(target_modules=["q_proj", "qkv"]))
    with pytest.raises(ValueError, match="lora.r"):
        LoraArgs(r=0)


def test_merged_model_loads_without_peft_and_matches_adapter_logits(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    model = _trained_like_adapter(tiny_model_dir)
    adapter_dir = tmp_path / "adapter"
    model.save_pretrained(adapter_dir)
    assert is_adapter_dir(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)

    merged_dir = merge_adapter(adapter_dir, tmp_path / "merged")  # base found through the adapter config

    assert not is_adapter_dir(merged_dir) and (Path(merged_dir) / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, local_files_only=True).eval()
    assert type(merged).__name__ == "LlamaForCausalLM"  # plain transformers, no peft wrapper
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 17, 42, 99, 7, 250, 3, 64]])
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
        merged_logits = merged(input_ids=ids).logits
        base_logits = base(input_ids=ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-3  # the adapter does change the model


def test_merge_refuses_a_directory_without_adapter(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter"):
        merge_adapter(tiny_model_dir, tmp_path / "out")


def test_packaging_merges_an_adapter_directory(tiny_model_dir, tiny_tokenizer_dir, tmp_path):
    """packaging handed a LoRA adapter writes plain merged weights (no adapter files, loads without peft)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.packaging.export import ModelCardInfo, package_model

    model = _trained_like_adapter(tiny_model_dir)
    model.save_pretrained(tmp_path / "adapter")
    out = package_model(tmp_path / "adapter", tiny_tokenizer_dir, tmp_path / "pkg", card=ModelCardInfo("tiny-lora"))

    assert not is_adapter_dir(out) and sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "pkg"]
    packaged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, local_files_only=True).eval()
    ids = torch.tensor([[1, 17, 42, 99, 7]])
    with torch.no_grad():
        assert torch.allclose(packaged(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4)
