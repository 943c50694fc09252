"""Quantized GGUF packages of the chat model and what quantization costs on held-out text (bits per byte).

The evaluation stage packages the chat model it evaluates (the aligned one, else SFT:
``lmforge.align.chat_model.resolve_chat_model``) exactly as the packaging stage does
(``lmforge.packaging.export.package_model`` into a temporary folder: a LoRA adapter merged, the stop ids
of the checkpoint's chat template as ``eos_token_id``), exports it to every configured GGUF format
(``lmforge.engine.gguf.export_gguf``: f32/f16 by llama.cpp's converter, q8_0/q4_k_m by ``llama-quantize``
from f32) into ``data/06_models/gguf`` with a manifest (`MANIFEST`: format, file, bytes, sha256, source
model), and scores each file on the held-out blocks and per language the stage scores every model on
(``lmforge.evaluation.suite.score_heldout``: one code path). The packaging stage ships the files.

**How a GGUF file is scored**: transformers' own GGUF loader (``from_pretrained(dir, gguf_file=...)``,
the ``gguf`` package) reads the stored tensors and dequantizes them to float32, so the model scored
holds exactly the weights the engine loads, in the same held-out ids and byte table as the full-precision
model. The f32 file must score the full-precision package's bits per byte to ~1e-6 relative (tested):
that proves the loader path (tensor names, the Q/K row permutation, tied embeddings) before any quantized
number is believed. What this measures is **weight quantization only**: llama.cpp's CPU kernels also
round the activations to 8 bits inside the q8_0/q4_k_m matrix products, which this path does not.

Metrics (flat, ``evaluation.json``; MLflow ``evaluation.quantization.*``), ``<fmt>`` in the configured
formats and ``reference`` the full-precision package (``bytes``: its weight files):

- ``quantization.<fmt>.bytes``, ``.bpb`` (held-out bits per byte), ``.bpb_delta_pct`` (100 x (bpb / the
  reference's bpb - 1)), ``.by_language.<group>.bpb`` and ``.bpb_delta_pct`` (en, zh, ja, code);
- ``quantization.<fmt>.budget_pct`` and ``.within_budget`` (1/0) for the formats with a budget
  (``evaluation.quantization.budgets_pct``: q8_0 1%, q4_k_m 5% by default), shown pass/fail in the report.

Limits: held-out text is what the stage has (``max_heldout_blocks`` blocks, ``by_language.max_chars``
characters per group), so small per-language deltas are noisy; the scored model is transformers' Llama
(or the family the GGUF names), not llama.cpp's graph.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.evaluation.config import EvaluationConfig
    from lmforge.evaluation.heldout import HeldoutSources

logger = logging.getLogger(__name__)

MANIFEST = "quantization.json"
"""The manifest written beside the GGUF files (the packaging stage reads it)."""

GGUF_NAME = "model"
"""Stem of the exported files: ``model-<format>.gguf``."""

REFERENCE = "reference"
"""Metric prefix of the full-precision package the formats are compared with."""


def quantize_and_score(model_dir: str | Path, sources: HeldoutSources, config: EvaluationConfig,
                       out_dir: str | Path, *, which: str = "sft",
                       trust_remote_code: bool = False) -> dict[str, float]:
    """Export ``model_dir`` to the configured GGUF formats into ``out_dir`` (with `MANIFEST`) and score each;
    returns the flat ``quantization.*`` metrics (see the module docstring).

    ``which`` says what ``model_dir`` is (``aligned`` or ``sft``; recorded in the manifest). With
    ``evaluation.quantization.enabled: false`` only the manifest is written (``{"enabled": false}``) and
    no metric is returned.
    """
    settings = config.quantization
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not settings.enabled:  # no engine needed
        write_manifest(out_dir, {"enabled": False, "formats": {}})
        logger.info("quantized packages skipped: evaluation.quantization.enabled is false")
        return {}
    from lmforge.engine.gguf import export_gguf
    from lmforge.packaging.export import package_model
    from lmforge.packaging.model_card import ModelCardInfo
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer, has_tokenizer
    from lmforge.tokenizer.hf_encoder import hf_tokenizer_sha256

    chat = ChatTokenizer.for_model(model_dir, sources.stage_tokenizer, trust_remote_code=trust_remote_code)
    # lmforge's own tokenizer converts from the tokenizer stage's sentencepiece model (the package lacks it, and the
    # converter keeps its scores); a foreign model's package converts with its own tokenizer files
    sp_model = Path(sources.stage_tokenizer) / "tokenizer.model"
    own = has_tokenizer(sources.stage_tokenizer) and sp_model.is_file() and hf_tokenizer_sha256(
        ChatTokenizer.load(sources.stage_tokenizer).tokenizer) == hf_tokenizer_sha256(chat.tokenizer)
    with tempfile.TemporaryDirectory(prefix="lmforge-quantize-") as tmp:
        # as the packaging stage packages it (release_model): the checkpoint's tokenizer, its template's stop ids
        package = package_model(model_dir, chat.source, Path(tmp) / "package",
                                card=ModelCardInfo(model_name=GGUF_NAME), stop_ids=chat.stop_ids)
        files = export_gguf(package, out_dir, name=GGUF_NAME, formats=tuple(settings.formats),
                            tokenizer_model=sp_model if own else None)
        write_manifest(out_dir, {
            "enabled": True, "source_model": str(model_dir), "model": which, "name": GGUF_NAME,
            "formats": {fmt: {"file": f.path.name, "bytes": f.bytes, "sha256": f.sha256} for fmt, f in files.items()}})
        scores = score_formats(package, {fmt: f.path for fmt, f in files.items()}, sources, config,
                               trust_remote_code=trust_remote_code)
        reference_bytes = sum(p.stat().st_size for p in package.glob("*.safetensors"))
    sizes = {REFERENCE: reference_bytes, **{fmt: f.bytes for fmt, f in files.items()}}
    return quantization_metrics(scores, sizes, settings.budgets_pct)


def score_formats(package_dir: str | Path, gguf_files: Mapping[str, Path], sources: HeldoutSources,
                  config: EvaluationConfig, *, trust_remote_code: bool = False) -> dict[str, dict[str, Any]]:
    """``{"reference": scores, <fmt>: scores}``: ``lmforge.evaluation.suite.score_heldout`` of the package itself
    and of each GGUF file, on the stage's held-out blocks and per-language texts in the package tokenizer's ids."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.evaluation.heldout import heldout_data
    from lmforge.evaluation.suite import collect_heldout_language_texts, score_heldout
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer, has_tokenizer

    chat = ChatTokenizer.for_model(package_dir, sources.stage_tokenizer, trust_remote_code=trust_remote_code)
    stage_chat = ChatTokenizer.load(sources.stage_tokenizer) if has_tokenizer(sources.stage_tokenizer) else None
    reference = AutoModelForCausalLM.from_pretrained(package_dir, dtype=torch.float32, local_files_only=True,
                                                     trust_remote_code=trust_remote_code)
    held = heldout_data(chat, sources, [], max_blocks=config.max_heldout_blocks, max_examples=0,
                        max_example_tokens=config.max_example_tokens,
                        context=getattr(reference.config, "max_position_embeddings", None), stage_chat=stage_chat)
    texts = collect_heldout_language_texts(sources, config)
    scores = {REFERENCE: score_heldout(reference, chat, held, texts, config)}
    del reference
    for fmt, path in gguf_files.items():
        model = load_gguf_model(path)
        scores[fmt] = score_heldout(model, chat, held, texts, config)
        logger.info("%s: held-out %.5f bits/byte (full precision %.5f)", fmt, scores[fmt]["bits_per_byte"],
                    scores[REFERENCE]["bits_per_byte"])
        del model
    return scores


