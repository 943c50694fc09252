"""What a model is scored on, in ITS token ids: held-out blocks, held-out conversations and a byte table.

Every model evaluation compares (lmforge's pretrain checkpoint, or a foreign model named by
``sft.base_model``, and the SFT checkpoint) is scored with its own tokenizer
(``ChatTokenizer.for_model``: the model directory's, else the tokenizer stage's) and its own chat
template. ``heldout_data`` gives, per tokenizer:

- **held-out blocks** (perplexity, bits per byte), from the first source that holds that tokenizer's ids:

  1. lmforge's own tokenizer (the same vocabulary, special tokens and template as the tokenizer
     stage's, also when a checkpoint carries a copy): the tokenizer stage's validation shards, exactly
     as before foreign models existed, so the default chain's numbers do not change;
  2. another shard folder whose ``index.json`` names this tokenizer (``tokenizer_kind: huggingface``
     and its ``tokenizer_sha256``): the pretrain stage's shards after continued pretraining;
  3. else (SFT straight from a foreign model) the held-out validation documents, encoded here as the
     shards are (BOS where the tokenizer adds one, EOS after each document) into blocks, at most
     ``max_heldout_blocks``;

- **held-out conversations** masked like training (``build_sft_examples`` with the model's
  ``ChatTokenizer``);
- **the byte table** (UTF-8 bytes each id stands for) for bits per byte: lmforge's sentencepiece
  table for its own tokenizer (``token_byte_lengths``), else ``hf_token_byte_lengths``, which reads
  the pieces as the tokenizer's decoder does (byte-level BPE or sentencepiece-style): its sum over a
  text's ids is the byte length of the decoded text (tested on both kinds).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

logger = logging.getLogger(__name__)


@dataclass
class HeldoutData:
    """A tokenizer's held-out material: shared by every model that uses that tokenizer."""

    chat: ChatTokenizer
    """The model's tokenizer with its chat template (generation and masking use it)."""
    blocks: Any
    """Held-out token blocks ``[N, T]`` (a memory-mapped array or lists of ids)."""
    examples: list[tuple[list[int], list[int]]]
    """Held-out conversations as ``(input_ids, labels)``, masked like training."""
    token_bytes: np.ndarray
    """UTF-8 bytes of each id (0 for special and chat-structure tokens)."""
    source: str
    """Where the blocks came from (logged)."""


@dataclass(frozen=True)
class HeldoutSources:
    """Where held-out blocks can come from (the caller's catalog paths and settings)."""

    stage_tokenizer: str
    """The tokenizer stage's directory (lmforge's own tokenizer)."""
    token_shards: str
    """The tokenizer stage's shards (lmforge's tokenizer ids)."""
    other_shards: Sequence[str] = ()
    """Shard folders of other tokenizers (the pretrain stage's after continued pretraining)."""
    validation_texts: Callable[[], Iterable[str]] | None = None
    """The held-out validation documents' texts, for a tokenizer no shards were made with."""
    validation_documents: Callable[[], Iterable[Mapping[str, Any]]] | None = None
    """The held-out validation documents as records (``text`` and ``metadata``), for the per-language scores."""
    seq_len: int = 256
    """Block length of blocks encoded from ``validation_texts`` (capped by the model's context)."""


def heldout_data(chat: ChatTokenizer, sources: HeldoutSources, conversations: Sequence[Mapping[str, Any]], *,
                 max_blocks: int, max_examples: int, max_example_tokens: int, context: int | None,
                 stage_chat: ChatTokenizer | None = None) -> HeldoutData:
    """Blocks, masked conversations and the byte table for ``chat``'s tokenizer (see the module docstring).

    ``stage_chat`` is the tokenizer stage's ``ChatTokenizer`` (loaded by the caller once); ``context``
    the model's maximum positions (None: unknown).
    """
    from lmforge.evaluation.perplexity import token_byte_lengths
    from lmforge.tokenizer.artifact import load_tokenizer
    from lmforge.tokenizer.shards import TokenShards
    from lmforge.training.sft_data import build_sft_examples

    if stage_chat is not None and stage_chat.sha256 == chat.sha256:  # lmforge's own tokenizer: as always
        tok, _ = load_tokenizer(sources.stage_tokenizer)
        shards = TokenShards.open(sources.token_shards, expected_tokenizer_sha256=tok.sha256)
        blocks, source, token_bytes = _shard_blocks(shards, max_blocks), sources.token_shards, token_byte_lengths(tok)
    else:
        token_bytes = hf_token_byte_lengths(chat.tokenizer)
        found = find_shards(sources.other_shards, chat.tokenizer)
        if found is not None:
            blocks, source = _shard_blocks(TokenShards.open(found), max_blocks), found
        elif sources.validation_texts is not None:
            seq_len = min(sources.seq_len, context) if context else sources.seq_len
            blocks = encode_heldout_blocks(sources.validation_texts(), chat.tokenizer, seq_len=seq_len,
                                           max_blocks=max_blocks)
            source = f"validation documents encoded with {chat.source}"
        else:
            raise ValueError(f"no held-out token shards were made with the tokenizer of {chat.source} and no "
                             "validation documents were given to encode")
    examples, _ = build_sft_examples(list(conversations)[:max_examples], chat, max_length=max_example_tokens)
    logger.info("held-out data for %s: %d blocks from %s, %d conversations", chat.source, len(blocks), source,
                len(examples))
    return HeldoutData(chat=chat, blocks=blocks, examples=[(e["input_ids"], e["labels"]) for e in examples],
                       token_bytes=token_bytes, source=source)


