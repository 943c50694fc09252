"""The tokenizer stage's artifacts: a trained, exported tokenizer directory and packed token shards.

The tokenizer directory is the single source of truth downstream: it holds the sentencepiece model
(``tokenizer.model``), the Hugging Face files and the chat template (``tokenizer_config.json``).
SFT, evaluation and packaging read the template from it, never from their own config.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

logger = logging.getLogger(__name__)

MODEL_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer_config.json"


def build_tokenizer_dir(texts: Iterable[str], config: Any, out_dir: str | Path, *, chat_template: str,
                        model_max_length: int) -> dict[str, Any]:
    """Train a sentencepiece model on ``texts`` and export it (with the chat template) to ``out_dir``."""
    from lmforge.tokenizer.export import export_hf_tokenizer
    from lmforge.tokenizer.train import train_tokenizer

    started = time.perf_counter()
    model_bytes = train_tokenizer(texts, config)
    seconds = time.perf_counter() - started
    export_hf_tokenizer(model_bytes, out_dir, chat_template=chat_template, model_max_length=model_max_length)
    tok = SentencePieceTokenizer.from_bytes(model_bytes)
    logger.info("trained a %d-piece %s tokenizer in %.1f s", tok.vocab_size, config.model_type, seconds)
    return {"vocab_size": tok.vocab_size, "train_seconds": seconds, "model_type": config.model_type,
            "sha256": tok.sha256}


def load_tokenizer(tokenizer_dir: str | Path) -> tuple[SentencePieceTokenizer, str]:
    """The sentencepiece tokenizer and the chat template stored in a tokenizer directory."""
    tokenizer_dir = Path(tokenizer_dir)
    tok = SentencePieceTokenizer.from_file(tokenizer_dir / MODEL_FILE)
    template = json.loads((tokenizer_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("chat_template")
    if not template:
        raise ValueError(f"{tokenizer_dir / CONFIG_FILE} has no chat_template: rerun the tokenizer stage")
    return tok, template


def measure_tokenizer(texts: Iterable[str], tok: SentencePieceTokenizer) -> dict[str, float]:
    """Compression and fallback figures on held-out text: bytes/token, tokens/word, byte-fallback rate."""
    n_bytes = n_chars = n_words = n_tokens = n_fallback = n_unk = 0
    byte_ids = {i for i in range(tok.vocab_size) if tok.id_to_token(i).startswith("<0x")}
    for text in texts:
        ids = tok.encode(text, parse_special=False)
        n_bytes += len(text.encode("utf-8"))
        n_chars += len(text)
        n_words += len(text.split())
        n_tokens += len(ids)
        n_fallback += sum(1 for i in ids if i in byte_ids)
        n_unk += sum(1 for i in ids if i == tok.unk_id)
    n_tokens = max(n_tokens, 1)
    return {"bytes_per_token": n_bytes / n_tokens, "tokens_per_word": n_tokens / max(n_words, 1),
            "tokens_per_char": n_tokens / max(n_chars, 1), "byte_fallback_rate": n_fallback / n_tokens,
            "unknown_tokens": n_unk, "validation_tokens": n_tokens}


def build_token_shards_dir(split_texts: dict[str, list[str]], tokenizer_dir: str | Path, out_dir: str | Path, *,
                           seq_len: int, blocks_per_shard: int) -> dict[str, Any]:
    """Pack each split's documents into ``seq_len`` blocks and write them as memory-mappable shards."""
    from lmforge.tokenizer.shards import pack_documents, write_token_shards

    tok, _ = load_tokenizer(tokenizer_dir)
    blocks = {name: pack_documents(texts, tok, seq_len) for name, texts in split_texts.items()}
    for name, arr in blocks.items():
        if len(arr) == 0:
            raise ValueError(f"split {name!r} has no full {seq_len}-token block: lower tokenizer.shards.seq_len "
                             f"or add data")
    index = write_token_shards(out_dir, blocks, tokenizer_sha256=tok.sha256, seq_len=seq_len,
                               blocks_per_shard=blocks_per_shard,
                               extra_metadata={"documents": {k: len(v) for k, v in split_texts.items()}})
    return {f"{name}_blocks": info["n_blocks"] for name, info in index["splits"].items()} | {
        f"{name}_tokens": info["n_tokens"] for name, info in index["splits"].items()}
