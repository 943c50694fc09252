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
from typing import TYPE_CHECKING, Any

from lmforge.tokenizer.metrics import measure_tokenizer
from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

if TYPE_CHECKING:
    from lmforge.data.executor import ExecutorConfig
    from lmforge.tokenizer.config import TokenizerConfig, TokenShardArgs

__all__ = ["build_token_shards_dir", "build_tokenizer_dir", "load_tokenizer", "measure_tokenizer"]

logger = logging.getLogger(__name__)

MODEL_FILE = "tokenizer.model"
CONFIG_FILE = "tokenizer_config.json"


def build_tokenizer_dir(texts: Iterable[str], config: TokenizerConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train a sentencepiece model on ``texts`` (``config.train``) and export it to ``out_dir`` with
    ``config.chat_template`` and ``config.model_max_length``."""
    from lmforge.tokenizer.export import export_hf_tokenizer
    from lmforge.tokenizer.train import train_tokenizer

    started = time.perf_counter()
    report: dict[str, int] = {}
    model_bytes = train_tokenizer(texts, config.train, report=report)
    seconds = time.perf_counter() - started
    export_hf_tokenizer(model_bytes, out_dir, chat_template=config.chat_template,
                        model_max_length=config.model_max_length)
    tok = SentencePieceTokenizer.from_bytes(model_bytes)
    logger.info("trained a %d-piece %s tokenizer in %.1f s", tok.vocab_size, config.train.model_type, seconds)
    return {"vocab_size": tok.vocab_size, "train_seconds": seconds, "model_type": config.train.model_type,
            "sha256": tok.sha256} | {f"train_{key}": value for key, value in report.items()}


def load_tokenizer(tokenizer_dir: str | Path) -> tuple[SentencePieceTokenizer, str]:
    """The sentencepiece tokenizer and the chat template stored in a tokenizer directory."""
    tokenizer_dir = Path(tokenizer_dir)
    tok = SentencePieceTokenizer.from_file(tokenizer_dir / MODEL_FILE)
    template = json.loads((tokenizer_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("chat_template")
    if not template:
        raise ValueError(f"{tokenizer_dir / CONFIG_FILE} has no chat_template: rerun the tokenizer stage")
    return tok, template


def build_token_shards_dir(split_texts: dict[str, Iterable[str]], tokenizer_dir: str | Path, out_dir: str | Path,
                           shards: TokenShardArgs,
                           split_labels: dict[str, Iterable[dict[str, str]]] | None = None,
                           executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Encode each split's documents on ``executor`` (None: in this process) into ``shards.seq_len`` blocks, as shards.

    Streams: documents are encoded in batches and written shard by shard (see ``stream_token_shards``).
    With ``split_labels`` (`lmforge.tokenizer.metrics.document_labels` of each document) the result adds the
    TRAIN split's documents, tokens and token share by language, by source (with licence) and by licence
    (`lmforge.tokenizer.metrics.summarize_token_counts`).
    """
    from lmforge.tokenizer.metrics import summarize_token_counts
    from lmforge.tokenizer.shards import stream_token_shards

    tok, _ = load_tokenizer(tokenizer_dir)
    index = stream_token_shards(out_dir, split_texts, tok, seq_len=shards.seq_len,
                                blocks_per_shard=shards.blocks_per_shard, executor=executor,
                                split_labels=split_labels)
    for name, info in index["splits"].items():
        if info["n_blocks"] == 0:
            raise ValueError(f"split {name!r} has no full {shards.seq_len}-token block: lower tokenizer.shards.seq_len "
                             f"or add data")
    counts = {f"{name}_blocks": info["n_blocks"] for name, info in index["splits"].items()} | {
        f"{name}_tokens": info["n_tokens"] for name, info in index["splits"].items()}
    if split_labels is not None:
        counts |= summarize_token_counts(index["token_counts"].get("train", []))
    return counts