def _shard_blocks(shards: Any, max_blocks: int) -> list[Any]:
    n_blocks = min(shards.n_blocks("validation"), max_blocks)
    return [shards.block("validation", i) for i in range(n_blocks)]


def find_shards(shard_dirs: Sequence[str], tokenizer: Any) -> str | None:
    """The first of ``shard_dirs`` whose ``index.json`` was written with ``tokenizer`` (a Hugging Face one)."""
    for shard_dir in shard_dirs:
        index_path = Path(shard_dir) / "index.json"
        if not index_path.is_file():
            continue
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("tokenizer_kind") != "huggingface":
            continue
        from lmforge.tokenizer.hf_encoder import hf_tokenizer_sha256  # written with the pretrain stage's shards

        if index.get("tokenizer_sha256") == hf_tokenizer_sha256(tokenizer):
            return str(shard_dir)
    return None


def encode_heldout_blocks(texts: Iterable[str], tokenizer: Any, *, seq_len: int, max_blocks: int) -> list[list[int]]:
    """Documents as the token shards pack them: [BOS] ids EOS, concatenated, cut into ``seq_len`` blocks.

    Each document is encoded by the shards' own rule (``hf_encoder.encode_documents``): BOS first when the
    tokenizer itself starts text with it, special-token text not parsed (it cannot inject a control
    token). Stops once ``max_blocks`` are full; the tail that does not fill a block is dropped.
    """
    from lmforge.tokenizer.hf_encoder import encode_documents, leading_bos

    if seq_len < 2 or max_blocks < 1:
        raise ValueError(f"seq_len must be >= 2 and max_blocks >= 1, got {seq_len}, {max_blocks}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: held-out documents could not be separated")
    bos = leading_bos(tokenizer)
    stream: list[int] = []
    blocks: list[list[int]] = []
    for text in texts:
        [ids] = encode_documents(tokenizer, [text], bos)  # as the token shards encode it (hf_encoder)
        stream += ids
        stream.append(int(eos))
        while len(stream) >= seq_len and len(blocks) < max_blocks:
            blocks.append(stream[:seq_len])
            del stream[:seq_len]
        if len(blocks) >= max_blocks:
            break
    if not blocks:
        raise ValueError(f"the held-out validation documents give no full {seq_len}-token block")
    return blocks


def _decoder_types(tokenizer: Any) -> set[str]:
    """Types of the tokenizer's decoder steps (``ByteLevel``, ``Metaspace``, ``ByteFallback``, ...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "type" in node:
                found.add(str(node["type"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(backend.to_str()).get("decoder"))
    return found


def hf_token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """UTF-8 bytes each id of a Hugging Face tokenizer adds to decoded text (``len(tokenizer)`` entries).

    Byte-level BPE (GPT-2, Llama 3, Qwen): each character of a piece stands for one byte. Sentencepiece
    style (``▁`` for a space, ``<0xHH>`` byte fallback): the piece's text with ``▁`` as a space, or 1
    byte. Special and added tokens: 0 bytes (chat structure, not text), as in ``token_byte_lengths``,
    which this table equals on lmforge's own tokenizer (tested). Any other decoder: the UTF-8 length of the piece decoded on its own.
    """
    kinds = _decoder_types(tokenizer)
    # Special and added tokens are control tokens (as ChatTokenizer treats them; lmforge's own exporter adds
    # <|im_start|>/<|im_end|> as non-special added tokens): no text.
    structural = {*tokenizer.all_special_ids, *(int(i) for i in getattr(tokenizer, "added_tokens_decoder", {}))}
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for i, piece in enumerate(pieces):
        if i in structural or piece is None:
            continue
        if "ByteLevel" in kinds:
            lengths[i] = len(piece)
        elif kinds & {"Metaspace", "ByteFallback", "Replace"}:
            is_byte = len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
            lengths[i] = 1 if is_byte else len(piece.replace("\u2581", " ").encode("utf-8"))
        else:
            lengths[i] = len(tokenizer.convert_tokens_to_string([piece]).encode("utf-8"))
    return lengths
