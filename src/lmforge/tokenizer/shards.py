"""Packed token shards for pretraining: fixed-length blocks on disk, tied to one tokenizer.

Why: pretraining reads the same tokens many times; tokenising once into ``.npy`` blocks that are
memory-mapped keeps the training loop free of text handling and makes its input a versioned artifact.
Layout of a shard folder::

    index.json          {seq_len, dtype, tokenizer_sha256, splits: {name: {shards, n_blocks, n_tokens}}, ...}
    train-00000.npy     uint16 (or uint32) array [blocks, seq_len]; np.load(mmap_mode="r") works
    train-00001.npy     ...
    validation-00000.npy

Packing: each document's ids are followed by EOS, documents are concatenated and cut into full
blocks of ``seq_len``; the tail that does not fill a block is dropped (and counted in the log).
``index.json`` records the tokenizer's SHA-256 so a model is never trained on tokens from another
tokenizer: ``TokenShards.open(..., expected_tokenizer_sha256=...)`` refuses a mismatch. Given each
document's labels (language group, source, licence), it also records ``token_counts``: per split, one
row ``{language, source, license, documents, tokens}`` per label combination (tokens of the documents
themselves, EOS not counted, before the tail of the last block is dropped), which the tokenizer and
pretrain stages report per language and the model card per source and licence.

The writer is ``stream_token_shards``: documents are encoded by several processes (``encode``) and
written shard by shard, so memory holds one shard and a few batches, never the whole corpus. (The
in-memory reference it is tested against, ``pack_documents`` + ``write_token_shards``, lives in
``tests/tokenizer/shard_oracles.py``.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.tokenizer.dtypes import choose_token_dtype

if TYPE_CHECKING:
    import numpy as np

    from lmforge.data.executor import ExecutorConfig
    from lmforge.tokenizer.encode import TextTokenizer

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
SHARD_DISK_FULL_NEXT_STEP = "point the catalog's token_shards entry at a larger disk; then rerun the tokenizer stage"


class ShardWriter:
    """Cut one split's token stream into ``seq_len`` blocks; write each full shard as soon as it fills."""

    def __init__(self, out_dir: Path, split: str, *, seq_len: int, blocks_per_shard: int, dtype: str):
        import numpy as np

        if seq_len < 1 or blocks_per_shard < 1:
            raise ValueError(f"seq_len and blocks_per_shard must be positive, got {seq_len}, {blocks_per_shard}")
        self.out_dir, self.split, self.seq_len = out_dir, split, seq_len
        self._buffer = np.empty(seq_len * blocks_per_shard, dtype=dtype)
        self._fill = 0
        self.shards: list[str] = []
        self.n_blocks = 0
        self.tokens_seen = 0

    def write(self, ids: np.ndarray) -> None:
        """Append ``ids`` to the stream."""
        self.tokens_seen += len(ids)
        pos, capacity = 0, len(self._buffer)
        while pos < len(ids):
            take = min(capacity - self._fill, len(ids) - pos)
            self._buffer[self._fill : self._fill + take] = ids[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == capacity:
                self._flush()

    def _flush(self) -> None:
        import numpy as np

        n = self._fill // self.seq_len
        filename = f"{self.split}-{len(self.shards):05d}.npy"
        try:
            np.save(self.out_dir / filename, self._buffer[: n * self.seq_len].reshape(n, self.seq_len))
        except OSError as err:
            from lmforge.errors import disk_full_error, is_disk_full

            (self.out_dir / filename).unlink(missing_ok=True)  # never a truncated shard beside the complete ones
            if is_disk_full(err, self.out_dir):
                raise disk_full_error(self.out_dir / filename, "token shard", SHARD_DISK_FULL_NEXT_STEP) from err
            raise
        self.shards.append(filename)
        self.n_blocks += n
        self._fill = 0

    def close(self) -> dict[str, Any]:
        """Write the last (partial) shard, drop the tail that does not fill a block; return the split's index."""
        dropped = self._fill % self.seq_len
        if self._fill - dropped > 0 or not self.shards:  # an empty split still gets one (empty) shard
            self._fill -= dropped
            self._flush()
        logger.info("Wrote split %s: %d tokens, %d blocks of %d in %d shards, %d tail tokens dropped",
                    self.split, self.tokens_seen, self.n_blocks, self.seq_len, len(self.shards), dropped)
        return {"shards": self.shards, "n_blocks": self.n_blocks, "n_tokens": self.n_blocks * self.seq_len}


def stream_token_shards(
    out_dir: str | Path,
    split_texts: dict[str, Iterable[str]],
    tokenizer: TextTokenizer,
    *,
    seq_len: int,
    blocks_per_shard: int = 4096,
    executor: ExecutorConfig | None = None,
    extra_metadata: dict | None = None,
    split_labels: dict[str, Iterable[Mapping[str, str]]] | None = None,
) -> dict:
    """Encode each split's documents (EOS after each) on ``executor`` (None: in this process) and write its shards.

    Each document's ids (special-token text NOT parsed, so a document cannot inject an EOS) are followed
    by EOS, concatenated and cut into ``[n_blocks, seq_len]`` blocks; the incomplete last block is
    dropped. Memory is bounded by one shard per split plus the batches in flight.
    ``index["documents"]`` counts documents. ``split_labels`` (one label dict per document of each split,
    in order, e.g. `lmforge.tokenizer.metrics.document_labels`) adds ``index["token_counts"]``.
    """
    from lmforge.tokenizer.encode import encode_documents

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = choose_token_dtype(tokenizer.vocab_size)
    splits: dict[str, Any] = {}
    documents: dict[str, int] = {}
    token_counts: dict[str, list[dict[str, Any]]] = {}
    for name, texts in split_texts.items():
        writer = ShardWriter(out, name, seq_len=seq_len, blocks_per_shard=blocks_per_shard, dtype=dtype)
        counter = LabelTokenCounter(split_labels[name], tokenizer.eos_id) if split_labels is not None else None
        documents[name] = 0
        for n_docs, ids in encode_documents(texts, tokenizer, executor=executor):
            documents[name] += n_docs
            writer.write(ids)
            if counter is not None:
                counter.add(n_docs, ids)
        splits[name] = writer.close()
        if counter is not None:
            token_counts[name] = counter.rows()
    index: dict[str, Any] = {**(extra_metadata or {}), "documents": documents, "seq_len": seq_len, "dtype": dtype,
                             "tokenizer_sha256": tokenizer.sha256, "splits": splits}
    if split_labels is not None:
        index["token_counts"] = token_counts
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", "utf-8")
    return index


class LabelTokenCounter:
    """Documents and tokens per label combination of one split, from the EOS-terminated batches it is fed.

    A document's tokens are the ids before its EOS (documents are encoded with special-token text not
    parsed, so EOS occurs only at document ends); the labels are consumed in document order.
    """

    def __init__(self, labels: Iterable[Mapping[str, str]], eos_id: int):
        self._labels = iter(labels)
        self._eos_id = eos_id
        self._counts: dict[tuple[tuple[str, str], ...], list[int]] = {}

    def add(self, n_docs: int, ids: np.ndarray) -> None:
        import numpy as np

        ends = np.flatnonzero(ids == self._eos_id)
        if len(ends) != n_docs:
            raise ValueError(f"a batch of {n_docs} documents holds {len(ends)} EOS tokens: cannot count tokens per "
                             "document (does the tokenizer emit EOS inside documents?)")
        lengths = np.diff(ends, prepend=-1) - 1
        for length in lengths.tolist():
            labels = next(self._labels, None)
            if labels is None:
                raise ValueError("more documents than labels: give one label dict per document of the split")
            count = self._counts.setdefault(tuple(sorted(labels.items())), [0, 0])
            count[0] += 1
            count[1] += length

    def rows(self) -> list[dict[str, Any]]:
        """``[{<label>: value, ..., "documents": n, "tokens": n}]``, sorted by label values."""
        if next(self._labels, None) is not None:
            raise ValueError("fewer documents than labels: give one label dict per document of the split")
        return [{**dict(key), "documents": docs, "tokens": tokens}
                for key, (docs, tokens) in sorted(self._counts.items())]


def read_token_counts(directory: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """The ``token_counts`` rows of one split recorded in a shard folder's index (empty if none were)."""
    index = json.loads((Path(directory) / INDEX_FILE).read_text("utf-8"))
    return list((index.get("token_counts") or {}).get(split, []))


class TokenShards:
    """Read-only, memory-mapped view of a shard folder written by ``stream_token_shards``."""

    def __init__(self, root: Path, index: dict):
        self.root = root
        self.index = index
        self._arrays: dict[str, list[np.ndarray]] = {}
        self._offsets: dict[str, list[int]] = {}  # first block number of each shard, per split

    @classmethod
    def open(cls, directory: str | Path, *, expected_tokenizer_sha256: str | None = None) -> TokenShards:
        """Open a shard folder; raise if it is missing or was made with another tokenizer."""
        root = Path(directory)
        index_path = root / INDEX_FILE
        if not root.is_dir():
            raise FileNotFoundError(f"Token shard folder {root} does not exist")
        if not index_path.is_file():
            raise FileNotFoundError(f"Token shard folder {root} has no {INDEX_FILE} (not written by stream_token_shards?)")
        index = json.loads(index_path.read_text("utf-8"))
        found = index.get("tokenizer_sha256")
        if expected_tokenizer_sha256 is not None and found != expected_tokenizer_sha256:
            raise ValueError(
                f"Token shards in {root} were made with tokenizer sha256 {found}, "
                f"but the expected tokenizer has sha256 {expected_tokenizer_sha256}: re-tokenize the data"
            )
        return cls(root, index)

    @property
    def seq_len(self) -> int:
        return int(self.index["seq_len"])

    @property
    def splits(self) -> list[str]:
        return list(self.index["splits"])

    def _split_info(self, split: str) -> dict:
        try:
            return self.index["splits"][split]
        except KeyError:
            raise KeyError(f"No split {split!r} in {self.root}; splits: {self.splits}") from None

    def _load(self, split: str) -> tuple[list[np.ndarray], list[int]]:
        if split not in self._arrays:
            import numpy as np

            arrays = [np.load(self.root / name, mmap_mode="r") for name in self._split_info(split)["shards"]]
            offsets, total = [], 0
            for array in arrays:
                offsets.append(total)
                total += len(array)
            self._arrays[split], self._offsets[split] = arrays, offsets
        return self._arrays[split], self._offsets[split]

    def n_blocks(self, split: str) -> int:
        return int(self._split_info(split)["n_blocks"])

    def block(self, split: str, i: int) -> np.ndarray:
        """Block ``i`` (shape [seq_len], memory-mapped) of ``split``; negative indexes count from the end."""
        import bisect

        n = self.n_blocks(split)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"Block {i} out of range for split {split!r} with {n} blocks")
        arrays, offsets = self._load(split)
        k = bisect.bisect_right(offsets, i) - 1
        return arrays[k][i - offsets[k]]

    def iter_blocks(self, split: str) -> Iterator[np.ndarray]:
        """Yield every block of ``split`` in order."""
        arrays, _ = self._load(split)
        for array in arrays:
            yield from array
