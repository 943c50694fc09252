"""Tests of the Gopher quality, Gopher repetition and C4 heuristics: each rule fires on a crafted text."""

import pytest
from data_samples import PROSE

from lmforge.data.quality import (
    QualityConfig,
    c4_failure,
    duplicate_ngram_chars_ratio,
    gopher_quality_failure,
    gopher_repetition_failure,
    top_ngram_chars_ratio,
)

GOOD = PROSE
CONFIG = QualityConfig()


def test_good_prose_passes_every_rule():
    assert gopher_quality_failure(GOOD, CONFIG) is None
    assert gopher_repetition_failure(GOOD, CONFIG) is None
    assert c4_failure(GOOD, CONFIG) is None


@pytest.mark.parametrize("text, expected", [
    ("Too short to be a real document, with the words.\n", "words=10 not in [50, 100000]"),
    ("a b c d e f g h i j to of the and " * 5, "mean_word_length="),
    (GOOD + "# " * 30 + "\n", "symbol_word_ratio="),  # 30 symbols for ~150 words
    ("".join(f"- item number {i} of the list and more words here\n" for i in range(12)), "bullet_lines_ratio="),
    ("".join(f"line {i} of the story goes on and on and then...\n" for i in range(12)), "ellipsis_lines_ratio="),
    (GOOD + " ".join(str(n) for n in range(60)) + "\n", "alpha_words_ratio="),
    (GOOD.replace(" the ", " a ").replace(" and ", " plus ").replace(" of ", " off ").replace(" to ", " unto ")
     .replace(" with ", " using ").replace(" that ", " which ").replace("The ", "A "), "stop_words=1 < 2"),
])
def test_gopher_quality_rules(text, expected):
    failure = gopher_quality_failure(text, CONFIG)
    assert failure is not None and failure.startswith(expected)


def test_stop_words_are_checked_on_english_only_and_unspaced_scripts_skip_word_rules():
    no_stop_words = " ".join(["Bibliothek Verwaltung Gemeinde Sommer Winter Strasse"] * 10) + ".\n"
    assert gopher_quality_failure(no_stop_words, CONFIG, language="de") is None
    assert gopher_quality_failure(no_stop_words, CONFIG, language="en").startswith("stop_words")
    # A language with no rules of its own written without spaces: the word rules are skipped.
    assert gopher_quality_failure("ช้างเป็นสัตว์ใหญ่ที่อาศัยอยู่ในป่า\n", CONFIG, language="th", script="Thai") is None


@pytest.mark.parametrize("text, expected", [
    ("\n\n".join(["The same paragraph is written here again."] * 3 + [GOOD]), "duplicate_paragraphs_ratio="),
    (GOOD + "Subscribe to the newsletter today.\n" * 6, "duplicate_lines_ratio="),  # 5 repeats in 12 lines
    (GOOD + ("Buy cheap tickets now, " * 30) + "\n", "top_2gram_chars_ratio="),
])
def test_gopher_repetition_rules(text, expected):
    failure = gopher_repetition_failure(text, CONFIG)
    assert failure is not None and failure.startswith(expected)


def test_ngram_ratios_are_exact():
    words = ["ab", "cd", "ab", "cd", "ef"]  # 10 characters; ("ab", "cd") occurs twice: 8 characters
    assert top_ngram_chars_ratio(words, 2) == pytest.approx(0.8)
    assert top_ngram_chars_ratio(["a", "b", "c"], 2) == 0.0  # no n-gram repeats
    # the second ("ab", "cd") repeats the first: 4 of 10 characters
    assert duplicate_ngram_chars_ratio(words, 2) == pytest.approx(0.4)
    assert duplicate_ngram_chars_ratio(words, 6) == 0.0
    # overlapping repeats: ("a", "a") at 0, 1 and 2; the repeats at 1 and 2 cover words 1-3, each once
    assert duplicate_ngram_chars_ratio(["a", "a", "a", "a"], 2) == pytest.approx(0.75)
    assert duplicate_ngram_chars_ratio(["a", "a", "a", "b"], 2) == pytest.approx(0.5)