def load_gguf_model(path: str | Path) -> Any:
    """The model in a GGUF file as transformers loads it: every tensor dequantized to float32 (the ``gguf``
    package), the config from the file's metadata. Weight quantization only (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                local_files_only=True)


def quantization_metrics(scores: Mapping[str, Mapping[str, Any]], sizes: Mapping[str, int],
                         budgets_pct: Mapping[str, float]) -> dict[str, float]:
    """Flat ``quantization.*`` metrics from `score_formats`' scores, the files' bytes and the budgets (percent)."""
    reference = scores[REFERENCE]
    out: dict[str, float] = {}
    for fmt, scored in scores.items():
        prefix = f"quantization.{fmt}"
        if fmt in sizes:
            out[f"{prefix}.bytes"] = float(sizes[fmt])
        out[f"{prefix}.bpb"] = float(scored["bits_per_byte"])
        groups = scored.get("by_language") or {}
        for group, metrics in groups.items():
            out[f"{prefix}.by_language.{group}.bpb"] = float(metrics["bits_per_byte"])
        if fmt == REFERENCE:
            continue
        out[f"{prefix}.bpb_delta_pct"] = delta_pct(scored["bits_per_byte"], reference["bits_per_byte"])
        for group, metrics in groups.items():
            if group in (reference.get("by_language") or {}):
                out[f"{prefix}.by_language.{group}.bpb_delta_pct"] = delta_pct(
                    metrics["bits_per_byte"], reference["by_language"][group]["bits_per_byte"])
        if fmt in budgets_pct:
            out[f"{prefix}.budget_pct"] = float(budgets_pct[fmt])
            out[f"{prefix}.within_budget"] = float(out[f"{prefix}.bpb_delta_pct"] <= budgets_pct[fmt])
    return out


def delta_pct(value: float, reference: float) -> float:
    """``100 * (value / reference - 1)``: the bits-per-byte increase in percent (negative: the format scores better)."""
    return 100.0 * (float(value) / float(reference) - 1.0) if reference else math.nan


def write_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

