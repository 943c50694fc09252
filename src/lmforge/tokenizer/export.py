"""Export our sentencepiece model as a Hugging Face tokenizer folder that encodes identically.

Why build ``tokenizer.json`` by hand: transformers' automatic sentencepiece conversion assumes the
usual Llama/Gemma settings (dummy prefix, Metaspace pre-tokenizer) and matched our code tokenizer on
only a fraction of lines. Our model is simple enough to mirror exactly:

* normalizer: ``Replace(" ", "▁")`` (identity normalisation, no dummy prefix, spaces escaped);
* no pre-tokenizer: sentencepiece BPE runs over the whole string; pieces never span a newline
  because training is per line, so nothing needs splitting;
* model: BPE over the sentencepiece vocabulary (same ids), with one merge ``(left, right)`` for every
  way of cutting a piece into two vocabulary pieces, ranked by the merged piece's sentencepiece score
  (sentencepiece merges the best-scoring piece first), ``byte_fallback=True`` for ``<0x..>`` tokens;
  for a unigram model: a Unigram model with the same pieces and scores;
* added tokens: unk/bos/eos/pad are *special* (skipped by ``decode(skip_special_tokens=True)``), the
  user-defined symbols (``<|im_start|>``, ``<|im_end|>``) are non-special added tokens, so they are
  atomic and kept in decoded text, exactly like sentencepiece;
* decoder: ``▁`` -> space, byte fallback, fuse (no strip: there is no dummy prefix to remove).

BOS is NOT added automatically (``add_bos_token: false``): plain text encodes to exactly the ids of
``SentencePieceTokenizer.encode``; the chat template writes ``{{ bos_token }}`` itself.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

# sentencepiece ModelProto.SentencePiece.Type values
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
# sentencepiece TrainerSpec.ModelType values
_UNIGRAM, _BPE = 1, 2


def _parse_model(model_bytes: bytes) -> Any:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    return proto


def _check_supported(proto: Any) -> None:
    """Refuse models whose normalisation this exporter does not mirror."""
    norm = proto.normalizer_spec
    problems = []
    if norm.name != "identity":
        problems.append(f"normalization rule {norm.name!r} (need 'identity')")
    if norm.add_dummy_prefix:
        problems.append("add_dummy_prefix=True")
    if norm.remove_extra_whitespaces:
        problems.append("remove_extra_whitespaces=True")
    if not norm.escape_whitespaces:
        problems.append("escape_whitespaces=False")
    if proto.trainer_spec.model_type not in (_BPE, _UNIGRAM):
        problems.append(f"model type {proto.trainer_spec.model_type} (need BPE or unigram)")
    if proto.trainer_spec.treat_whitespace_as_suffix:
        problems.append("treat_whitespace_as_suffix=True")
    if problems:
        raise ValueError("Cannot export this sentencepiece model exactly: " + ", ".join(problems))


def derive_bpe_merges(proto: Any) -> list[tuple[str, str]]:
    """All (left, right) merges that build a normal piece, best merged-piece score first."""
    normal = {p.piece: (i, p.score) for i, p in enumerate(proto.pieces) if p.type == _NORMAL}
    ranked = []
    for piece, (_, score) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, normal[left][0], normal[right][0], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def build_hf_tokenizer(model_bytes: bytes) -> Tokenizer:
    """Build a ``tokenizers.Tokenizer`` that encodes and decodes like the sentencepiece model."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    proto = _parse_model(model_bytes)
    _check_supported(proto)
    spec = proto.trainer_spec
    unk_piece = proto.pieces[spec.unk_id].piece
    if proto.trainer_spec.model_type == _BPE:
        vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
        model = models.BPE(
            vocab=vocab,
            merges=derive_bpe_merges(proto),
            unk_token=unk_piece,
            byte_fallback=spec.byte_fallback,
            fuse_unk=True,  # sentencepiece emits one <unk> for a run of unknown characters
        )
    else:
        # Only normal pieces may match text; the others get a score that never wins the lattice.
        scored = [(p.piece, p.score if p.type == _NORMAL else -1e9) for p in proto.pieces]
        model = models.Unigram(scored, unk_id=spec.unk_id, byte_fallback=spec.byte_fallback)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens(
        [AddedToken(p.piece, special=True, normalized=False) for p in proto.pieces if p.type in (_UNKNOWN, _CONTROL)]
    )
    tokenizer.add_tokens(
        [AddedToken(p.piece, special=False, normalized=False) for p in proto.pieces if p.type == _USER_DEFINED]
    )
    return tokenizer


def build_tokenizer_config(
    proto: Any, tokenizer: Tokenizer, *, chat_template: str, model_max_length: int
) -> dict[str, Any]:
    """The ``tokenizer_config.json`` content: class, special tokens, chat template, no auto-BOS."""
    spec = proto.trainer_spec

    def piece(i: int) -> str | None:
        return proto.pieces[i].piece if i >= 0 else None

    added = {
        str(i): {
            "content": tok.content,
            "lstrip": tok.lstrip,
            "normalized": tok.normalized,
            "rstrip": tok.rstrip,
            "single_word": tok.single_word,
            "special": tok.special,
        }
        for i, tok in sorted(tokenizer.get_added_tokens_decoder().items())
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": piece(spec.bos_id),
        "eos_token": piece(spec.eos_id),
        "pad_token": piece(spec.pad_id),
        "unk_token": piece(spec.unk_id),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "chat_template": chat_template,
        "added_tokens_decoder": added,
    }


def export_hf_tokenizer(
    model_bytes: bytes, out_dir: str | Path, *, chat_template: str, model_max_length: int
) -> None:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json and tokenizer.model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proto = _parse_model(model_bytes)
    tokenizer = build_hf_tokenizer(model_bytes)
    config = build_tokenizer_config(proto, tokenizer, chat_template=chat_template, model_max_length=model_max_length)
    special_map = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if config[k]}

    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", "utf-8")
    (out / "tokenizer.model").write_bytes(model_bytes)
    logger.info("Exported Hugging Face tokenizer (%d tokens) to %s", tokenizer.get_vocab_size(), out)


class ParityError(RuntimeError):
    """The exported Hugging Face tokenizer encodes some text differently from the sentencepiece model."""


def verify_hf_parity(tokenizer_dir: str | Path, texts: list[str], *, max_examples: int = 3) -> dict[str, Any]:
    """Encode ``texts`` with our sentencepiece model and with ``AutoTokenizer`` on the export; compare ids.

    Returns ``{"hf_parity_texts", "hf_parity_mismatches", "hf_parity_examples"}`` where the examples
    name the first differing token position of up to ``max_examples`` mismatching texts.
    """
    from transformers import AutoTokenizer

    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    ours = SentencePieceTokenizer.from_file(tokenizer_dir / "tokenizer.model")
    theirs = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    mismatches, examples = 0, []
    for i, text in enumerate(texts):
        a = ours.encode(text)
        b = theirs(text, add_special_tokens=False)["input_ids"]
        if a != b:
            mismatches += 1
            if len(examples) < max_examples:
                first = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
                examples.append(f"text {i}: first difference at token {first} (ours {a[first:first + 3]}, "
                                f"HF {b[first:first + 3]})")
    logger.info("HF tokenizer parity: %d of %d texts identical", len(texts) - mismatches, len(texts))
    return {"hf_parity_texts": len(texts), "hf_parity_mismatches": mismatches, "hf_parity_examples": examples}
