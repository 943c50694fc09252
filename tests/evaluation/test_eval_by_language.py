"""Per-language held-out scores: documents grouped by language_group(metadata), the same text for every model,
bits per byte per group on a tiny model."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lmforge.evaluation.by_language import collect_language_texts, encode_pieces, score_by_language
from lmforge.evaluation.heldout import hf_token_byte_lengths

EN = "The quick brown fox jumps over the lazy dog. It returns the value of the sum of a list."
ZH = "敏捷的棕色狐狸跳过了懒狗。这个函数返回列表中所有数字的和。"
CODE = "def add(a, b):\n    return a + b\n"


def record(doc_id, text, **metadata):
    return {"id": doc_id, "text": text, "metadata": metadata}


def test_documents_are_grouped_by_their_declared_language_group_and_capped():
    records = [record("a", EN, language_group="en", language="en"),
               record("b", ZH, language_group="zh"),
               record("c", CODE, kind="code"),  # no declared group: a code document counts under code
               record("d", "Bonjour tout le monde.", language="fr"),  # a group not asked for
               record("e", EN[:10], language_group="zh", language="en")]  # the declared group wins over detection
    texts = collect_language_texts(records, languages=["en", "zh", "ja", "code"], max_chars=25)
    assert texts == {"en": [EN[:25]], "zh": [ZH[:25]], "code": [CODE[:25]]}  # ja: none, left out
    texts = collect_language_texts(records, languages=["zh", "en"], max_chars=len(ZH) + 4)
    assert texts == {"zh": [ZH, EN[:4]], "en": [EN[: len(ZH) + 4]]}
    assert list(texts) == ["zh", "en"]  # in the order asked for


def test_reading_stops_once_every_group_is_full():
    def records():
        yield record("a", EN, language_group="en")
        yield record("b", ZH, language_group="zh")
        pytest.fail("read past the point where every group was full")

    assert collect_language_texts(records(), languages=["en", "zh"], max_chars=10) == {"en": [EN[:10]], "zh": [ZH[:10]]}
    with pytest.raises(ValueError, match="max_chars"):
        collect_language_texts([], languages=["en"], max_chars=0)


def test_documents_are_cut_into_pieces_ending_with_eos(tiny_tokenizer):
    pieces = encode_pieces([CODE, ZH], tiny_tokenizer, seq_len=8)
    ids = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id] for t in (CODE, ZH)]
    assert [i for p in pieces for i in p] == [i for doc in ids for i in doc]  # nothing lost, nothing added
    assert all(2 <= len(p) <= 8 for p in pieces) and pieces[-1][-1] == tiny_tokenizer.eos_token_id


def test_bits_per_byte_per_group_on_a_uniform_model(tiny_model, tiny_tokenizer):
    """Uniform logits cost log2(V) bits per token whatever the text, so each group's bits per byte is exactly
    log2(V) x tokens / bytes: Chinese, a token per byte in this code-trained byte-level BPE, costs more per byte
    than English, which its merges cover. Each group is scored on its own (the other group changes nothing)."""
    uniform = copy.deepcopy(tiny_model)
    uniform.lm_head = torch.nn.Linear(tiny_model.config.hidden_size, tiny_model.config.vocab_size, bias=False)
    torch.nn.init.zeros_(uniform.lm_head.weight)  # every logit 0
    token_bytes = hf_token_byte_lengths(tiny_tokenizer)
    texts = {"en": [EN, CODE], "zh": [ZH]}
    scores = score_by_language(uniform, tiny_tokenizer, texts, token_bytes=token_bytes, seq_len=32,
                               pad_id=tiny_tokenizer.pad_token_id, batch_size=2)
    assert set(scores) == {"en", "zh"}
    vocab = uniform.config.vocab_size
    for group, metrics in scores.items():
        pieces = encode_pieces(texts[group], tiny_tokenizer, seq_len=32)
        assert metrics["tokens"] == sum(len(p) - 1 for p in pieces)  # the first token of each piece is context
        assert metrics["bytes"] == sum(int(token_bytes[p[1:]].sum()) for p in map(np.asarray, pieces))
        assert metrics["bits_per_byte"] == pytest.approx(math.log2(vocab) * metrics["tokens"] / metrics["bytes"])
        assert metrics["documents"] == len(texts[group])
    # Chinese is almost all byte tokens: close to one token per UTF-8 byte (the EOS tokens add a little)
    zh_bytes = len(ZH.encode("utf-8"))
    assert zh_bytes - 3 <= scores["zh"]["bytes"] <= zh_bytes
    assert scores["zh"]["bits_per_byte"] > scores["en"]["bits_per_byte"]
    alone = score_by_language(uniform, tiny_tokenizer, {"zh": [ZH]}, token_bytes=token_bytes, seq_len=32,
                              pad_id=tiny_tokenizer.pad_token_id)
    assert alone["zh"]["bits_per_byte"] == pytest.approx(scores["zh"]["bits_per_byte"])


def test_a_random_model_scores_each_group_apart(tiny_model, tiny_tokenizer):
    """On a random tiny model every group gets finite numbers, bits per byte = bits per token x tokens / bytes."""
    token_bytes = hf_token_byte_lengths(tiny_tokenizer)
    scores = score_by_language(tiny_model, tiny_tokenizer, {"code": [CODE] * 3, "zh": [ZH]}, token_bytes=token_bytes,
                               seq_len=64, pad_id=tiny_tokenizer.pad_token_id)
    for metrics in scores.values():
        assert math.isfinite(metrics["bits_per_byte"])
        assert metrics["bits_per_byte"] == pytest.approx(metrics["bits_per_token"] * metrics["tokens"] / metrics["bytes"])
    assert scores["code"]["documents"] == 3 and scores["zh"]["chars"] == len(ZH)
    # a group with no text to score (one token: nothing after the context) is left out, not a failed stage
    assert score_by_language(tiny_model, tiny_tokenizer, {"en": ["a"], "zh": [ZH]}, token_bytes=token_bytes, seq_len=64,
                             pad_id=tiny_tokenizer.pad_token_id).keys() == {"zh"}
