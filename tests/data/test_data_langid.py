"""Tests of offline language and script identification (lingua + script ratio)."""

import pytest

from lmforge.data.langid import UNKNOWN, LanguageGuess, detect_script, extract_code_prose, identify_language

ENGLISH = (
    "The committee met on Tuesday to discuss the budget for the coming year. Most members agreed that "
    "the library should stay open longer in the evenings, and that the money for new books must come "
    "from the savings made on heating and repairs over the last two winters."
)
FRENCH = (
    "Le comité s'est réuni mardi pour discuter du budget de l'année prochaine. La plupart des membres "
    "ont convenu que la bibliothèque devrait rester ouverte plus tard le soir, et que l'argent des "
    "nouveaux livres viendrait des économies réalisées sur le chauffage et les réparations."
)
JAPANESE = (
    "委員会は火曜日に集まり、来年の予算について話し合いました。ほとんどの委員は、図書館を夕方もっと遅くまで"
    "開けておくべきだと考え、新しい本の費用は過去二年間の冬に暖房と修理で節約したお金から出すことに同意しました。"
    "次の会議は来月の第一月曜日に開かれる予定です。"
)
RUSSIAN = (
    "Комитет собрался во вторник, чтобы обсудить бюджет на следующий год. Большинство членов согласились, "
    "что библиотека должна работать дольше по вечерам, а деньги на новые книги придут из средств, "
    "сэкономленных на отоплении и ремонте за последние две зимы."
)


@pytest.mark.parametrize("text, language, script", [
    (ENGLISH, "en", "Latn"),
    (FRENCH, "fr", "Latn"),
    (JAPANESE, "ja", "Jpan"),
    (RUSSIAN, "ru", "Cyrl"),
])
def test_prose_languages_are_identified(text, language, script):
    guess = identify_language(text, kind="text", min_letters=100)
    assert (guess.language, guess.script, guess.method) == (language, script, "lingua")


def test_script_fallback_without_lingua():
    assert identify_language(JAPANESE, min_letters=100, use_lingua=False).language == "ja"
    # Cyrillic and Latin are written by many languages: the script alone cannot tell which.
    russian = identify_language(RUSSIAN, min_letters=100, use_lingua=False)
    assert (russian.language, russian.script, russian.method) == (UNKNOWN, "Cyrl", "none")


def test_detect_script_shares():
    assert detect_script("abc def") == ("Latn", 1.0)
    assert detect_script("Привет, мир! ok")[0] == "Cyrl"
    assert detect_script("漢字だけ") == ("Jpan", 1.0)  # Han with kana is Japanese
    assert detect_script("中文文本") == ("Hani", 1.0)
    assert detect_script("한국어 텍스트") == ("Hang", 1.0)
    assert detect_script("12 + 34 = 46 ;") == (UNKNOWN, 0.0)


CODE_EN = '''"""Utilities to read the configuration of the server and to check that it is valid."""
import os

# Read the file once and keep the parsed values in a module-level cache, so that
# every later call returns the same object without touching the disk again.
def read_config(path):
    """Return the parsed configuration found at path, or raise an error naming the file."""
    with open(path) as f:
        return parse(f.read())  # the parser lives in another module of this package
'''
CODE_FR = '''"""Outils pour lire la configuration du serveur et vérifier qu'elle est valide."""
import os

# On lit le fichier une seule fois et on garde les valeurs dans un cache du module, afin que
# chaque appel suivant renvoie le même objet sans relire le disque.
def read_config(path):
    """Renvoie la configuration lue dans le fichier, ou lève une erreur qui nomme le fichier."""
    with open(path) as f:
        return parse(f.read())  # l'analyseur se trouve dans un autre module de ce paquet
'''


def test_code_language_is_the_language_of_its_comments_and_docstrings():
    assert identify_language(CODE_EN, kind="code", min_letters=100).language == "en"
    assert identify_language(CODE_FR, kind="code", min_letters=100).language == "fr"


def test_code_without_prose_is_unknown_and_keeps_its_script():
    code = "def add(a, b):\n    return a + b\n\nx = add(1, 2)\n" * 5
    guess = identify_language(code, kind="code")
    assert (guess.language, guess.script, guess.method) == (UNKNOWN, "Latn", "none")


def test_extract_code_prose_keeps_words_and_drops_identifiers():
    prose = extract_code_prose("# Written by Ann Lee, see CNRI notes in https://www.python.org/x.py\n"
                               "x = fooBar  // MAX_SIZE of buffers\n/* block comment here */\n")
    assert prose == "Written by Ann Lee see notes in python of buffers block comment here"


def test_identify_language_bounds_and_errors():
    assert identify_language(ENGLISH[:60], kind="text").language == UNKNOWN  # under min_letters
    with pytest.raises(ValueError, match="kind"):
        identify_language(ENGLISH, kind="prose")
    with pytest.raises(ValueError, match="language_candidates"):
        identify_language(ENGLISH, min_letters=10, candidates=["en", "xx"])


def test_candidates_restrict_the_choice():
    guess = identify_language(FRENCH, kind="text", min_letters=100, candidates=["en", "de"])
    assert guess.language in ("en", "de")


def test_real_chinese_and_japanese_pages_are_told_apart_despite_their_latin():
    """Rendered man pages are ~40% Latin option names: their CJK words decide (kana -> ja, Han alone -> zh)."""
    from cjk_pages import JA_CHGRP, JA_CHOWN, ZH_CHGRP, ZH_CHOWN

    for text, language, script in ((ZH_CHGRP, "zh", "Hani"), (ZH_CHOWN, "zh", "Hani"),
                                   (JA_CHGRP, "ja", "Jpan"), (JA_CHOWN, "ja", "Jpan")):
        assert identify_language(text) == LanguageGuess(language, script, "lingua")
    # A synopsis first (the manpages-ja-dev layout): the Latin-word sample alone said "en".
    synopsis = "名前\n  open - open a file\n書式\n  #include <fcntl.h>\n" + "int open(const char *pathname, int flags);\n" * 8
    assert identify_language(synopsis + JA_CHGRP[300:]).language == "ja"
    assert identify_language("Copyright notice only, in English, with a few words: 名前 書式.\n" * 10).language == "en"
