"""Load a saved model + tokenizer and generate completions for a handful of prompts.

Used for qualitative samples after pretraining/SFT and by `lmforge.packaging` to check that a
packaged model loads and generates. Prompts are generated one at a time: no padding side to get
wrong, and for a few prompts the batching speed-up does not matter.

In chat mode a prompt becomes a single user message rendered by the tokenizer's own
``chat_template`` (the one source of truth, which also adds BOS), so it is encoded with
``add_special_tokens=False``. Generation stops at the tokenizer's EOS and at ``<|im_end|>`` when
the vocabulary has it (the end-of-turn token of ChatML-style templates).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

END_OF_TURN_TOKEN = "<|im_end|>"
"""End-of-turn token of the chat template; generation also stops on it when it is in the vocab."""


def load_model_and_tokenizer(model_dir: str | Path, tokenizer_dir: str | Path | None = None) -> tuple[Any, Any]:
    """Load a ``save_pretrained`` model in fp32 (eval mode) and its tokenizer, from local files only.

    ``tokenizer_dir`` defaults to ``model_dir`` (a packaged model holds both).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    tokenizer_dir = model_dir if tokenizer_dir is None else Path(tokenizer_dir)
    _require_file(model_dir, "config.json", "model")
    _require_dir(tokenizer_dir, "tokenizer")

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    logger.info("loaded model from %s and tokenizer from %s", model_dir, tokenizer_dir)
    return model, tokenizer


def generate_samples(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    chat: bool = True,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Generate one completion per prompt: ``[{"prompt", "completion", "new_tokens"}, ...]``.

    ``new_tokens`` counts generated ids, the stop token included when generation stopped on one; the
    ``completion`` text never holds that stop token.
    Greedy by default (deterministic); with ``do_sample`` prompt ``i`` samples from seed
    ``seed + i``, so a completion does not depend on the other prompts. The caller's global torch
    RNG state is left untouched.
    """
    import torch

    stop_ids = resolve_stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
    device = next(model.parameters()).device
    rng_devices = [device.index or 0] if device.type == "cuda" else []

    samples = []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            for i, prompt in enumerate(prompts):
                torch.manual_seed(seed + i)
                prompt_ids = encode_prompt(tokenizer, prompt, chat=chat)
                input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, P)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=max_new_tokens,
                    eos_token_id=stop_ids,
                    pad_token_id=pad_id,
                    **sampling,
                )
                new_ids = output[0, input_ids.shape[1] :].tolist()
                # The stop token is not text; <|im_end|> is not "special" to every tokenizer, so drop it here.
                text_ids = new_ids[:-1] if new_ids and new_ids[-1] in stop_ids else new_ids
                samples.append(
                    {
                        "prompt": prompt,
                        "completion": tokenizer.decode(text_ids, skip_special_tokens=True),
                        "new_tokens": len(new_ids),
                    }
                )
    finally:
        model.train(was_training)
    logger.info("generated %d samples (max_new_tokens=%d)", len(samples), max_new_tokens)
    return samples


def encode_prompt(tokenizer: Any, prompt: str, *, chat: bool) -> list[int]:
    """Token ids for a prompt: the chat template's rendering of one user turn, or the raw text."""
    if not chat:
        return list(tokenizer(prompt)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True but the tokenizer has no chat_template")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def resolve_stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids that end generation: the tokenizer's EOS, then ``<|im_end|>`` if the vocab has it."""
    stop_ids = []
    if tokenizer.eos_token_id is not None:
        stop_ids.append(int(tokenizer.eos_token_id))
    end_of_turn = tokenizer.get_vocab().get(END_OF_TURN_TOKEN)
    if end_of_turn is not None and end_of_turn not in stop_ids:
        stop_ids.append(int(end_of_turn))
    if not stop_ids:
        raise ValueError(f"tokenizer has neither an eos_token nor {END_OF_TURN_TOKEN}")
    return stop_ids


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {path}")


def _require_file(directory: Path, name: str, what: str) -> None:
    _require_dir(directory, what)
    if not (directory / name).is_file():
        raise FileNotFoundError(f"{what} directory {directory} has no {name}")
