"""The align worker: real 2-process ZeRO-3 preference runs, exact resume after a kill, a frozen reference, prompt
tokens without loss, and preference accuracy that rises."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest


def _sft_model(tmp_path: Path, build_model, tiny_tokenizer_dir) -> Path:
    """A tiny random Llama with its tokenizer (and the one chat template) in the directory: an 'SFT model'."""
    model = build_model(tmp_path / "sft", seed=1)
    for item in Path(tiny_tokenizer_dir).iterdir():
        shutil.copy(item, Path(model) / item.name)
    return Path(model)


def _pairs(n: int = 16, seed: int = 0) -> list[dict]:
    """Token-level pairs: a shared prompt (labels -100), chosen = a fixed answer, rejected = a random one."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [3] + [rng.randrange(10, 290) for _ in range(rng.randrange(4, 9))]
        chosen = [50, 51, 52, 53, 4]  # the same preferred answer (then <|im_end|>, id 4) to every prompt
        rejected = [rng.randrange(100, 290) for _ in range(rng.randrange(3, 7))] + [4]
        out.append({"id": f"p{i}",
                    "chosen_input_ids": prompt + chosen, "chosen_labels": [-100] * len(prompt) + chosen,
                    "rejected_input_ids": prompt + rejected, "rejected_labels": [-100] * len(prompt) + rejected})
    return out


def _config(run_dir: Path, *, zero_stage: int, steps: int = 10, lora: bool = False, **faults):
    from lmforge.align.config import AlignConfig
    from lmforge.config import build_dataclass

    params = {"run_dir": str(run_dir), "loss": {"method": "dpo", "beta": 0.5},
              "finetuning": "lora" if lora else "full",
              "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
              "train": {"max_steps": steps, "micro_batch_size": 4, "lr": 2e-2 if lora else 5e-3, "warmup_steps": 1,
                        "checkpoint_every": 5, "fault_injection": faults},
              "deepspeed": {"zero_stage": zero_stage},
              "launch": {"nproc_per_node": 2, "timeout_s": 300}}
    return build_dataclass(AlignConfig, params, path="align")


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_prompt_tokens_carry_no_loss(tiny_model):
    """The gradient of the preference loss reaches no logit that predicts a prompt token."""

    from lmforge.align.losses import LossArgs
    from lmforge.training.align import _preference_model_class, collate_pairs

    pairs = _pairs(3)
    batch = collate_pairs(pairs, pad_id=2, reference=[(-5.0, -6.0)] * 3)
    wrapped = _preference_model_class()(tiny_model, LossArgs(method="dpo", beta=0.1))
    captured = {}

    def keep(module, args, output):
        output.logits.retain_grad()
        captured["logits"] = output.logits

    tiny_model.register_forward_hook(keep)
    wrapped(**batch).loss.backward()
    grad = captured["logits"].grad.abs().sum(-1)  # (2B, T): position t predicts token t + 1
    targets = batch["labels"][:, 1:] != -100
    assert float(grad[:, :-1][~targets].sum()) == 0.0  # prompt and padding targets: no gradient at all
    assert bool((grad[:, :-1][targets] > 0).all())  # every response target gets one


@pytest.mark.slow
def test_align_runs_zero3_with_a_frozen_reference_and_exact_resume(tmp_path, build_model, tiny_tokenizer_dir,
                                                                   deepspeed_templates):
    """Real 2-process ZeRO-3 DPO runs: the loss falls, preference accuracy on the training pairs rises, the
    reference is frozen (the SFT weights and the cached reference log-probs are unchanged and equal a
    recomputation), and a run killed after its step-5 checkpoint resumes to the losses of the uninterrupted run,
    exactly. (ZeRO-2 runs in the chain test, LoRA in the align pipeline test.)"""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.training.align import REFERENCE_FILE, load_pair_examples, sequence_scores
    from lmforge.training.jobs import run_align
    from lmforge.training.launch import TrainingError

    sft = _sft_model(tmp_path, build_model, tiny_tokenizer_dir)
    chat = ChatTokenizer.for_model(sft, tiny_tokenizer_dir)
    pairs, heldout = _pairs(16), _pairs(4, seed=9)
    before = _digest(sft)

    checkpoint, metrics, curve = run_align(pairs, heldout, str(sft), chat, deepspeed_templates,
                                           _config(tmp_path / "z3", zero_stage=3))
    assert metrics["zero_stage"] == 3 and metrics["world_size"] == 2 and len(curve) == 10
    assert metrics["final_loss"] < metrics["initial_loss"]
    first, last = curve[:3], curve[-3:]
    assert curve[0]["margin"] == pytest.approx(0.0, abs=1e-3)  # step 0: the policy is the reference (float noise)
    assert sum(r["accuracy"] for r in last) / 3 > sum(r["accuracy"] for r in first) / 3
    assert last[-1]["margin"] > 0 and last[-1]["rewards_chosen"] > last[-1]["rewards_rejected"]
    assert metrics["heldout"]["pairs"] == 4 and "preference_accuracy" in metrics["heldout"]
    # the reference is frozen: the SFT model is untouched and the cached log-probs are its own
    assert _digest(sft) == before
    cached = json.loads((tmp_path / "z3" / REFERENCE_FILE).read_text())["scores"]
    reference = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32)
    again = sequence_scores(reference, load_pair_examples(str(tmp_path / "z3" / "train_pairs.jsonl"))
                            + load_pair_examples(str(tmp_path / "z3" / "heldout_pairs.jsonl")), chat.pad_id)
    assert len(cached) == 20
    for saved, fresh in zip(cached, again, strict=True):
        assert saved[0] == pytest.approx(fresh[0], abs=1e-4) and saved[1] == pytest.approx(fresh[1], abs=1e-4)
    tuned = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    assert not torch.equal(tuned.model.embed_tokens.weight, reference.model.embed_tokens.weight)
    assert (Path(checkpoint) / "tokenizer_config.json").is_file()  # the checkpoint carries the one template

    killed = _config(tmp_path / "killed", zero_stage=3, kill_after_checkpoint_step=5)
    with pytest.raises(TrainingError):
        run_align(pairs, heldout, str(sft), chat, deepspeed_templates, killed)
    _, resumed, resumed_curve = run_align(pairs, heldout, str(sft), chat, deepspeed_templates,
                                          _config(tmp_path / "killed", zero_stage=3))
    assert resumed["restart_count"] == 1 and metrics["restart_count"] == 0
    assert [r["loss"] for r in resumed_curve] == [r["loss"] for r in curve]
    assert [r["accuracy"] for r in resumed_curve] == [r["accuracy"] for r in curve]