@pytest.mark.parametrize("text, expected", [
    (GOOD + "Lorem ipsum dolor sit amet.\n", "lorem_ipsum"),
    (GOOD + "Use {name} to fill in the form.\n", "curly_brace"),
    ("\n".join(f"menu entry {i} home about contact shop" for i in range(20)) + "\n", "terminal_punctuation_ratio="),
    (GOOD + "Please enable JavaScript to view this page.\nRead our privacy policy.\nThis site uses cookies.\n",
     "boilerplate_lines_ratio="),
])
def test_c4_rules(text, expected):
    failure = c4_failure(text, CONFIG)
    assert failure is not None and failure.startswith(expected)


def test_rules_can_be_relaxed_and_config_is_checked():
    lenient = QualityConfig(c4_drop_curly_braces=False)
    assert c4_failure(GOOD + "Use {name} to fill in the form.\n", lenient) is None
    with pytest.raises(ValueError, match="max_bullet_lines_ratio"):
        QualityConfig(max_bullet_lines_ratio=1.5)
    assert QualityConfig(max_top_ngram_chars_ratio={"2": "0.5"}).max_top_ngram_chars_ratio == {2: 0.5}


# --- Chinese and Japanese: character rules ------------------------------------------------------


def test_real_chinese_and_japanese_pages_pass_their_language_rules():
    from cjk_pages import JA_CHGRP, JA_CHOWN, ZH_CHGRP, ZH_CHOWN

    for text, language in ((ZH_CHGRP, "zh"), (ZH_CHOWN, "zh"), (JA_CHGRP, "ja"), (JA_CHOWN, "ja")):
        assert gopher_quality_failure(text, CONFIG, language=language) is None
        assert gopher_repetition_failure(text, CONFIG, language=language) is None
        assert c4_failure(text, CONFIG, language=language) is None


def test_character_rules_fire_on_chinese_and_japanese():
    from cjk_pages import JA_CHGRP, ZH_CHGRP

    assert gopher_quality_failure("这是一个很短的文档。\n", CONFIG, language="zh") == "characters=9 not in [50, 100000]"
    no_stop = "春夏秋冬东南西北山川河海日月星辰风雨雷电金木水火土" * 3 + "\n"
    assert gopher_quality_failure(no_stop, CONFIG, language="zh") == "stop_words=0 < 2"
    spam = ZH_CHGRP[:400] + "立即购买优惠商品" * 40 + "\n"
    assert gopher_repetition_failure(spam, CONFIG, language="zh").startswith("top_4gram_chars_ratio=")
    repeated = JA_CHGRP[:600] + "ファイルのグループを変更する。" * 12 + "\n"
    assert gopher_repetition_failure(repeated, CONFIG, language="ja").startswith(("top_", "duplicate_"))
    # Curly braces are C examples in zh/ja documentation: not a C4 failure there, still one in English.
    assert c4_failure(ZH_CHGRP + "struct stat { int st_mode; };\n", CONFIG, language="zh") is None
    assert c4_failure(GOOD + "struct stat { int st_mode; };\n", CONFIG, language="en") == "curly_brace"


def test_per_language_rules_resolve_and_reject_typos():
    zh = CONFIG.for_language("zh")
    assert zh.unit == "characters" and zh.min_words == 50 and zh.c4_drop_curly_braces is False
    assert CONFIG.for_language("en") is CONFIG and CONFIG.for_language("unknown") is CONFIG
    assert sorted(CONFIG.for_language("ja").max_top_ngram_chars_ratio) == [6, 9, 12]
    custom = QualityConfig(by_language={"ko": {"unit": "characters", "min_words": 20}})
    assert custom.for_language("KO").min_words == 20 and custom.for_language("zh") is custom
    with pytest.raises(ValueError, match=r"by_language\.zh: unknown key\(s\) \['min_chars'\]"):
        QualityConfig(by_language={"zh": {"min_chars": 10}})
    with pytest.raises(ValueError, match="quality.unit"):
        QualityConfig(by_language={"zh": {"unit": "bytes"}})
