"""Tokenizer: train a code-safe sentencepiece model, the one chat format, HF export, token shards.

Modules: ``train`` (config + training), ``sentencepiece_tokenizer`` (the tokenizer object),
``chat_template`` (render + SFT masking), ``export`` (exact Hugging Face tokenizer folder),
``encode`` (multi-process, order-preserving encoding), ``shards`` (packed pretraining blocks),
``metrics`` (fertility per script and for code, byte fallback, compression, vocabulary coverage). Heavy libraries are imported inside functions only.
"""

from lmforge.tokenizer.chat_template import (
    DEFAULT_CHAT_TEMPLATE,
    render_chat,
    tokenize_conversation,
)
from lmforge.tokenizer.export import export_hf_tokenizer
from lmforge.tokenizer.metrics import measure_tokenizer
from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from lmforge.tokenizer.shards import TokenShards, pack_documents, stream_token_shards, write_token_shards
from lmforge.tokenizer.train import TokenizerConfig, train_tokenizer

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "SentencePieceTokenizer",
    "TokenShards",
    "TokenizerConfig",
    "export_hf_tokenizer",
    "measure_tokenizer",
    "pack_documents",
    "render_chat",
    "stream_token_shards",
    "tokenize_conversation",
    "train_tokenizer",
    "write_token_shards",
]
