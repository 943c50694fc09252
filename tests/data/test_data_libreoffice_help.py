"""lmforge.data.libreoffice_help: paragraphs with ids from a page in the LibreOffice help structure."""

from lmforge.data.libreoffice_help import has_cjk, iter_paragraphs, page_title, parse_paragraphs

PAGE = """<!DOCTYPE html>
<html lang="zh-CN" dir="ltr"><head><meta charset="utf-8"><title>Not 运算符</title>
<script type="text/javascript" src="help.js"></script></head>
<body><header id="TopLeftHeader"><a class="logo" href="x"><p dir="auto">LibreOffice 7.4 帮助</p></a></header>
<div id="DisplayArea">
<a name="bm_id3156024"></a>
<h1 id="hd_id3156024" dir="auto">Not 运算符</h1>
<p id="par_id3159414" class="paragraph" dir="auto">通过逆转表达式的
   位值来计算表达式的反值。</p>
<p id="par_id211641581251728" dir="auto">Use the shortcut <span id="swlnsys_1" class="switchinline"><span hidden="true" id="MACtext_1" class="MAC"><span class="keycode">Command</span></span><span hidden="true" id="defaulttext_1"><span class="keycode">Ctrl</span></span></span><span class="keycode"> + F</span> to open<br>the <a href="y">Find</a> toolbar.</p>
<p id="par_id3147228" class="paragraph" dir="auto">   </p>
<table><tr><td><p id="N0091" class="paragraph">Tom &amp; Jerry</p></td></tr></table>
<div class="bascode"><pre><code>Result = Not Expression</code></pre></div>
</div>
<footer><div id="DEBUG"><p dir="auto">This page is: /text/sbasic/shared/03060400.xhp</p></div></footer>
</body></html>
"""


def test_parse_paragraphs_yields_id_and_normalised_text_in_page_order():
    assert parse_paragraphs(PAGE) == [
        ("hd_id3156024", "Not 运算符"),
        ("par_id3159414", "通过逆转表达式的 位值来计算表达式的反值。"),
        ("par_id211641581251728", "Use the shortcut Ctrl + F to open the Find toolbar."),
        ("N0091", "Tom & Jerry"),
    ]


def test_iter_paragraphs_reads_a_utf8_file(tmp_path):
    page = tmp_path / "03060400.html"
    page.write_text(PAGE, encoding="utf-8")
    assert [pid for pid, _ in iter_paragraphs(page)] == [
        "hd_id3156024", "par_id3159414", "par_id211641581251728", "N0091",
    ]
    assert page_title(PAGE) == "Not 运算符"


def test_unclosed_paragraph_is_closed_by_the_next_one():
    assert parse_paragraphs('<p id="a">one<p id="b">two</p>') == [("a", "one"), ("b", "two")]


def test_has_cjk_needs_han_or_kana_not_punctuation():
    assert has_cjk("创建新的文档")
    assert has_cjk("ファイル")
    assert has_cjk("ひらがな")
    assert not has_cjk("Choose File - New.")
    assert not has_cjk("「」。、")
    assert not has_cjk("")
