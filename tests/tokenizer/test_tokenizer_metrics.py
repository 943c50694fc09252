"""Tests for lmforge.tokenizer.metrics: buckets, per-script fertility, fallback, coverage (mixed-language input)."""

from __future__ import annotations

import pytest

from lmforge.tokenizer.artifact import measure_tokenizer
from lmforge.tokenizer.metrics import classify_text, looks_like_python

ENGLISH = "The quick brown fox jumps over the lazy dog. Tokenizers should not waste tokens on common words."
CHINESE = "北京是中国的首都。我们用简体字写代码注释，也测试没有见过的字：鬱蒼魑魅魍魎。"
JAPANESE = "東京は日本の首都です。ひらがなとカタカナと漢字を混ぜて書きます。"
KOREAN = "서울은 한국의 수도입니다."
CODE = "def add(a, b):\n    \"\"\"Return the sum.\"\"\"\n    return a + b\n\n\nclass Point:\n    x: int = 0\n"
MIXED = [ENGLISH, CHINESE, JAPANESE, KOREAN, CODE, "Ελληνικά και русский текст"]


@pytest.mark.parametrize(("text", "bucket"), [
    (ENGLISH, "latin"), (CHINESE, "cjk"), (JAPANESE, "japanese"), (KOREAN, "korean"), (CODE, "code"),
    ("Ελληνικά", "other"), ("12345 !!!", "other"), ("Hello", "latin"), ("x = 'héllo 日本'", "code"),
])
def test_classify_text(text, bucket):
    assert classify_text(text) == bucket


def test_looks_like_python_rejects_prose_and_nul():
    assert looks_like_python("import os\nprint(os.sep)\n")
    assert not looks_like_python("Hello")  # a bare name parses, but is not code
    assert not looks_like_python("This is prose, not code.")
    assert not looks_like_python("x = 1\x00")


def test_measure_mixed_languages_and_code_without_unknown_tokens(tokenizer):
    stats = measure_tokenizer(MIXED, tokenizer)
    assert stats["unknown_tokens"] == 0
    assert {stats[f"texts.{b}"] for b in ("latin", "cjk", "japanese", "korean", "code")} == {1}
    assert stats["texts.other"] == 1
    for bucket in ("latin", "cjk", "japanese", "korean", "code", "other"):
        assert stats[f"fertility.{bucket}.tokens_per_char"] > 0
        assert stats[f"compression.{bucket}.bytes_per_token"] > 0
        assert 0 <= stats[f"byte_fallback_rate.{bucket}"] <= 1
    # The tokenizer is trained on code: a code character costs far fewer tokens than a mostly unseen Han one.
    assert stats["fertility.cjk.tokens_per_char"] > 2 * stats["fertility.code.tokens_per_char"]
    assert stats["compression.code.bytes_per_token"] > stats["compression.cjk.bytes_per_token"]
    # In code the only byte tokens are newlines (always <0x0A>: training is per line), and they are not fallback.
    assert stats["byte_fallback_rate.code"] == 0
    assert stats["newline_tokens"] == sum(t.count("\n") for t in MIXED)
    assert stats["byte_fallback_rate.cjk"] > 0  # unseen Han characters fall back to bytes
    # Overall figures are token-weighted sums of the buckets.
    total_tokens = sum(len(tokenizer.encode(t, parse_special=False)) for t in MIXED)
    assert stats["validation_tokens"] == total_tokens
    assert stats["bytes_per_token"] == pytest.approx(sum(len(t.encode()) for t in MIXED) / total_tokens)
    assert stats["fertility.code.tokens_per_char"] == pytest.approx(
        len(tokenizer.encode(CODE, parse_special=False)) / len(CODE))
    assert stats["fertility.latin.tokens_per_word"] == pytest.approx(
        len(tokenizer.encode(ENGLISH, parse_special=False)) / len(ENGLISH.split()))


def test_vocab_coverage_is_the_share_of_ids_used(tokenizer):
    stats = measure_tokenizer(MIXED, tokenizer)
    used = {i for t in MIXED for i in tokenizer.encode(t, parse_special=False)}
    assert stats["vocab_ids_used"] == len(used)
    assert stats["vocab_coverage"] == pytest.approx(len(used) / tokenizer.vocab_size)
    assert stats["vocab_size"] == tokenizer.vocab_size


def test_heldout_code_coverage_is_high(tokenizer, heldout_texts):
    stats = measure_tokenizer(heldout_texts[:100], tokenizer)
    assert stats["texts.code"] >= 95  # a few stdlib files are not valid Python 3 (test data)
    assert stats["vocab_coverage"] > 0.5
    assert stats["unknown_tokens"] == 0


def test_explicit_buckets_override_classification(tokenizer):
    stats = measure_tokenizer([ENGLISH, CODE], tokenizer, buckets=["docs", "docs"])
    assert stats["texts.docs"] == 2
    assert not [k for k in stats if k.startswith("texts.") and k != "texts.docs"]
