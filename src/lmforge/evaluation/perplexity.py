"""Token-weighted perplexity of a causal LM on packed pretraining blocks and on SFT examples.

Two entry points share one accumulator:

- `evaluate_lm_perplexity` scores packed blocks ``[N, T]`` (the pretraining format, often a
  ``np.memmap`` of uint16/uint32 ids): every position but the first of each block is a target.
- `evaluate_masked_perplexity` scores SFT examples ``(input_ids, labels)`` where ``labels`` is aligned
  with ``input_ids`` (Hugging Face convention: the model shifts) and ``-100`` marks positions that do
  not count (prompt, padding).

Both sum per-token cross-entropy over the whole set and divide by the number of scored tokens,
so the result does not depend on batch size, padding or the order of examples (a mean of batch
means would weight short batches too heavily). The sum is kept in float64.

Returned metrics (flat dict of floats): ``loss`` (nats per token), ``perplexity`` (exp(loss)),
``bits_per_token`` (loss / ln 2) and ``tokens`` (number of scored tokens). Degenerate models score what
they are (tests/evaluation/test_eval_degenerate.py): uniform logits give perplexity = vocabulary size,
all mass on one token a huge (or inf) perplexity, NaN logits NaN (never a number a bound could accept).

With ``token_bytes`` (the UTF-8 length of each vocabulary entry, from :func:`token_byte_lengths`)
they also return ``bytes`` (UTF-8 bytes of the scored target tokens) and ``bits_per_byte`` = total
bits / bytes. Perplexity per token depends on the tokenizer (a bigger vocabulary makes fewer, harder
tokens); bits per byte does not, so runs with different tokenizers stay comparable on it. Special
and chat-structure tokens (BOS/EOS/PAD, ``<|im_end|>``...) count 0 bytes: their loss is kept in
the numerator (they are predicted like any token) but they add no text.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label value that excludes a position from the loss (the Hugging Face / PyTorch convention)."""


def evaluate_lm_perplexity(
    model: Any,
    blocks: np.ndarray | Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    max_blocks: int | None = None,
    token_bytes: np.ndarray | None = None,
) -> dict[str, float]:
    """Score packed token blocks ``[N, T]``: mean next-token loss over all ``N * (T - 1)`` targets.

    ``blocks`` may be a (memory-mapped) numpy array or a list of equal-length id lists; only
    ``batch_size`` rows are materialised at a time. ``max_blocks`` keeps the first blocks only.
    """
    import torch

    _check_batch_size(batch_size)
    n_blocks = len(blocks)
    if max_blocks is not None:
        n_blocks = min(n_blocks, max_blocks)
    if n_blocks == 0:
        raise ValueError("no blocks to evaluate")

    device = _model_device(model)
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, n_blocks, batch_size):
            rows = blocks[start : min(start + batch_size, n_blocks)]
            ids = torch.from_numpy(_to_id_matrix(rows)).to(device)  # (B, T)
            if ids.shape[1] < 2:
                raise ValueError(f"blocks need at least 2 tokens, got length {ids.shape[1]}")
            logits = model(input_ids=ids).logits  # (B, T, V)
            nats, tokens = _sum_shifted_loss(logits, ids)
            total_nats += nats
            total_tokens += tokens
            total_bytes += _count_target_bytes(ids, token_bytes)
    metrics = _summarize(total_nats, total_tokens, total_bytes if token_bytes is not None else None)
    logger.info("LM perplexity on %d blocks: %s", n_blocks, metrics)
    return metrics


def evaluate_masked_perplexity(
    model: Any,
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 8,
    pad_id: int,
    token_bytes: np.ndarray | None = None,
) -> dict[str, float]:
    """Score SFT examples ``(input_ids, labels)``: mean loss over label positions that are not -100.

    Examples are grouped by length (less padding), right-padded with ``pad_id`` under an attention
    mask, and every scored token weighs the same whatever its batch.
    """
    import torch

    _check_batch_size(batch_size)
    if len(examples) == 0:
        raise ValueError("no examples to evaluate")
    for i, (input_ids, labels) in enumerate(examples):
        if len(input_ids) != len(labels):
            raise ValueError(f"example {i}: input_ids ({len(input_ids)}) and labels ({len(labels)}) differ in length")
        if len(input_ids) == 0:
            raise ValueError(f"example {i} is empty")

    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    device = _model_device(model)
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[start : start + batch_size]]
            ids, labels, mask = _pad_right(batch, pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, L, V)
            nats, tokens = _sum_shifted_loss(logits, labels.to(device))
            total_nats += nats
            total_tokens += tokens
            total_bytes += _count_target_bytes(labels, token_bytes)
    if total_tokens == 0:
        raise ValueError("every label is masked (-100): nothing to score")
    metrics = _summarize(total_nats, total_tokens, total_bytes if token_bytes is not None else None)
    logger.info("masked perplexity on %d examples: %s", len(examples), metrics)
    return metrics


