"""Perplexity and bits per byte per language group (en, zh, ja, code) on the held-out validation documents.

The token shards pack every validation document into one id stream, so a block's language is lost
there. Here the validation documents themselves (the tokenizer stage's split of the cleaned
documents: ``lmforge.data.splits.assign_split`` with ``tokenizer.shards``' fraction and seed) are
grouped by ``lmforge.data.documents.language_group(metadata)``, the one key every per-language count
uses, and each group is scored on its own.

- **The same text for every model**: each group keeps at most ``max_chars`` characters (documents
  in input order, the last one cut), chosen before any tokenizer sees them, so base and SFT (and a
  foreign model with another vocabulary) are scored on identical text and their bits per byte compare.
- **Encoding**: each document as the shards encode it (``hf_encoder.encode_documents``: BOS where
  the tokenizer starts text with it, then EOS), cut into pieces of at most ``seq_len`` tokens; each
  piece is scored alone (its first token is context only), with ``evaluate_masked_perplexity``
  (labels = ids), so short documents need no packing and no group borrows context from another.
- **Bits per byte** = summed token NLL in bits / UTF-8 bytes of the scored tokens (the model's byte
  table, ``heldout.HeldoutData.token_bytes``): tokenizer-independent, the number to compare across
  languages and models. Perplexity per token is reported too but depends on the tokenizer (a Chinese
  character in byte fallback is three easy tokens).

Limits: a group with no validation document is absent from the metrics (logged), not zero; a
group's numbers rest on ``max_chars`` characters (``documents`` and ``bytes`` say how many), so
small groups are noisy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def collect_language_texts(records: Iterable[Mapping[str, Any]], *, languages: Sequence[str],
                           max_chars: int) -> dict[str, list[str]]:
    """``{group: texts}`` of the validation ``records`` (``{"text", "metadata"}``) per ``language_group``.

    Only the groups in ``languages`` are kept (in that order), each up to ``max_chars`` characters (the
    last text cut to fit); reading stops once every group is full. Empty groups are left out.
    """
    from lmforge.data.documents import language_group

    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    texts: dict[str, list[str]] = {group: [] for group in languages}
    room = dict.fromkeys(languages, max_chars)
    ignored: dict[str, int] = {}
    for record in records:
        group = language_group(record.get("metadata") or {})
        if group not in room:
            ignored[group] = ignored.get(group, 0) + 1
            continue
        if room[group] <= 0:
            continue
        text = str(record["text"])[: room[group]]
        if text:
            texts[group].append(text)
            room[group] -= len(text)
        if all(left <= 0 for left in room.values()):
            break
    missing = [g for g, t in texts.items() if not t]
    if missing:
        logger.warning("per-language held-out: no validation document of %s", ", ".join(missing))
    if ignored:
        logger.info("per-language held-out: groups not in evaluation.by_language.languages left out: %s", ignored)
    return {group: t for group, t in texts.items() if t}


def encode_pieces(texts: Sequence[str], tokenizer: Any, *, seq_len: int) -> list[list[int]]:
    """Each text as the shards encode it ([BOS] ids EOS), cut into pieces of 2..``seq_len`` tokens."""
    from lmforge.tokenizer.hf_encoder import encode_documents, leading_bos

    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: held-out documents could not be ended")
    pieces = []
    for ids in encode_documents(tokenizer, list(texts), leading_bos(tokenizer)):
        ids = [*ids, int(eos)]
        pieces += [ids[i : i + seq_len] for i in range(0, len(ids), seq_len) if len(ids[i : i + seq_len]) >= 2]
    return pieces


def score_by_language(model: Any, tokenizer: Any, texts: Mapping[str, Sequence[str]], *, token_bytes: np.ndarray,
                      seq_len: int, pad_id: int, batch_size: int = 8) -> dict[str, dict[str, float]]:
    """``{group: {loss, perplexity, bits_per_token, tokens, bytes, bits_per_byte, documents, chars}}``."""
    from lmforge.evaluation.perplexity import evaluate_masked_perplexity

    results: dict[str, dict[str, float]] = {}
    for group, group_texts in texts.items():
        pieces = encode_pieces(group_texts, tokenizer, seq_len=seq_len)
        if not sum(int(token_bytes[p[1:]].sum()) for p in map(np.asarray, pieces)):
            logger.warning("per-language held-out: %s has no scored text (no byte after the first token); left out",
                           group)
            continue
        metrics = evaluate_masked_perplexity(model, [(p, p) for p in pieces], batch_size=batch_size, pad_id=pad_id,
                                             token_bytes=token_bytes)
        metrics.update(documents=float(len(group_texts)), chars=float(sum(len(t) for t in group_texts)))
        results[group] = metrics
        logger.info("held-out %s: %.3f bits/byte over %d bytes (%d documents)", group, metrics["bits_per_byte"],
                    metrics["bytes"], len(group_texts))
    return results
