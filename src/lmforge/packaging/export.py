"""Assemble a trained model, its tokenizer and a model card into one self-contained HF folder.

The package is what leaves the project: ``AutoModelForCausalLM.from_pretrained(out_dir)`` and
``AutoTokenizer.from_pretrained(out_dir)`` must work offline with nothing else at hand. So:

- weights are re-saved in fp32 safetensors from the trained checkpoint;
- ``generation_config.json`` (and the model config) take BOS/PAD ids from the tokenizer and, as
  ``eos_token_id``, every stop id: the tokenizer's EOS, the checkpoint's generation-config EOS ids
  (an SFT checkpoint lists its template's end-of-turn there: ``<|im_end|>``, ``<end_of_turn>``,
  ``<|eot_id|>``...) and the ``stop_ids`` the caller names (the chat template's end-of-turn), so
  ``generate`` stops at the end of a chat turn whatever the template (a randomly initialised config
  keeps Llama defaults that do not match our tokenizer);
- the tokenizer (the checkpoint's own: ``ChatTokenizer.for_model``) is re-saved
  next to the weights, then reloaded and checked to encode exactly like the source tokenizer;
- ``README.md`` is the model card (`lmforge.packaging.model_card`);
- a LoRA adapter directory (``adapter_config.json``, what ``sft.finetuning: lora`` keeps in
  ``<checkpoint>/adapter``) is first merged into its base model (``lmforge.training.lora``), so the
  package holds plain weights that load without peft.

Everything is written into a sibling temporary folder and renamed over ``out_dir`` only when
complete: a crash leaves the previous package untouched, never a half-written one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.generation import (
    generate_samples,
    load_model_and_tokenizer,
    resolve_stop_token_ids,
)
from lmforge.packaging.model_card import ModelCardInfo, render_model_card
from lmforge.training.lora import is_adapter_dir, merge_adapter

__all__ = [
    "ModelCardInfo",
    "PackageVerificationError",
    "package_model",
    "render_model_card",
    "verify_package",
]

logger = logging.getLogger(__name__)

CARD_FILENAME = "README.md"
"""File name of the model card inside a package (what the Hugging Face hub displays)."""

TOKENIZER_PROBE = "def add(a, b):\n    return a + b  # héllo\n"
"""Text encoded by the source and the packaged tokenizer to check they agree."""


class PackageVerificationError(RuntimeError):
    """A package cannot be loaded, or loads but does not behave like the model it came from."""


def package_model(
    model_dir: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    *,
    card: ModelCardInfo,
    base_model_dir: str | Path | None = None,
    stop_ids: Sequence[int] = (),
) -> Path:
    """Write model (fp32 safetensors) + generation config + tokenizer + README.md to ``out_dir``.

    ``stop_ids`` are stop ids beyond the tokenizer's EOS and the checkpoint's generation-config EOS ids
    (the chat template's end-of-turn: ``ChatTokenizer.stop_ids``); all of them go into ``eos_token_id``.

    ``model_dir`` may be a LoRA adapter: it is merged into ``base_model_dir`` (default: the base
    named in its ``adapter_config.json``) first. Replaces an existing ``out_dir`` only once the new
    package is complete. Returns ``out_dir``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, tokenizer_dir, out_dir = Path(model_dir), Path(tokenizer_dir), Path(out_dir)
    for source, what in ((model_dir, "model"), (tokenizer_dir, "tokenizer")):
        if not source.is_dir():
            raise FileNotFoundError(f"{what} directory not found: {source}")
        if out_dir.resolve() == source.resolve():
            raise ValueError(f"out_dir {out_dir} must differ from the {what} directory")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the package is meant to be shared
    merged = None
    try:
        if is_adapter_dir(model_dir):  # LoRA: merge into the base model, then package plain weights
            merged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.merged-", dir=out_dir.parent))
            model_dir = merge_adapter(model_dir, merged, base_model_dir=base_model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        _check_vocab_fits(model, tokenizer)
        _align_special_token_ids(model, tokenizer, stop_ids)

        model.save_pretrained(staging, safe_serialization=True)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _check_tokenizer_roundtrip(tokenizer, staging)
        (staging / CARD_FILENAME).write_text(render_model_card(card), encoding="utf-8")

        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if merged is not None:
            shutil.rmtree(merged, ignore_errors=True)
    logger.info("packaged %s (+ tokenizer %s) into %s", model_dir, tokenizer_dir, out_dir)
    return out_dir


def verify_package(out_dir: str | Path, prompt: str = "def add(a, b):", max_new_tokens: int = 8) -> dict[str, Any]:
    """Load a package with the Auto classes (local files only) and generate from ``prompt``.

    Uses the chat template when the tokenizer has one. Returns
    ``{"loads": True, "generated_tokens": n, "sample": text}``; raises
    `PackageVerificationError` when the package does not load or generates nothing.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"package directory not found: {out_dir}")
    try:
        model, tokenizer = load_model_and_tokenizer(out_dir)
    except Exception as err:
        raise PackageVerificationError(f"package {out_dir} does not load: {err}") from err

    chat = bool(getattr(tokenizer, "chat_template", None))
    [sample] = generate_samples(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, chat=chat)
    if sample["new_tokens"] < 1:
        raise PackageVerificationError(f"package {out_dir} loads but generated no tokens")
    logger.info("verified package %s: %d tokens generated", out_dir, sample["new_tokens"])
    return {"loads": True, "generated_tokens": sample["new_tokens"], "sample": sample["completion"]}


def _align_special_token_ids(model: Any, tokenizer: Any, extra_stop_ids: Sequence[int] = ()) -> None:
    """Make the model and generation configs use the tokenizer's BOS/PAD ids and every stop id as EOS.

    EOS is the list ``resolve_stop_token_ids`` gives (the tokenizer's EOS, ``<|im_end|>`` when the vocab
    has it, the checkpoint's generation-config EOS ids), then ``extra_stop_ids``; a single id stays an
    int. PAD falls back to the first of them (the tokenizer's EOS) when the tokenizer has no pad token.
    """
    stop_ids = list(dict.fromkeys([*resolve_stop_token_ids(tokenizer, model.generation_config),
                                   *(int(i) for i in extra_stop_ids)]))
    eos_id = stop_ids[0]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    bos_id = tokenizer.bos_token_id

    eos = stop_ids if len(stop_ids) > 1 else eos_id
    for config in (model.config, model.generation_config):
        config.bos_token_id = bos_id
        config.eos_token_id = eos
        config.pad_token_id = pad_id
    # Ours, not derived from the model config: generate() must not rebuild it from config.json.
    model.generation_config._from_model_config = False
    logger.info("special ids: bos=%s eos=%s (%s) pad=%s", bos_id, stop_ids,
                tokenizer.convert_ids_to_tokens(stop_ids), pad_id)


def _check_vocab_fits(model: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer whose ids would index past the model's embedding table."""
    vocab_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_size}")


def _check_tokenizer_roundtrip(tokenizer: Any, saved_dir: Path) -> None:
    """Reload the re-saved tokenizer and require identical ids (plain text and chat rendering)."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(saved_dir, local_files_only=True)
    probes = [TOKENIZER_PROBE]
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": TOKENIZER_PROBE}]
        rendered = [
            tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for tok in (tokenizer, reloaded)
        ]
        if rendered[0] != rendered[1]:
            raise PackageVerificationError("re-saved tokenizer renders the chat template differently")
        probes.append(rendered[0])
    for text in probes:
        if tokenizer(text)["input_ids"] != reloaded(text)["input_ids"]:
            raise PackageVerificationError(f"re-saved tokenizer encodes {text!r} differently")


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished ``new`` folder to ``target``, replacing any previous one.

    POSIX cannot rename a folder over a non-empty one, so the old package is first renamed aside
    (and restored if the second rename fails). In between, ``target`` is briefly absent, never partial.
    """
    if not target.exists():
        os.rename(new, target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
    backup.rmdir()  # only the unique name is wanted
    os.rename(target, backup)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)