def _sum_shifted_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """Sum of cross-entropy of position t predicting ``targets[t + 1]``, and how many were scored."""
    import torch.nn.functional as F

    shifted_logits = logits[:, :-1, :].float()  # (B, T-1, V): fp32 for a stable log-softmax
    shifted_targets = targets[:, 1:]  # (B, T-1)
    nats = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    tokens = int((shifted_targets != IGNORE_INDEX).sum())
    return float(nats.double()), tokens


def _pad_right(
    batch: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch to its longest example: ids with ``pad_id``, labels with -100, mask with 0."""
    import torch

    width = max(len(input_ids) for input_ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, L)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, L)
    for row, (input_ids, example_labels) in enumerate(batch):
        n = len(input_ids)
        ids[row, :n] = torch.as_tensor(np.asarray(input_ids, dtype=np.int64))
        labels[row, :n] = torch.as_tensor(np.asarray(example_labels, dtype=np.int64))
        mask[row, :n] = 1
    return ids, labels, mask


def _to_id_matrix(rows: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Copy a slice of blocks into a contiguous int64 matrix (torch has no uint16/uint32 indexing)."""
    try:
        matrix = np.asarray(rows, dtype=np.int64)
    except ValueError as err:  # ragged list of lists
        raise ValueError("blocks must all have the same length (packed [N, T])") from err
    if matrix.ndim != 2:
        raise ValueError(f"blocks must be 2-D [N, T], got shape {matrix.shape}")
    return np.ascontiguousarray(matrix)


def token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """UTF-8 byte length of every id of an lmforge ``SentencePieceTokenizer`` (``vocab_size``,
    ``id_to_token``, ``special_ids``, ``user_defined_symbols``): ``<0xHH>`` byte-fallback pieces are 1
    byte, ``▁`` is a space, control and user-defined (chat-structure) symbols are 0 bytes."""
    structural = set(tokenizer.special_ids) | {tokenizer.token_to_id(s) for s in tokenizer.user_defined_symbols}
    lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for i in range(tokenizer.vocab_size):
        if i in structural:
            continue
        piece = tokenizer.id_to_token(i)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            lengths[i] = 1
        else:
            lengths[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return lengths


def _count_target_bytes(targets: torch.Tensor, token_bytes: np.ndarray | None) -> int:
    """UTF-8 bytes of the scored targets (positions 1.. that are not -100); 0 without a table."""
    if token_bytes is None:
        return 0
    shifted = targets[:, 1:].cpu().numpy()  # (B, T-1)
    scored = shifted[shifted != IGNORE_INDEX]
    if scored.size and (scored.min() < 0 or scored.max() >= len(token_bytes)):
        raise ValueError(f"token id out of range of token_bytes (size {len(token_bytes)}): "
                         f"min {scored.min()}, max {scored.max()}; use the model's own tokenizer")
    return int(token_bytes[scored].sum())


def _summarize(total_nats: float, total_tokens: int, total_bytes: int | None = None) -> dict[str, float]:
    """Turn a summed loss into the metric dict shared by both evaluators."""
    loss = total_nats / total_tokens
    if math.isnan(loss):
        # NaN/inf logits (a diverged model). NaN, not inf: an inf perplexity would pass a lower bound such as
        # the gate's `sft.sft_pairs.perplexity: {min: 1}`, while NaN fails every bound.
        logger.warning("the loss over %d tokens is NaN (the model's logits hold NaN or inf)", total_tokens)
        perplexity = math.nan
    else:
        perplexity = math.exp(loss) if loss < 700 else math.inf  # exp overflows past ~709
    metrics = {
        "loss": loss,
        "perplexity": perplexity,
        "bits_per_token": loss / math.log(2),
        "tokens": float(total_tokens),
    }
    if total_bytes is not None:
        if total_bytes == 0:
            raise ValueError("the scored tokens decode to 0 bytes: bits per byte is undefined")
        metrics["bytes"] = float(total_bytes)
        metrics["bits_per_byte"] = total_nats / math.log(2) / total_bytes
    return metrics


def _model_device(model: Any) -> torch.device:
    """Device of the model's first parameter (where inputs must go)."""
    return next(model.parameters()).device


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Put the model in eval mode (no dropout) and restore its previous mode afterwards,
    so calling an evaluator in the middle of training does not silently stop training mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
