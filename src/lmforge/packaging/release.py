"""Assemble a release: the packaged model directory plus a model card built from the chain's metrics.

The card records the preset, parameter counts, data summary, key hyperparameters, evaluation
results and lineage (git commit, tokenizer hash), so the package is traceable without the project.
"""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge.packaging.export import package_model, verify_package
from lmforge.packaging.model_card import ModelCardInfo


def describe_hardware() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"{os.cpu_count()} CPU cores ({platform.machine()})"


def build_release(sft_checkpoint: str, tokenizer_dir: str, metrics: Mapping[str, Mapping[str, Any]],
                  params: Mapping[str, Any], *, git_commit: str) -> tuple[str, dict]:
    """Package ``sft_checkpoint`` + tokenizer into a staging dir; returns (dir, packaging metrics)."""
    from lmforge.tracking import flatten

    pretrain, sft = metrics.get("pretrain", {}), metrics.get("sft", {})
    card = ModelCardInfo(
        model_name=params.get("model_name", "lmforge-chat"),
        preset=str(pretrain.get("preset", "")),
        parameter_counts={"total": int(pretrain.get("model_params", 0))},
        base_model="lmforge pretrain checkpoint (this chain)",
        training={"pretrain.steps": pretrain.get("steps"), "pretrain.tokens": pretrain.get("tokens"),
                  "pretrain.final_loss": pretrain.get("final_loss"), "sft.steps": sft.get("steps"),
                  "sft.final_loss": sft.get("final_loss"), "zero_stage": pretrain.get("zero_stage"),
                  "processes": pretrain.get("world_size")},
        data={"records": metrics.get("data_processing", {}).get("records_out"),
              "tokenizer_sha256": metrics.get("tokenizer", {}).get("sha256"),
              "vocab_size": metrics.get("tokenizer", {}).get("vocab_size")},
        evaluation={k: v for k, v in flatten(metrics.get("evaluation", {})).items()},
        git_commit=git_commit,
        hardware=describe_hardware(),
        license=params.get("license", "apache-2.0"),
    )
    out_dir = Path(tempfile.mkdtemp(prefix="lmforge-package-")) / card.model_name
    package_model(sft_checkpoint, tokenizer_dir, out_dir, card=card)
    check = verify_package(out_dir, prompt=params.get("verify_prompt", "def add(a, b):"))
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return str(out_dir), {"loads": bool(check.get("loads")), "generated_tokens": check.get("generated_tokens", 0),
                          "package_bytes": size, "sample": check.get("sample", "")}
