"""A base model's own Hugging Face tokenizer as the encoder of token shards (continued pretraining).

Continued pretraining trains a model on ids of ITS vocabulary: the cleaned corpus is re-tokenized with
the tokenizer in the model's directory (``AutoTokenizer``) into the same shard layout the tokenizer
stage writes (``shards.stream_token_shards``; same split by document id, same block length), so the
training worker reads both alike. ``HFTextEncoder`` gives that writer what it needs of a tokenizer.

Each document is encoded without parsing special-token text (``split_special_tokens``: a document that
contains ``<|im_end|>`` cannot inject the control token), preceded by BOS when the tokenizer itself
adds BOS to the text it encodes (Llama 3, Gemma: what the model saw in its own pretraining; Qwen2 adds
none) and followed by its EOS, which separates documents as in the tokenizer stage. A tokenizer
without an EOS token is refused: documents would run into each other.

The shards' ``index.json`` records ``tokenizer_sha256 = hf_tokenizer_sha256(tokenizer)``: a hash of the
vocabulary, the special tokens and the ids of a fixed probe text as the tokenizer encodes it (so a
different normalizer, pre-tokenizer, merges or BOS rule changes it). The chat template is NOT part of
it (plain text does not use it), so a checkpoint that saved the same tokenizer with a template gets the
same hash: to find the shards that match a model, compute ``hf_tokenizer_sha256`` of its tokenizer.
``index.json`` also says ``tokenizer_kind: huggingface`` and ``tokenizer_source`` (the model directory).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.data.executor import ExecutorConfig

logger = logging.getLogger(__name__)

# Encoded by ``hf_tokenizer_sha256`` with the tokenizer's own special-token rule: covers normalisation,
# pre-tokenisation (whitespace, digits, code indentation), CJK and BOS/EOS added on encode.
_PROBE_TEXT = "Hello, World!  def f(x):\n\treturn x ** 2  # 12345 héllo 你好 こんにちは\n"


def hf_tokenizer_sha256(tokenizer: Any) -> str:
    """Fingerprint of what decides a Hugging Face tokenizer's ids for plain text (not its chat template)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
    digest.update(json.dumps(list(tokenizer.all_special_tokens)).encode("utf-8"))
    digest.update(json.dumps(list(tokenizer(_PROBE_TEXT)["input_ids"])).encode("utf-8"))
    return digest.hexdigest()


def leading_bos(tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer itself starts text with it (Llama 3, Gemma), else None (Qwen2, BLOOM)."""
    bos = tokenizer.bos_token_id
    first = tokenizer("a")["input_ids"]
    return int(bos) if bos is not None and first and first[0] == bos else None


def encode_documents(tokenizer: Any, texts: list[str], bos_id: int | None) -> list[list[int]]:
    """Ids of each document (special-token text not parsed), after ``bos_id`` when given; no EOS."""
    encoded = tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    head = [bos_id] if bos_id is not None else []
    return [head + list(ids) for ids in encoded]


class HFTextEncoder:
    """The tokenizer of a Hugging Face model directory, as ``encode.TextTokenizer`` (pickles as its directory)."""

    def __init__(self, tokenizer_dir: str | Path, *, trust_remote_code: bool = False):
        from transformers import AutoTokenizer

        self.source = str(tokenizer_dir)
        self.trust_remote_code = trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True,
                                                       trust_remote_code=trust_remote_code)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer of {self.source} has no EOS token: documents could not be separated "
                             "in the token shards; give it one (eos_token in tokenizer_config.json)")
        self.bos_id = leading_bos(self.tokenizer)  # the tokenizer's own rule: does it start text with BOS?
        self.sha256 = hf_tokenizer_sha256(self.tokenizer)

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "trust_remote_code": self.trust_remote_code}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], trust_remote_code=state["trust_remote_code"])

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer produces is below this (base vocabulary and added tokens)."""
        return len(self.tokenizer)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text (special-token text not parsed), after BOS where the tokenizer adds one; no EOS."""
        return encode_documents(self.tokenizer, texts, self.bos_id)


def with_progress(texts: Iterable[str], split: str, total: int | None = None) -> Iterator[str]:
    """``texts`` with a progress bar (documents of one split)."""
    from tqdm import tqdm

    yield from tqdm(texts, desc=f"tokenize {split}", unit="doc", total=total)


def build_model_token_shards_dir(split_texts: dict[str, list[str]], model_dir: str | Path, out_dir: str | Path, *,
                                 seq_len: int, blocks_per_shard: int, executor: ExecutorConfig | None = None,
                                 trust_remote_code: bool = False) -> dict[str, Any]:
    """Encode each split with ``model_dir``'s own tokenizer into ``seq_len`` blocks, as shards in ``out_dir``.

    Returns the counts the tokenizer stage reports (``<split>_blocks``, ``<split>_tokens``) plus the
    tokenizer's ``vocab_size``, ``eos_id``, ``bos_id`` and ``sha256``. Raises when a split has no full block.
    """
    from lmforge.tokenizer.shards import stream_token_shards

    encoder = HFTextEncoder(model_dir, trust_remote_code=trust_remote_code)
    logger.info("re-tokenizing the corpus with the tokenizer of %s (%d ids, eos %d, bos %s) into %d-token blocks",
                model_dir, encoder.vocab_size, encoder.eos_id, encoder.bos_id, seq_len)
    texts = {name: with_progress(docs, name, len(docs)) for name, docs in split_texts.items()}
    metadata = {"tokenizer_kind": "huggingface", "tokenizer_source": str(model_dir), "vocab_size": encoder.vocab_size,
                "eos_id": encoder.eos_id, "bos_id": encoder.bos_id}
    index = stream_token_shards(out_dir, texts, encoder, seq_len=seq_len, blocks_per_shard=blocks_per_shard,
                                executor=executor, extra_metadata=metadata)
    for name, info in index["splits"].items():
        if info["n_blocks"] == 0:
            raise ValueError(f"split {name!r} has no full {seq_len}-token block with the tokenizer of {model_dir}: "
                             "lower tokenizer.shards.seq_len or add data")
    counts = {f"{name}_blocks": info["n_blocks"] for name, info in index["splits"].items()} | {
        f"{name}_tokens": info["n_tokens"] for name, info in index["splits"].items()}
    return {**counts, "vocab_size": encoder.vocab_size, "eos_id": encoder.eos_id, "bos_id": encoder.bos_id,
            "sha256": encoder.sha256}
