"""lmforge.data.chat_sources: chatterbot-corpus dialogues and Debian FAQ question->answer pairs."""

from __future__ import annotations

import pytest

from lmforge.data.chat_sources import build_dialogues, build_faq, cut_answer, extract_faq_pairs

GOOD_ZH = """categories:
- 问候
conversations:
- - 你好
  - 你好！
  - 最近怎么样？
  - 还不错，谢谢。
- - 你好
  - 你好！
  - 最近怎么样？
  - 还不错，谢谢。
- - 你是谁
  - 我是一个聊天机器人。
- - 今天天气怎么样
  - 晴天。
  - 真好
- - 只有一句
- - 空答案
  - ''
"""
BAD_YAML = "conversations:\n- - [unclosed\n  - x\n"
NO_CONVERSATIONS = "categories:\n- x\n"


def chatterbot_cache(tmp_path):
    folder = tmp_path / "chatterbot-corpus" / "chatterbot_corpus" / "data" / "chinese"
    folder.mkdir(parents=True)
    (folder / "greetings.yml").write_text(GOOD_ZH, encoding="utf-8")
    (folder / "broken.yml").write_text(BAD_YAML, encoding="utf-8")
    (folder / "empty.yml").write_text(NO_CONVERSATIONS, encoding="utf-8")
    return tmp_path


def test_chatterbot_dialogues_are_multi_turn_and_bad_input_is_quarantined_with_file_and_reason(tmp_path):
    quarantine = []
    convs, stats = build_dialogues(chatterbot_cache(tmp_path), ["zh"], quarantine=quarantine)

    assert [[m["content"] for m in c["messages"]] for c in convs] == [
        ["你好", "你好！", "最近怎么样？", "还不错，谢谢。"],
        ["今天天气怎么样", "晴天。"],              # an odd last user turn has no answer: dropped
    ]
    assert [m["role"] for m in convs[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert {c["category"] for c in convs} == {"dialogue"}
    assert convs[0]["metadata"]["language_group"] == "zh" and convs[0]["metadata"]["license"] == "BSD-3-Clause"
    assert convs[0]["metadata"]["unit"].startswith("dialogue:zh:")
    assert {(q["location"], q["reason"]) for q in quarantine} == {
        ("chatterbot-corpus/chatterbot_corpus/data/chinese/broken.yml", "unparsable_yaml"),
        ("chatterbot-corpus/chatterbot_corpus/data/chinese/empty.yml", "no_conversations"),
        ("chatterbot-corpus/chatterbot_corpus/data/chinese/greetings.yml:conversations[4]", "too_few_turns"),
        ("chatterbot-corpus/chatterbot_corpus/data/chinese/greetings.yml:conversations[5]", "bad_turn"),
    }
    # the repeated dialogue and the bot's own identity ("你是谁") are dropped, counted
    assert stats["zh"] == {"files": 3, "dialogues": 2, "dropped": {"duplicate": 1, "identity_conflict": 1},
                           "quarantined": 4}


def test_a_missing_language_folder_names_make_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="make corpus"):
        build_dialogues(chatterbot_cache(tmp_path), ["ja"], quarantine=[])


FAQ_PAGE = """<html><body>
<div class="toc"><dl><dt><a href="#whatisdebian">1.2. 什么是 Debian GNU/Linux？</a></dt></dl></div>
<div class="section"><div class="titlepage"><h2 class="title"><a id="whatisdebian"></a>1.2. 什么是 Debian GNU/Linux？</h2></div>
<p>
Debian GNU/Linux 是 Linux 操作系统的一个<span class="emphasis"><em>发行版</em></span>，以及其上运行的
无数软件包。
</p><div class="itemizedlist"><ul><li><p>全功能的：用户可以选择安装哪些软件包。</p></li></ul></div>
</div>
<div class="section"><h2 class="title"><a id="history"></a>1.3. 历史</h2><p>不是问题的一节。</p></div>
<div class="section"><h3 class="title"><a id="s3.1"></a>3.1. Can I use it without a network?</h3>
<p>Yes. Install from the DVD.</p></div>
<div class="section"><h3 class="title"><a id="empty"></a>3.2. Is this answered?</h3></div>
</body></html>"""


def test_faq_pairs_are_question_headings_and_the_paragraphs_that_follow():
    pairs = list(extract_faq_pairs(FAQ_PAGE, max_answer_bytes=1000))
    assert pairs == [
        ("whatisdebian", "什么是 Debian GNU/Linux？",
         "Debian GNU/Linux 是 Linux 操作系统的一个发行版，以及其上运行的无数软件包。\n\n全功能的：用户可以选择安装哪些软件包。"),
        ("s3.1", "Can I use it without a network?", "Yes. Install from the DVD."),
    ]


def test_long_answers_are_cut_on_paragraph_then_sentence_boundaries():
    assert cut_answer(["One two.", "Three four five."], 12) == "One two."
    assert cut_answer(["First sentence. Second sentence. Third."], 33) == "First sentence. Second sentence."
    assert cut_answer(["第一句。第二句。"], 15) == "第一句。"  # 12 bytes of UTF-8; the second would make 24
    assert cut_answer(["A sentence far too long for the budget."], 5) == ""


def test_faq_pages_per_language_with_unit_shared_across_languages(tmp_path):
    for package, rel in (("debian-faq", "basic-defs.en.html"), ("debian-faq-zh-cn", "zh-cn/basic-defs.zh-cn.html")):
        path = tmp_path / package / "usr/share/doc/debian/FAQ" / rel
        path.parent.mkdir(parents=True)
        path.write_text(FAQ_PAGE, encoding="utf-8")
    convs, stats = build_faq(tmp_path, ["en", "zh"], quarantine=[])
    assert stats == {"en": {"files": 1, "pairs": 2}, "zh": {"files": 1, "pairs": 2}}
    assert [c["metadata"]["unit"] for c in convs] == ["faq:whatisdebian", "faq:s3.1"] * 2
    assert [c["metadata"]["language_group"] for c in convs] == ["en", "en", "zh", "zh"]
    assert all(c["category"] == "faq" and len(c["messages"]) == 2 for c in convs)
