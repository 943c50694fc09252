"""Assemble a release: the packaged model, its model card, the logits round-trip check and the quality gate.

The card records the preset, parameter counts, data summary, key hyperparameters, evaluation
results and lineage (git commit, tokenizer hash), so the package is traceable without the project.

Two checks stand between a checkpoint and the model registry:

- the round trip (`compare_logits`): the packaged model must produce the checkpoint's logits on
  fixed inputs (within ``LOGITS_ATOL``), so re-saving, dtype or config alignment changed nothing;
- the quality gate (`check_gate`): ``gate: {metric: {min: x, max: y}}`` bounds on the flat keys of
  the evaluation metrics (``sft_pairs.perplexity_ratio``, ``sft.heldout.perplexity``...). A model
  outside a bound is refused with the metric, its observed value and the bound.
"""

from __future__ import annotations

import logging
import math
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.packaging.export import PackageVerificationError, package_model, verify_package
from lmforge.packaging.model_card import build_model_card_info, lookup_dvc_hashes

logger = logging.getLogger(__name__)

LOGITS_ATOL = 1e-5
"""Largest absolute logit difference allowed between the checkpoint and its package."""

PROBE_INPUT_IDS = ((1, 5, 17, 42, 99, 7, 3, 250, 11, 64), (2, 9, 9, 120, 33, 48, 5, 6, 200, 13))
"""Fixed token ids the round trip scores (clipped to the vocabulary); two rows, so batching is exercised."""

GATE_BOUNDS = ("min", "max")


class GateError(RuntimeError):
    """The model fails the quality gate: it must not be registered."""


@dataclass(frozen=True)
class GateCheck:
    """One bound of the quality gate and how the model did against it."""

    metric: str
    bound: str
    """``"min"`` (observed must be >= limit) or ``"max"`` (observed must be <= limit)."""
    limit: float
    observed: float
    passed: bool

    def describe(self) -> str:
        op = ">=" if self.bound == "min" else "<="
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.metric} = {self.observed:.6g} (required {op} {self.limit:g}): {verdict}"


def check_gate(metrics: Mapping[str, Any], gate: Mapping[str, Mapping[str, float]] | None) -> list[GateCheck]:
    """Evaluate every ``{metric: {min|max: value}}`` bound of ``gate`` against the flat ``metrics``.

    Raises ValueError for a malformed gate or a metric name the metrics do not have (the message
    lists the available names). A NaN observation fails its bound.
    """
    checks: list[GateCheck] = []
    for metric, bounds in (gate or {}).items():
        if metric not in metrics:
            raise ValueError(f"gate: unknown metric {metric!r}; the evaluation metrics are: "
                             f"{', '.join(sorted(metrics))} (fix `gate:` in conf/base/parameters_evaluation.yml)")
        if not isinstance(bounds, Mapping) or not bounds or set(bounds) - set(GATE_BOUNDS):
            raise ValueError(f"gate.{metric} must be a mapping with 'min' and/or 'max', got {bounds!r}")
        observed = float(metrics[metric])
        for bound, limit in bounds.items():
            limit = float(limit)
            ok = not math.isnan(observed) and (observed >= limit if bound == "min" else observed <= limit)
            checks.append(GateCheck(metric, bound, limit, observed, ok))
    return checks


def enforce_gate(checks: Sequence[GateCheck]) -> None:
    """Raise `GateError` naming every failed bound (metric, observed value, bound)."""
    failed = [c for c in checks if not c.passed]
    for check in checks:
        logger.info("gate: %s", check.describe())
    if failed:
        raise GateError("model refused by the quality gate: " + "; ".join(c.describe() for c in failed)
                        + " (thresholds: `gate:` in conf/base/parameters_evaluation.yml)")


def compare_logits(source_dir: str | Path, package_dir: str | Path,
                   input_ids: Sequence[Sequence[int]] = PROBE_INPUT_IDS) -> float:
    """Largest absolute difference between the logits of two saved models on ``input_ids`` (fp32, eval)."""
    import torch
    from transformers import AutoModelForCausalLM

    models = [AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, local_files_only=True).eval()
              for d in (source_dir, package_dir)]
    vocab = min(m.get_input_embeddings().weight.shape[0] for m in models)
    ids = torch.tensor([[i % vocab for i in row] for row in input_ids])
    with torch.no_grad():
        source, packaged = (m(ids).logits for m in models)
    if source.shape != packaged.shape:
        raise PackageVerificationError(f"logits shapes differ: checkpoint {tuple(source.shape)}, "
                                       f"package {tuple(packaged.shape)}")
    return float((source - packaged).abs().max())


