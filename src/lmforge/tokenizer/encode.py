"""Encode documents into EOS-terminated token arrays, in order, with several processes.

Why processes: sentencepiece encoding is the slow step of building token shards (~5 MB/s per core)
and the GIL keeps threads from helping the Python side. Each worker loads the tokenizer once
(``SentencePieceTokenizer`` pickles as its bytes; a base model's ``HFTextEncoder`` as its directory)
and encodes batches of documents with the tokenizer's batch API. Memory stays bounded: at most
``2 * num_proc`` batches are in flight, and results come back in input order, so the output is
identical whatever ``num_proc`` is.

Workers are started with ``spawn`` (not ``fork``): the parent may hold threads (MLflow, Kedro hooks),
and the worker function is a top-level function of this importable module. Each worker ends itself
when the process that made the pool is gone (``lmforge.processes.guard_process``), even after a SIGKILL
(measured: 0.1 s for workers busy encoding).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class TextTokenizer(Protocol):
    """What encoding into token shards needs of a tokenizer: ``SentencePieceTokenizer`` (lmforge's own)
    or ``HFTextEncoder`` (a base model's). It must pickle (the encoding processes receive it)."""

    @property
    def vocab_size(self) -> int: ...  # every id it can produce is below this (the shard dtype follows it)

    @property
    def eos_id(self) -> int: ...

    @property
    def sha256(self) -> str: ...  # recorded in the shards' index.json

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...  # special-token text NOT parsed


_WORKER_TOKENIZER: TextTokenizer | None = None


def _init_worker(tokenizer: TextTokenizer, owner: str | None = None) -> None:
    global _WORKER_TOKENIZER
    from lmforge.processes import guard_process

    guard_process(owner)  # a pool worker blocks on its task queue forever once the parent is SIGKILLed
    _WORKER_TOKENIZER = tokenizer  # unpickled once per worker (SentencePieceTokenizer rebuilds from its bytes)


def encode_batch_with_eos(texts: list[str], tokenizer: TextTokenizer | None = None) -> np.ndarray:
    """Ids of ``texts`` (special-token text NOT parsed), each followed by EOS, as one flat array."""
    import numpy as np

    from lmforge.tokenizer.dtypes import choose_token_dtype

    tok = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    if tok is None:
        raise RuntimeError("encode_batch_with_eos needs a tokenizer (or a worker started by encode_documents)")
    flat: list[int] = []
    eos = tok.eos_id
    for ids in tok.encode_batch(texts):
        flat.extend(ids)
        flat.append(eos)
    return np.asarray(flat, dtype=choose_token_dtype(tok.vocab_size))


def batch_texts(texts: Iterable[str], batch_bytes: int) -> Iterator[list[str]]:
    """Group texts into lists of about ``batch_bytes`` characters (a text is never split)."""
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_documents(texts: Iterable[str], tokenizer: TextTokenizer, *, num_proc: int = 1,
                     batch_bytes: int = 1 << 20) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(n_documents, flat ids with EOS after each document)`` per batch, in input order."""
    if num_proc < 1:
        raise ValueError(f"num_proc must be >= 1, got {num_proc}")
    batches = batch_texts(texts, batch_bytes)
    if num_proc == 1:
        for batch in batches:
            yield len(batch), encode_batch_with_eos(batch, tokenizer)
        return

    import multiprocessing

    from lmforge.processes import owner_token

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(tokenizer, owner_token())) as pool:
        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append((len(batch), pool.apply_async(encode_batch_with_eos, (batch,))))
            if len(pending) >= 2 * num_proc:  # bounded look-ahead: never the whole corpus in flight
                n, result = pending.popleft()
                yield n, result.get()
        while pending:
            n, result = pending.popleft()
            yield n, result.get()
