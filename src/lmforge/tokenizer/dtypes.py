"""The dtype token ids are stored in: shared by the encoder (``encode``) and the shard writer (``shards``).

Its own module so that ``shards`` (which calls the encoder) and ``encode`` (which builds arrays of
this dtype) do not import each other.
"""

from __future__ import annotations


def choose_token_dtype(vocab_size: int) -> str:
    """Smallest unsigned dtype that holds every id: uint16 up to 65536 tokens (ids <= 65535), else uint32."""
    return "uint16" if vocab_size <= 65536 else "uint32"
