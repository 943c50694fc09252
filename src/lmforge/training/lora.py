"""LoRA fine-tuning with peft: wrap a causal LM, save the adapter, merge it back into plain weights.

``sft.finetuning: lora`` trains only low-rank adapters ``B @ A`` (rank ``r``, scaled by ``alpha / r``)
on the linear layers named in ``target_modules`` (matched by module name suffix, e.g. ``q_proj``);
every base weight stays frozen, so the optimizer (built from ``requires_grad`` parameters in
``loop.build_optimizer``) holds adapter parameters only. It runs on the same DeepSpeed launcher and
loop as full fine-tuning.

The SFT stage's output stays a plain Hugging Face model directory that loads without peft: the
worker saves the adapter into ``<checkpoint>/adapter/`` and writes the merged weights
(``W + alpha/r * B @ A``, computed in fp32 from the base model on disk) next to it with
``save_pretrained``. ``merge_adapter`` is also what packaging uses when it is handed an adapter
directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SUBDIR = "adapter"
ALL_LINEAR = "all-linear"  # lora.target_modules: [all-linear] adapts every linear layer but the output head


@dataclass
class LoraArgs:
    """LoRA hyper-parameters (``sft.lora`` in parameters_sft.yml)."""

    # Rank of the low-rank update.
    r: int = 8
    # Scaling numerator: the update is multiplied by alpha / r.
    alpha: int = 16
    # Dropout on the adapter's input (training only).
    dropout: float = 0.05
    # Module names (suffixes) that get an adapter, e.g. the attention projections of Llama/Gemma/Qwen
    # (BLOOM's are query_key_value and dense); [all-linear]: every linear layer but the output head, for
    # any architecture (peft's "all-linear").
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"lora.r must be >= 1 and lora.alpha > 0, got r={self.r}, alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty: name the linear layers to adapt, e.g. [q_proj, v_proj]")
        self.target_modules = list(self.target_modules)


def apply_lora(model: Any, args: LoraArgs) -> Any:
    """Wrap ``model`` in a peft ``PeftModel`` with fresh adapters; only adapter parameters are trainable.

    Raises a clear error when a target module name matches no layer of the model.
    """
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    all_linear = list(args.target_modules) == [ALL_LINEAR]
    targets: list[str] | str = ALL_LINEAR if all_linear else list(args.target_modules)
    missing = [] if all_linear else sorted(set(targets) - names)
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise ValueError(f"lora.target_modules {missing} match no module of this model; its linear layers are {linear}")
    config = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA r=%d alpha=%s on %s: %d of %d parameters trainable (%.2f%%)", args.r, args.alpha,
                args.target_modules, trainable, total, 100.0 * trainable / total)
    return peft_model


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` holds a peft adapter (``adapter_config.json``) rather than full weights."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, *, base_model_dir: str | Path | None = None,
                  dtype: str = "float32") -> Path:
    """Merge a LoRA adapter into its base model and ``save_pretrained`` plain weights into ``out_dir``.

    ``base_model_dir`` defaults to the adapter's ``base_model_name_or_path``. The result loads with
    ``AutoModelForCausalLM`` and no peft; its logits equal the adapter model's (to float rounding).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = Path(adapter_dir)
    if not is_adapter_dir(adapter_dir):
        raise FileNotFoundError(f"{adapter_dir} holds no {ADAPTER_CONFIG}: not a LoRA adapter directory")
    if base_model_dir is None:
        base_model_dir = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base_model_dir or not Path(base_model_dir).is_dir():
            raise FileNotFoundError(f"base model {base_model_dir!r} of adapter {adapter_dir} not found: "
                                    "pass base_model_dir (the model the adapter was trained on)")
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=getattr(torch, dtype), local_files_only=True)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    logger.info("merged LoRA adapter %s into %s -> %s", adapter_dir, base_model_dir, out_dir)
    return out_dir
