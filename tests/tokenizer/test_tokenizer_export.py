"""Tests for lmforge.tokenizer.export: the HF tokenizer folder loads offline and encodes exactly like ours."""

from __future__ import annotations

import json
import random

import pytest
from tokenizer_samples import CONVERSATIONS, MULTILINGUAL

from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.export import build_hf_tokenizer, derive_bpe_merges, export_hf_tokenizer
from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer


def mismatches(ours: SentencePieceTokenizer, hf, texts: list[str], *, backend: bool = False) -> list[int]:
    """Indexes of texts whose ids or decoded text differ between our tokenizer and the HF one.

    ``backend=True`` goes straight to the loaded tokenizer's Rust backend (what AutoTokenizer calls
    underneath, post-processor included): the same result, several times faster for bulk checks.
    """
    if backend:
        encoded = hf.backend_tokenizer.encode_batch(texts, add_special_tokens=True)
        hf_ids = [e.ids for e in encoded]
        decoded = hf.backend_tokenizer.decode_batch(hf_ids, skip_special_tokens=True)
        decoded_all = hf.backend_tokenizer.decode_batch(hf_ids, skip_special_tokens=False)
    else:
        hf_ids = hf(texts)["input_ids"]  # default add_special_tokens=True: must still add no BOS
        decoded = hf.batch_decode(hf_ids, skip_special_tokens=True)
        decoded_all = hf.batch_decode(hf_ids, skip_special_tokens=False)
    bad = []
    for k, text in enumerate(texts):
        mine = ours.encode(text)
        if (
            mine != hf_ids[k]
            or decoded[k] != ours.decode(mine)
            or decoded_all[k] != ours.decode(mine, skip_special_tokens=False)
        ):
            bad.append(k)
    return bad


def test_export_writes_the_four_files(hf_dir, bpe_model_bytes):
    assert {p.name for p in hf_dir.iterdir()} >= {
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    }
    assert (hf_dir / "tokenizer.model").read_bytes() == bpe_model_bytes
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == DEFAULT_CHAT_TEMPLATE
    assert (config["bos_token"], config["eos_token"], config["pad_token"], config["unk_token"]) == (
        "<s>", "</s>", "<pad>", "<unk>",
    )
    assert config["add_bos_token"] is False and config["model_max_length"] == 512
    assert json.loads((hf_dir / "special_tokens_map.json").read_text())["eos_token"] == "</s>"


def test_autotokenizer_loads_with_our_special_tokens(hf_tokenizer, tokenizer):
    assert len(hf_tokenizer) == tokenizer.vocab_size
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id) == (1, 2, 3)
    assert hf_tokenizer.unk_token_id == 0
    assert hf_tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [4, 5]
    assert hf_tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE


def test_plain_text_gets_no_automatic_bos_or_eos(hf_tokenizer, tokenizer):
    text = "def f(x):\n    return x"
    assert hf_tokenizer(text)["input_ids"] == tokenizer.encode(text)
    assert hf_tokenizer(text, add_special_tokens=True)["input_ids"][0] != tokenizer.bos_id
    assert hf_tokenizer.encode(text) == tokenizer.encode(text)


def test_parity_on_every_line_of_heldout_files(hf_tokenizer, tokenizer, heldout_texts):
    lines = [line for text in heldout_texts for line in text.split("\n")]
    bad = mismatches(tokenizer, hf_tokenizer, lines, backend=True)
    assert len(lines) > 20_000
    assert bad == [], f"{len(lines) - len(bad)}/{len(lines)} lines match; first: {lines[bad[0]]!r}"


def test_parity_on_whole_heldout_files(hf_tokenizer, tokenizer, heldout_texts):
    bad = mismatches(tokenizer, hf_tokenizer, heldout_texts)
    assert len(heldout_texts) > 100
    assert bad == [], f"{len(heldout_texts) - len(bad)}/{len(heldout_texts)} files match"


