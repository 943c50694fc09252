"""Bad training input for lmforge.tokenizer.train: clear errors or counted handling, never a hang."""

from __future__ import annotations

import re
import tracemalloc

import pytest

from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from lmforge.tokenizer.train import TokenizerTrainArgs, iterate_training_lines, train_tokenizer

CODE = ["def f(x):\n    return x + 1\n\n\nclass A:\n    pass\n"] * 40

pytestmark = pytest.mark.timeout(60)


def _suggested_vocab(err: pytest.ExceptionInfo) -> int:
    match = re.search(r"lower tokenizer\.train\.vocab_size to <= (\d+)", str(err.value))
    assert match, str(err.value)
    return int(match.group(1))


@pytest.mark.parametrize("texts", [[], [""], ["", "\n\n\n"]])
def test_empty_corpus_names_what_to_change(texts):
    with pytest.raises(ValueError, match="empty corpus") as err:
        train_tokenizer(texts, TokenizerTrainArgs(vocab_size=300))
    assert f"in {len(texts)} texts" in str(err.value)
    assert "max_sentence_length" in str(err.value)


def test_vocab_larger_than_corpus_supports_gives_the_largest_size_that_works():
    with pytest.raises(ValueError, match="vocab_size 5000 is larger than this corpus supports") as err:
        train_tokenizer(CODE, TokenizerTrainArgs(vocab_size=5000))
    limit = _suggested_vocab(err)
    assert 262 < limit < 5000
    tok = SentencePieceTokenizer.from_bytes(train_tokenizer(CODE, TokenizerTrainArgs(vocab_size=limit)))
    assert tok.vocab_size == limit


def test_corpus_of_one_repeated_character():
    texts = ["a" * 1000 + "\n"] * 50
    with pytest.raises(ValueError, match="larger than this corpus supports") as err:
        train_tokenizer(texts, TokenizerTrainArgs(vocab_size=400))
    limit = _suggested_vocab(err)
    tok = SentencePieceTokenizer.from_bytes(train_tokenizer(texts, TokenizerTrainArgs(vocab_size=limit)))
    ids = tok.encode("a" * 1000)
    assert len(ids) < 100 and tok.decode(ids) == "a" * 1000  # learned runs of "a", not one token per char
    assert tok.decode(tok.encode("b\x00c")) == "b\x00c"  # unseen characters still round-trip


def test_nul_characters_are_stripped_from_training_and_counted():
    texts = [*CODE, "x = 1\x00\x00\ny\x00 = 2\n"]
    report: dict[str, int] = {}
    tok = SentencePieceTokenizer.from_bytes(train_tokenizer(texts, TokenizerTrainArgs(vocab_size=290), report=report))
    assert report["nul_chars_removed"] == 3
    assert not [i for i in range(tok.vocab_size) if "\x00" in tok.id_to_token(i)]
    ids = tok.encode("a\x00b")
    assert tok.token_to_id("<0x00>") in ids and tok.decode(ids) == "a\x00b"


def test_corpus_of_only_nul_bytes_is_an_empty_corpus():
    with pytest.raises(ValueError, match=r"empty corpus.*300 NUL characters removed"):
        train_tokenizer(["\x00\x00\x00\n" * 100], TokenizerTrainArgs(vocab_size=300))


def test_lines_longer_than_max_sentence_length_are_skipped_and_counted():
    texts = [*CODE, "x" * 100_000 + "\nshort = 1\n", "é" * 5000]  # 10,000 bytes: over the limit below
    report: dict[str, int] = {}
    train_tokenizer(texts, TokenizerTrainArgs(vocab_size=290, max_sentence_length=8192), report=report)
    assert report["lines_skipped_too_long"] == 2
    assert report["texts"] == len(texts)
    assert report["lines"] == report["lines_sampled"] == 40 * 4 + 1


def test_a_corpus_of_only_over_long_lines_says_to_raise_max_sentence_length():
    with pytest.raises(ValueError, match=r"3 lines skipped as longer than max_sentence_length=1000 bytes"):
        train_tokenizer(["y" * 5000] * 3, TokenizerTrainArgs(vocab_size=300, max_sentence_length=1000))


def test_an_over_long_line_is_never_copied():
    # Stand-in for a 1 GB line: 8 MB. Scanning it must not allocate a copy (or its UTF-8 encoding).
    huge = "z" * 8_000_000 + "\nkept line\n"
    counts: dict[str, int] = {}
    tracemalloc.start()
    try:
        lines = list(iterate_training_lines([huge], max_bytes=16384, counts=counts))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == ["kept line"]
    assert counts == {"texts": 1, "lines": 1, "lines_skipped_too_long": 1, "nul_chars_removed": 0}
    assert peak < 1_000_000


def test_vocab_smaller_than_the_characters_needed_says_what_to_raise():
    texts = [*CODE, "日本語のテキスト、中文文本、한국어 텍스트"]
    with pytest.raises(ValueError, match=r"raise tokenizer\.train\.vocab_size to >= \d+ or lower .*character_coverage"):
        train_tokenizer(texts, TokenizerTrainArgs(vocab_size=270))


def test_training_on_many_long_repetitive_lines_finishes():
    report: dict[str, int] = {}
    texts = ("a" * 16000 + "\n" for _ in range(200))  # a generator: streamed, never a list
    with pytest.raises(ValueError, match="larger than this corpus supports"):
        train_tokenizer(texts, TokenizerTrainArgs(vocab_size=400), report=report)
    assert report["lines"] == 200
