"""The in-memory reference of token-shard packing, for tests only.

``pack_documents`` encodes documents one by one and cuts blocks with numpy; ``write_token_shards``
writes blocks already in memory as ``<split>-NNNNN.npy`` + ``index.json``. Together they are the
simple, obviously-right oracle that the stage's streaming writer (``stream_token_shards``, several
encoding processes, shard by shard) must reproduce byte for byte.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.tokenizer.dtypes import choose_token_dtype
from lmforge.tokenizer.shards import INDEX_FILE

if TYPE_CHECKING:
    import numpy as np

    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

logger = logging.getLogger(__name__)


def pack_documents(texts: Iterable[str], tokenizer: SentencePieceTokenizer, seq_len: int) -> np.ndarray:
    """Encode each text, append EOS after each, concatenate and cut into ``[n_blocks, seq_len]``.

    Special-token text inside documents is NOT turned into special ids (``parse_special=False``), so
    a document cannot inject an EOS. The incomplete last block is dropped.
    """
    import numpy as np

    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    dtype = choose_token_dtype(tokenizer.vocab_size)
    chunks: list[np.ndarray] = []
    n_docs = 0
    for text in texts:
        ids = tokenizer.encode(text, parse_special=False)
        ids.append(tokenizer.eos_id)
        chunks.append(np.asarray(ids, dtype=dtype))
        n_docs += 1
    stream = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
    n_blocks = len(stream) // seq_len
    dropped = len(stream) - n_blocks * seq_len
    logger.info(
        "Packed %d documents into %d tokens: %d blocks of %d, %d tail tokens dropped",
        n_docs, len(stream), n_blocks, seq_len, dropped,
    )
    return stream[: n_blocks * seq_len].reshape(n_blocks, seq_len)


def write_token_shards(
    out_dir: str | Path,
    splits: dict[str, np.ndarray],
    *,
    tokenizer_sha256: str,
    seq_len: int,
    blocks_per_shard: int = 4096,
    extra_metadata: dict | None = None,
) -> dict:
    """Write each split as ``<split>-NNNNN.npy`` shards plus ``index.json``; return the index."""
    import numpy as np

    if blocks_per_shard < 1:
        raise ValueError(f"blocks_per_shard must be positive, got {blocks_per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtypes = {str(np.asarray(blocks).dtype) for blocks in splits.values()}
    if len(dtypes) > 1:
        raise ValueError(f"All splits must share one dtype, got {sorted(dtypes)}")
    dtype = dtypes.pop() if dtypes else "uint16"

    index: dict[str, Any] = {
        **(extra_metadata or {}),
        "seq_len": seq_len,
        "dtype": dtype,
        "tokenizer_sha256": tokenizer_sha256,
        "splits": {},
    }
    for name, blocks in splits.items():
        blocks = np.asarray(blocks)
        if blocks.ndim != 2 or blocks.shape[1] != seq_len:
            raise ValueError(f"Split {name!r}: expected shape [n, {seq_len}], got {list(blocks.shape)}")
        shards = []
        for k, start in enumerate(range(0, max(len(blocks), 1), blocks_per_shard)):
            filename = f"{name}-{k:05d}.npy"
            np.save(out / filename, np.ascontiguousarray(blocks[start : start + blocks_per_shard]))
            shards.append(filename)
        index["splits"][name] = {"shards": shards, "n_blocks": len(blocks), "n_tokens": int(blocks.size)}
        logger.info("Wrote split %s: %d blocks in %d shards to %s", name, len(blocks), len(shards), out)
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", "utf-8")
    return index
