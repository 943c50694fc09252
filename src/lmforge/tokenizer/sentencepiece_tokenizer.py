"""A small wrapper around a serialized sentencepiece model: the project's one tokenizer object.

Why a wrapper: the training, chat and packing code need a few things sentencepiece does not give
directly: the model's hash (to tie token shards and checkpoints to the exact tokenizer), pickling
(Kedro copies node outputs), and Hugging Face-compatible handling of special-token *text*.

Special tokens in text: sentencepiece itself never turns the text ``"<s>"`` into the BOS id (control
symbols are not matched in input). The chat template writes ``{{ bos_token }}`` as text, and Hugging
Face tokenizers do match special-token text, so ``encode`` does the same by default
(``parse_special=True``): the literal strings of unk/bos/eos/pad become their ids. Pretraining
documents are encoded with ``parse_special=False`` so that a document containing ``"</s>"`` cannot
inject a real EOS. User-defined symbols (``<|im_start|>``, ``<|im_end|>``) are always atomic: that is
sentencepiece's own behaviour and cannot be switched off.

Round trip: ``decode(encode(x)) == x`` for any text without special-token text (checked on every
held-out stdlib file); with such text, use ``parse_special=False`` or ``skip_special_tokens=False``.
The one character that cannot round-trip is a literal ``▁`` (U+2581), which decodes as a space.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any


class SentencePieceTokenizer:
    """Encode/decode with a sentencepiece model held as bytes (see module docstring for specials)."""

    def __init__(self, model_bytes: bytes):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        self._model_bytes = bytes(model_bytes)
        self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        self._sha256 = hashlib.sha256(self._model_bytes).hexdigest()
        # Control symbols plus unk: the tokens Hugging Face marks "special".
        self._special_ids = {
            i for i in range(self._sp.get_piece_size()) if self._sp.is_control(i) or self._sp.is_unknown(i)
        }
        proto = sentencepiece_model_pb2.ModelProto.FromString(self._model_bytes)
        user_defined = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
        self._user_defined = [p.piece for p in proto.pieces if p.type == user_defined]
        self._special_by_text = {self._sp.id_to_piece(i): i for i in sorted(self._special_ids)}
        # Leftmost-longest match of special-token text, like Hugging Face's added-token splitter.
        alternatives = sorted(self._special_by_text, key=len, reverse=True)
        self._special_pattern = re.compile("|".join(re.escape(a) for a in alternatives))

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, model_bytes: bytes) -> SentencePieceTokenizer:
        """Load from a serialized model proto (what ``train_tokenizer`` returns)."""
        return cls(model_bytes)

    @classmethod
    def from_file(cls, path: str | Path) -> SentencePieceTokenizer:
        """Load from a ``.model`` file."""
        return cls(Path(path).read_bytes())

    def __getstate__(self) -> dict[str, Any]:
        return {"model_bytes": self._model_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_bytes"])

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}...)"

    # ---- identity -----------------------------------------------------------------------------
    @property
    def model_bytes(self) -> bytes:
        """The serialized sentencepiece model proto."""
        return self._model_bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the model bytes: the tokenizer's identity in shards and checkpoints."""
        return self._sha256

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id()

    @property
    def unk_id(self) -> int:
        return self._sp.unk_id()

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of unk and the control symbols (bos/eos/pad): dropped by ``decode`` by default."""
        return frozenset(self._special_ids)

    @property
    def special_tokens(self) -> list[str]:
        """Text of the special tokens that ``encode(parse_special=True)`` maps to ids."""
        return list(self._special_by_text)

    @property
    def user_defined_symbols(self) -> list[str]:
        """Atomic symbols (e.g. chat-role markers), in id order."""
        return list(self._user_defined)

    def token_to_id(self, piece: str) -> int:
        """Id of a vocabulary piece; KeyError if the piece is not in the vocabulary."""
        i = self._sp.piece_to_id(piece)
        if i == self.unk_id and piece != self._sp.id_to_piece(self.unk_id):
            raise KeyError(f"{piece!r} is not in the tokenizer vocabulary")
        return i

    def id_to_token(self, i: int) -> str:
        """Piece string of an id (e.g. '▁▁▁▁', '<0x0A>', '<s>')."""
        return self._sp.id_to_piece(i)

    # ---- encode / decode ----------------------------------------------------------------------
    def encode(self, text: str, *, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; no BOS/EOS is added (the chat template or the packer adds them)."""
        if not parse_special:
            return self._sp.encode(text)
        ids: list[int] = []
        start = 0
        for match in self._special_pattern.finditer(text):
            if match.start() > start:
                ids.extend(self._sp.encode(text[start : match.start()]))
            ids.append(self._special_by_text[match.group()])
            start = match.end()
        if start < len(text):
            ids.extend(self._sp.encode(text[start:]))
        return ids

    def encode_batch(self, texts: list[str], *, num_threads: int = 1) -> list[list[int]]:
        """Ids of each text with special-token text NOT parsed (as ``encode(t, parse_special=False)``).

        One thread by default: parallelism is the caller's (``lmforge.tokenizer.encode`` uses processes);
        sentencepiece's own default (-1) would start a thread per core in every process.
        """
        return self._sp.encode(list(texts), num_threads=num_threads)

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens (unk/bos/eos/pad) are dropped unless asked to keep them."""
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            return self._sp.decode([i for i in ids if i not in self._special_ids])
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self._special_ids:
                if run:
                    parts.append(self._sp.decode(run))
                    run = []
                parts.append(self._sp.id_to_piece(i))
            else:
                run.append(i)
        if run:
            parts.append(self._sp.decode(run))
        return "".join(parts)

    def encode_pieces(self, text: str) -> list[str]:
        """Piece strings of ``text`` (for inspection and debugging)."""
        return [self._sp.id_to_piece(i) for i in self.encode(text)]
