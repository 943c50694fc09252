"""SFT training options: base model / tokenizer rule, packed batches and token accounting, a real 2-process LoRA run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.config import build_dataclass
from lmforge.model.base_model import check_vocab_fits
from lmforge.training.sft import SftBatches, count_seen_tokens, resolve_sft_sources
from lmforge.training.sft_config import SftConfig


def parse_sft_config(params: dict) -> SftConfig:
    return build_dataclass(SftConfig, {"run_dir": "run", **params}, path="sft")


def sft_config(**fields) -> SftConfig:
    return SftConfig(run_dir="run", **fields)


def test_defaults_and_typos():
    args = parse_sft_config({"train": {}, "max_length": 64})
    assert (args.finetuning, args.packing, args.base_model) == ("full", True, None)
    lora = parse_sft_config({"finetuning": "lora", "lora": {"r": 4, "target_modules": ["q_proj"]}})
    assert lora.lora.r == 4 and lora.lora.target_modules == ["q_proj"]
    with pytest.raises(ValueError, match="sft.lora.rank"):
        parse_sft_config({"lora": {"rank": 4}})
    with pytest.raises(ValueError, match="'full' or 'lora'"):
        sft_config(finetuning="qlora")


@pytest.mark.parametrize("env", ["base", "gpu"])
def test_shipped_parameters_parse(project_root, env):
    import yaml

    params = yaml.safe_load((project_root / f"conf/{env}/parameters_sft.yml").read_text())["sft"]
    args = parse_sft_config(params)
    assert args.finetuning == "full" and args.packing is True
    if env == "gpu":  # the defaults
        assert params["train"]["lr"] == 5e-5 and params["train"]["micro_batch_size"] == 8
        assert params["train"]["gradient_accumulation_steps"] == 1 and params["deepspeed"]["zero_stage"] == 2


def _model_dir(path: Path, vocab_size: int = 400, tokenizer_files: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": vocab_size}))
    for name, text in (tokenizer_files or {}).items():
        (path / name).write_text(text)
    return path


def test_base_model_and_tokenizer_rule(tmp_path):
    pretrain = _model_dir(tmp_path / "pretrain")
    stage_tok = str(tmp_path / "tokenizer")
    # default: the pretrain checkpoint with the tokenizer stage's tokenizer
    assert resolve_sft_sources(str(pretrain), stage_tok, sft_config()) == (str(pretrain), stage_tok)
    # an HF dir without tokenizer files: the stage's tokenizer
    bare = _model_dir(tmp_path / "bare")
    assert resolve_sft_sources(str(pretrain), stage_tok, sft_config(base_model=str(bare))) == (str(bare), stage_tok)
    # an HF dir with a tokenizer of any kind: its own (a foreign model, or a continued-pretraining checkpoint)
    for files in ({"tokenizer.json": "{}", "tokenizer_config.json": "{}"},
                  {"tokenizer.model": "x", "tokenizer_config.json": "{}"}):
        own = _model_dir(tmp_path / f"own{len(list(tmp_path.iterdir()))}", tokenizer_files=files)
        assert resolve_sft_sources(str(pretrain), stage_tok, sft_config(base_model=str(own))) == (str(own), str(own))
        assert resolve_sft_sources(str(own), stage_tok, sft_config()) == (str(own), str(own))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_sft_sources(str(pretrain), stage_tok, sft_config(base_model=str(tmp_path)))
    check_vocab_fits(str(pretrain), 400, where="sft.base_model")
    with pytest.raises(ValueError, match="embeds 400 tokens but the tokenizer has 512"):
        check_vocab_fits(str(pretrain), 512, where="sft.base_model")


def _examples():
    out = []
    for k, n in enumerate([5, 9, 3, 12, 7, 4, 8, 6]):
        ids = list(range(10, 10 + n))
        out.append((f"ex{k}", ids, [-100, -100] + ids[2:]))
    return out


@pytest.mark.parametrize("packing", [True, False])
def test_batches_count_real_and_trained_tokens(packing):
    from types import SimpleNamespace

    batches = SftBatches(_examples(), pad_id=0, packing=packing, seq_len=16, seed=0)
    lengths = [len(ids) for _, ids, _ in _examples()]
    assert sum(batches.real_tokens) == sum(lengths)
    # labels: the first two tokens of every example are masked
    assert sum(batches.trained_tokens) == sum(n - 2 for n in lengths)
    assert batches.stats["trained_token_fraction"] == pytest.approx(sum(n - 2 for n in lengths) / sum(lengths))
    if packing:
        assert len(batches) < 8 and batches.stats["packing_efficiency"] == pytest.approx(54 / (len(batches) * 16))
    batch = batches.collate([0, 1])
    assert batch["input_ids"].shape[0] == 2
    assert int((batch["labels"] != -100).sum()) == batches.trained_tokens[0] + batches.trained_tokens[1]

    train = SimpleNamespace(max_steps=3, gradient_accumulation_steps=2, micro_batch_size=2, seed=0)
    real, trained = count_seen_tokens(batches, train, world_size=2)
    # 3 steps x 2 micro x 2 ranks x 2 items = 24 items: whole epochs of the items plus a remainder
    from lmforge.training.data import sample_indices

    seen = [int(j) for s in range(3) for m in range(2) for r in range(2)
            for j in sample_indices(s, m, r, world_size=2, micro_batch_size=2, accumulation=2,
                                    n_items=len(batches), seed=0)]
    assert len(seen) == 24
    assert real == sum(batches.real_tokens[j] for j in seen)
    assert trained == sum(batches.trained_tokens[j] for j in seen)


@pytest.mark.slow
def test_lora_run_two_processes_and_exact_resume(tmp_path, chain_sft_examples, chain_pretrain, chain_tokenizer_dir,
                                                 deepspeed_templates, training_params_factory, sft_config_factory):
    """Real DeepSpeed ZeRO-2 LoRA runs on 2 CPU processes, packed: loss falls, only the adapted weights change,
    and a run killed right after its step-5 checkpoint resumes to the same losses (resume as in pretraining)."""
    import torch
    from safetensors.torch import load_file

    from lmforge.training.jobs import run_sft
    from lmforge.training.launch import TrainingError
    from lmforge.training.lora import merge_adapter

    validation = chain_sft_examples[-8:]  # the chain's held-out conversations are all over 256 tokens

    def run(run_dir, **faults):
        params = training_params_factory(run_dir, steps=10, lr=1e-2, max_length=256, finetuning="lora",
                                         lora={"r": 8, "alpha": 16, "dropout": 0.0,
                                               "target_modules": ["q_proj", "v_proj"]})
        params["train"].update(checkpoint_every=5, fault_injection=faults)
        return run_sft(chain_sft_examples, chain_pretrain[0], chain_tokenizer_dir, deepspeed_templates,
                       sft_config_factory(params), validation_examples=validation)

    checkpoint, metrics, curve = run(tmp_path / "full")

    assert metrics["finetuning"] == "lora" and metrics["world_size"] == 2 and len(curve) == 10
    assert metrics["final_loss"] < metrics["initial_loss"]
    assert 0 < metrics["trainable_params"] < metrics["model_params"] / 5
    assert 0.5 < metrics["packing_efficiency"] <= 1.0
    assert metrics["real_tokens"] <= metrics["tokens"] == 10 * 2 * 4 * 256  # packed rows of max_length
    assert 0 < metrics["trained_tokens"] < metrics["real_tokens"]
    assert metrics["validation_examples"] == 8
    assert metrics["validation_loss"] < metrics["validation_loss_initial"]  # seen examples: the adapters learned them

    tuned = load_file(Path(checkpoint) / "model.safetensors")
    base = load_file(Path(chain_pretrain[0]) / "model.safetensors")
    assert tuned.keys() == base.keys()
    changed = {k for k in base if not torch.equal(tuned[k], base[k])}
    assert changed and all(".q_proj." in k or ".v_proj." in k for k in changed)
    assert any(".q_proj." in k for k in changed) and any(".v_proj." in k for k in changed)
    # the adapter is kept and merges into exactly the checkpoint's weights
    adapter = Path(checkpoint) / "adapter"
    again = load_file(merge_adapter(adapter, tmp_path / "merged") / "model.safetensors")
    assert all(torch.equal(again[k], tuned[k]) for k in tuned)
    shutil.rmtree(tmp_path / "merged")

    with pytest.raises(TrainingError):
        run(tmp_path / "killed", kill_after_checkpoint_step=5)
    resumed_checkpoint, resumed, resumed_curve = run(tmp_path / "killed")

    assert resumed["restart_count"] == 1 and metrics["restart_count"] == 0
    assert [r["loss"] for r in resumed_curve] == [r["loss"] for r in curve]
    assert resumed["real_tokens"] == metrics["real_tokens"]
    resumed_w = load_file(Path(resumed_checkpoint) / "model.safetensors")
    assert all(torch.equal(resumed_w[k], tuned[k]) for k in tuned)


def _random_causal_lm(family, tmp_path):
    """A foreign test model, or (qwen3, gemma2, gemma3_text) a tiny random model of that architecture."""
    import torch
    from foreign_models import FAMILIES, build_foreign_model
    from transformers import AutoConfig, AutoModelForCausalLM

    if family in FAMILIES:
        return AutoModelForCausalLM.from_pretrained(build_foreign_model(family, tmp_path / family), dtype=torch.float32)
    config = AutoConfig.for_model(family, vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  max_position_embeddings=512)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


@pytest.mark.parametrize("family", ["qwen2", "gemma", "llama3", "bloom", "qwen3", "gemma2", "gemma3_text"])
def test_packing_is_checked_exact_per_architecture(family, tmp_path):
    """A packed row trains like its examples alone where transformers masks by position ids (Llama, Qwen2/3,
    Gemma 1-3 incl. Gemma 2's sliding window and soft-capping); BLOOM's ALiBi attends across the examples of
    a row, so the worker's check finds it and SFT trains unpacked."""
    import torch

    from lmforge.training.sft import SftBatches, packing_mismatch

    model = _random_causal_lm(family, tmp_path)
    g = torch.Generator().manual_seed(0)
    examples = []
    for k, n in enumerate((9, 13, 6, 20)):
        ids = torch.randint(10, 1000, (n,), generator=g).tolist()
        examples.append((f"e{k}", ids, [-100] * 3 + ids[3:]))
    batches = SftBatches(examples, pad_id=0, packing=True, seq_len=32, seed=0)
    assert any(len(row) > 1 for row in batches.rows)
    model.train()
    mismatch = packing_mismatch(model, batches)
    if family == "bloom":
        assert mismatch is not None and mismatch > 1e-3
    else:
        assert mismatch is None
    assert model.training  # the check leaves the model as it found it
