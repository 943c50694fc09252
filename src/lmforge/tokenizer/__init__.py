"""Tokenizer: train a code-safe sentencepiece model, the one chat format, HF export, token shards.

Modules: ``config`` (the stage's one typed config), ``train`` (sentencepiece arguments + training),
``sentencepiece_tokenizer`` (the tokenizer object), ``chat_template`` (the format lmforge's tokenizers carry), ``chat_tokenizer`` (render, mask and prompt with any model's template),
``export`` (exact Hugging Face tokenizer folder), ``encode`` (multi-process, order-preserving
encoding), ``shards`` (packed pretraining blocks), ``dtypes`` (the token id dtype), ``metrics``
(fertility per script and for code, byte fallback, compression, vocabulary coverage), ``artifact``
(the stage's two output folders). Heavy libraries are imported inside functions only.
"""

from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
from lmforge.tokenizer.config import TokenizerConfig, TokenShardArgs
from lmforge.tokenizer.export import export_hf_tokenizer
from lmforge.tokenizer.metrics import measure_tokenizer
from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from lmforge.tokenizer.shards import TokenShards, stream_token_shards
from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer

__all__ = [
    "ChatTokenizer",
    "DEFAULT_CHAT_TEMPLATE",
    "SentencePieceTokenizer",
    "TokenShardArgs",
    "TokenShards",
    "TokenizerConfig",
    "TokenizerTrainArgs",
    "export_hf_tokenizer",
    "measure_tokenizer",
    "stream_token_shards",
    "train_tokenizer",
]