def test_parity_on_rendered_chats(hf_tokenizer, tokenizer):
    rendered = [hf_tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=g)
                for c in CONVERSATIONS for g in (False, True)]
    assert all(text.startswith("<s><|im_start|>") for text in rendered)
    assert mismatches(tokenizer, hf_tokenizer, rendered) == []
    for conversation in CONVERSATIONS:
        ids = hf_tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        assert ids == tokenizer.encode(hf_tokenizer.apply_chat_template(conversation, tokenize=False))


def test_parity_on_multilingual_and_unseen_characters(hf_tokenizer, tokenizer):
    texts = [*MULTILINGUAL, "未見の文字：鬱蒼、魑魅魍魎、𠮷。\n\t한글 🦜 ▁x", "<s>literal</s> <pad> <unk> <0x0A>"]
    assert mismatches(tokenizer, hf_tokenizer, texts) == []


def test_parity_on_adversarial_piece_soup(hf_tokenizer, tokenizer):
    """Random concatenations of vocabulary pieces and runs of repeated characters (merge-order stress)."""
    rng = random.Random(0)
    pieces = [tokenizer.id_to_token(i).replace("▁", " ") for i in range(262, tokenizer.vocab_size)]
    alphabet = " \t\n=-#_.()[]{}'\"abcxyz0123456789é中日本語😀"
    texts = [
        "".join(
            rng.choice(pieces) if rng.random() < 0.6 else rng.choice(alphabet) * rng.randint(1, 9)
            for _ in range(rng.randint(1, 30))
        )
        for _ in range(3000)
    ]
    assert mismatches(tokenizer, hf_tokenizer, texts, backend=True) == []


def test_merges_are_ranked_by_sentencepiece_score(bpe_model_bytes):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(bpe_model_bytes)
    score = {p.piece: p.score for p in proto.pieces}
    merged_scores = [score[left + right] for left, right in derive_bpe_merges(proto)]
    assert merged_scores == sorted(merged_scores, reverse=True)
    assert ("▁", "▁") in derive_bpe_merges(proto)


def test_unigram_model_exports_with_near_parity(train_texts, heldout_texts):
    """Unigram (not the default): ids match except on exact Viterbi ties, where sentencepiece and
    tokenizers order the same pieces differently (e.g. '▁' + '▁'*12 vs '▁'*12 + '▁'); text is identical."""
    model = train_tokenizer(train_texts[:20], TokenizerTrainArgs(model_type="unigram", vocab_size=600))
    ours = SentencePieceTokenizer.from_bytes(model)
    hf = build_hf_tokenizer(model)
    texts = [line for text in heldout_texts[:30] for line in text.split("\n")] + MULTILINGUAL
    encoded = hf.encode_batch(texts)
    same_ids = sum(e.ids == ours.encode(t) for t, e in zip(texts, encoded, strict=True))
    assert same_ids / len(texts) > 0.99
    assert hf.decode_batch([e.ids for e in encoded]) == [ours.decode(ours.encode(t)) for t in texts]


def test_export_refuses_models_it_cannot_mirror(train_texts, tmp_path):
    model = train_tokenizer(
        train_texts[:5],
        TokenizerTrainArgs(vocab_size=400, normalization_rule_name="nmt_nfkc", add_dummy_prefix=True),
    )
    with pytest.raises(ValueError, match="nmt_nfkc.*add_dummy_prefix"):
        export_hf_tokenizer(model, tmp_path, chat_template=DEFAULT_CHAT_TEMPLATE, model_max_length=64)


def test_save_pretrained_round_trip_keeps_parity(hf_tokenizer, tokenizer, heldout_texts, tmp_path):
    # packaging re-saves the tokenizer next to the model: it must still encode like ours
    from transformers import AutoTokenizer

    hf_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    texts = heldout_texts[:20] + MULTILINGUAL
    assert mismatches(tokenizer, reloaded, texts) == []
    assert reloaded.chat_template == DEFAULT_CHAT_TEMPLATE
    assert reloaded("x y")["input_ids"] == tokenizer.encode("x y")
