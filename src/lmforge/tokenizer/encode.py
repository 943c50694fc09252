"""Encode documents into EOS-terminated token arrays, in order, on the data stage's executor.

Why workers: sentencepiece encoding is the slow step of building token shards (~5 MB/s per core)
and the GIL keeps threads from helping the Python side. Batches of documents run on the executor of
``lmforge.data.executor`` (``tokenizer.executor``, the same ``${globals:executor}`` block as the data
stage: "local" process pool, "sequential" or "ray"): the tokenizer is the executor's ``context``, sent
once per worker (``SentencePieceTokenizer`` pickles as its bytes; a base model's ``HFTextEncoder`` as
its directory, which must then be readable on every Ray node), never once per batch. Memory stays
bounded: at most ``2 x workers`` batches are in flight, and results come back in input order, so the
shards are byte-identical whatever the executor and its number of workers.

A "local" pool is started with ``spawn`` unless ``executor.start_method`` says otherwise (not ``fork``:
the parent may hold threads, MLflow's and Kedro hooks'); the worker function is a top-level function of
this importable module. Each worker ends itself when the process that made the pool is gone
(``lmforge.processes.guard_process``), even after a SIGKILL (measured: 0.1 s for workers busy encoding).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from lmforge.data.executor import ExecutorConfig


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


def encode_batch_with_eos(texts: list[str], tokenizer: TextTokenizer) -> np.ndarray:
    """Ids of ``texts`` (special-token text NOT parsed), each followed by EOS, as one flat array."""
    import numpy as np

    from lmforge.tokenizer.dtypes import choose_token_dtype

    flat: list[int] = []
    eos = tokenizer.eos_id
    for ids in tokenizer.encode_batch(texts):
        flat.extend(ids)
        flat.append(eos)
    return np.asarray(flat, dtype=choose_token_dtype(tokenizer.vocab_size))


def encode_counted_batch(texts: list[str], tokenizer: TextTokenizer) -> tuple[int, np.ndarray]:
    """``(len(texts), encode_batch_with_eos(texts))``: one executor task."""
    return len(texts), encode_batch_with_eos(texts, tokenizer)


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


def encode_documents(texts: Iterable[str], tokenizer: TextTokenizer, *, executor: ExecutorConfig | None = None,
                     batch_bytes: int = 1 << 20) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(n_documents, flat ids with EOS after each document)`` per batch, in input order, encoded on
    ``executor`` (None: in this process)."""
    from dataclasses import replace

    from lmforge.data.executor import ExecutorConfig, map_in_order

    executor = executor or ExecutorConfig(kind="sequential")
    if executor.kind == "local" and executor.start_method is None:
        executor = replace(executor, start_method="spawn")
    yield from map_in_order(encode_counted_batch, batch_texts(texts, batch_bytes), executor, context=tokenizer)