def check_roundtrip(source_dir: str | Path, package_dir: str | Path, atol: float = LOGITS_ATOL) -> float:
    """`compare_logits`, raising `PackageVerificationError` when the difference exceeds ``atol``."""
    diff = compare_logits(source_dir, package_dir)
    if not diff <= atol:
        raise PackageVerificationError(f"package {package_dir} does not reproduce checkpoint {source_dir}: "
                                       f"max |logit difference| {diff:.3g} > {atol:g}")
    logger.info("round trip: max |logit difference| %.3g <= %g", diff, atol)
    return diff


def describe_hardware() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"{os.cpu_count()} CPU cores ({platform.machine()})"


def build_release(sft_checkpoint: str, tokenizer_dir: str, metrics: Mapping[str, Mapping[str, Any]],
                  params: Mapping[str, Any], *, git_commit: str, project_path: str | Path = ".",
                  hyperparameters: Mapping[str, Mapping[str, Any] | None] | None = None) -> tuple[str, dict]:
    """Package ``sft_checkpoint`` + tokenizer into a staging dir; returns (dir, packaging metrics).

    The package is verified by loading and generating, and (for a full checkpoint; a LoRA adapter
    is merged first, so there is no plain source to compare with) by the logits round trip.
    """
    from lmforge.training.lora import is_adapter_dir

    card = build_model_card_info(metrics, params, git_commit=git_commit, host=describe_hardware(),
                                 checkpoint_dir=sft_checkpoint, hyperparameters=hyperparameters,
                                 dvc_hashes=lookup_dvc_hashes(project_path))
    out_dir = Path(tempfile.mkdtemp(prefix="lmforge-package-")) / card.model_name
    package_model(sft_checkpoint, tokenizer_dir, out_dir, card=card)
    check = verify_package(out_dir, prompt=params.get("verify_prompt", "def add(a, b):"))
    result = {"loads": bool(check.get("loads")), "generated_tokens": check.get("generated_tokens", 0)}
    if is_adapter_dir(Path(sft_checkpoint)):
        logger.info("round trip skipped: %s is a LoRA adapter (merged before packaging)", sft_checkpoint)
    else:
        result["max_logit_diff"] = check_roundtrip(sft_checkpoint, out_dir)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return str(out_dir), {**result, "package_bytes": size, "sample": check.get("sample", "")}


def release_model(sft_checkpoint: str, tokenizer_dir: str, metrics: Mapping[str, Mapping[str, Any]],
                  params: Mapping[str, Any], gate: Mapping[str, Mapping[str, float]] | None, *,
                  git_commit: str, project_path: str | Path = ".",
                  hyperparameters: Mapping[str, Mapping[str, Any] | None] | None = None) -> tuple[str, dict]:
    """The packaging stage: quality gate, package (+ round trip), then the Model Registry.

    The gate is checked first, so a refused model costs no packaging time. ``params["registry"]``
    is ``{"enabled", "model_name", "promote", "max_new_tokens"}`` (see parameters_packaging.yml).
    Returns (package dir, packaging metrics incl. ``gate_passed`` and ``registered_version``).
    """
    checks = check_gate(metrics.get("evaluation", {}), gate)
    enforce_gate(checks)
    package_dir, result = build_release(sft_checkpoint, tokenizer_dir, metrics, params, git_commit=git_commit,
                                        project_path=project_path, hyperparameters=hyperparameters)
    result = {**result, "gate_passed": True, "gate_bounds": len(checks)}
    registry = dict(params.get("registry") or {})
    if registry.get("enabled", False):
        from lmforge.packaging.registry import dvc_lineage, register_package

        registered = register_package(package_dir, model_name=registry["model_name"], gate=checks,
                                      lineage={**dvc_lineage(project_path), "git.commit": git_commit},
                                      promote=bool(registry.get("promote", True)),
                                      max_new_tokens=int(registry.get("max_new_tokens", 32)))
        result.update(registered_model=registered["model_name"], registered_version=registered["version"],
                      registered_aliases=",".join(registered["aliases"]))
    return package_dir, result
