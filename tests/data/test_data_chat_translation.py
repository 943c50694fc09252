"""lmforge.data.parallel: LibreOffice help paragraphs aligned across en-US / zh-CN / ja into translation pairs."""

from __future__ import annotations

from collections import Counter

from lmforge.data.parallel import (
    PROMPTS,
    align_pages,
    build_translation_conversations,
    help_tree,
    sample_pages,
    translation_conversation,
)

EN_PAGE = """<html><body><div id="DisplayArea">
<h1 id="hd_id1">Database Functions</h1>
<p id="par_id10" class="paragraph">The functions in the Database category take three arguments as follows:</p>
<p id="par_id11" class="paragraph">These arguments are described more fully below, one by one.</p>
<p id="par_id12" class="paragraph">Choose Edit - Cut.</p>
<p id="par_id13" class="paragraph">Use $[officename] to open the dialog of this function.</p>
<p id="par_id14" class="paragraph">This paragraph has no counterpart in the other tree.</p>
<p id="par_id15" class="paragraph">The cell range of the database, one row for each record.</p>
</div></body></html>
"""
ZH_PAGE = """<html><body><div id="DisplayArea">
<h1 id="hd_id1">数据库函数</h1>
<p id="par_id10" class="paragraph">数据库类别中的函数使用
   以下三个参数：</p>
<p id="par_id11" class="paragraph">These arguments are described more fully below, one by one.</p>
<p id="par_id12" class="paragraph">选择「编辑 - 剪切」。</p>
<p id="par_id13" class="paragraph">使用 $[officename] 打开此函数的对话框。</p>
<p id="par_id15" class="paragraph">The cell range of the database, one row for each record.</p>
</div></body></html>
"""
OTHER_EN = """<html><body><p id="par_id20">A second page that repeats the first paragraph of the first.</p>
<p id="par_id21">The functions in the Database category take three arguments as follows:</p></body></html>"""
OTHER_ZH = """<html><body><p id="par_id20">第二页重复了第一页的第一段。</p>
<p id="par_id21">数据库类别中的函数使用以下三个参数：</p></body></html>"""


def write_tree(root, lang, pages):
    for rel, html in pages.items():
        path = help_tree(root, lang) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")


def make_cache(root):
    write_tree(root, "en", {"text/scalc/01/db.html": EN_PAGE, "text/shared/other.html": OTHER_EN,
                            "text/shared/only_en.html": OTHER_EN})
    write_tree(root, "zh", {"text/scalc/01/db.html": ZH_PAGE, "text/shared/other.html": OTHER_ZH})
    write_tree(root, "ja", {"text/scalc/01/db.html": EN_PAGE})  # nothing translated into Japanese
    return root


def test_only_translated_paragraphs_become_pairs(tmp_path):
    root = make_cache(tmp_path)
    drops = Counter()
    pairs = list(align_pages(help_tree(root, "en"), help_tree(root, "zh"), "zh", drops=drops))

    assert [(p["page"], p["par_id"]) for p in pairs] == [("text/scalc/01/db.html", "par_id10"),
                                                         ("text/shared/other.html", "par_id20")]
    # the line break inside a Chinese paragraph is not a space
    assert pairs[0]["zh"] == "数据库类别中的函数使用以下三个参数："
    assert pairs[0]["pair_id"] == "zh:text/scalc/01/db.html#par_id10"
    assert drops == {
        "english_too_short": 2,        # the heading "Database Functions", "Choose Edit - Cut." (<= 20 chars)
        "untranslated": 2,             # par_id11 and par_id15: the zh tree kept the English
        "placeholder_or_markup": 1,    # $[officename]
        "not_in_zh": 1,                # par_id14
        "duplicate": 1,                # par_id21 repeats par_id10's pair on another page
        "page_not_in_zh": 2,           # only_en.html has two paragraphs
    }


def test_an_untranslated_tree_gives_no_pairs(tmp_path):
    root = make_cache(tmp_path)
    drops = Counter()
    assert list(align_pages(help_tree(root, "en"), help_tree(root, "ja"), "ja", drops=drops)) == []
    assert drops["untranslated"] == 4 and drops["page_not_in_ja"] == 4  # par_id10, 11, 14, 15


def test_each_pair_is_one_conversation_in_a_direction_and_phrasing_chosen_by_its_id():
    pair = {"pair_id": "zh:text/a.html#par_id1", "page": "text/a.html", "par_id": "par_id1",
            "en": "Deletes the selected scenario.", "zh": "删除选中的方案。"}
    conv = translation_conversation(pair, "zh")
    meta = conv["metadata"]
    assert conv["category"] == "translation" and translation_conversation(pair, "zh") == conv  # deterministic
    assert {meta["src_lang"], meta["tgt_lang"]} == {"en", "zh"}
    assert conv["messages"][1]["content"] == pair[meta["tgt_lang"]]  # the reference is the assistant turn
    assert meta["source_text"] == pair[meta["src_lang"]] and meta["source_text"] in conv["messages"][0]["content"]
    assert conv["messages"][0]["content"] in {p.format(text=meta["source_text"])
                                              for p in PROMPTS[(meta["src_lang"], meta["tgt_lang"])]}
    assert meta["language_group"] == "zh" and meta["license"] == "MPL-2.0" and meta["page"] == "text/a.html"

    # over many pairs both directions and every phrasing (English and the source language) occur
    convs = [translation_conversation({**pair, "pair_id": f"zh:p{i}.html#x"}, "zh") for i in range(200)]
    directions = Counter((c["metadata"]["src_lang"], c["metadata"]["tgt_lang"]) for c in convs)
    assert set(directions) == {("en", "zh"), ("zh", "en")} and min(directions.values()) > 60
    prompts = {c["messages"][0]["content"] for c in convs}
    assert "把下面的英文翻译成中文：\n\nDeletes the selected scenario." in prompts
    assert "Translate into Chinese:\n\nDeletes the selected scenario." in prompts
    assert "Translate into English:\n\n删除选中的方案。" in prompts


def test_build_counts_pairs_pages_and_directions_per_language(tmp_path):
    root = make_cache(tmp_path)
    convs, stats = build_translation_conversations(root, ["zh", "ja"])
    assert len(convs) == 2 and stats["zh"]["pairs"] == 2 and stats["zh"]["pages"] == 2
    assert sum(stats["zh"]["directions"].values()) == 2 and stats["ja"]["pairs"] == 0


def test_a_page_sample_is_stable_and_only_grows_with_max_pages(tmp_path):
    pages = [f"text/p{i}.html" for i in range(50)]
    ten, twenty = sample_pages(pages, 10, seed=0), sample_pages(pages, 20, seed=0)
    assert len(ten) == 10 and set(ten) < set(twenty) and ten == sorted(ten)
    assert sample_pages(pages, 10, seed=1) != ten and sample_pages(pages, None, seed=0) == sorted(pages)

    root = make_cache(tmp_path)
    convs, stats = build_translation_conversations(root, ["zh"], max_pages=1)
    assert stats["zh"]["pages_read"] == 1 and stats["zh"]["pages_in_package"] == 3
