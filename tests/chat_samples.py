"""A tiny literal source cache of the SFT chat packages (LibreOffice help en/zh/ja, chatterbot-corpus,
Debian FAQ en/zh/ja) in the layout of ``data/00_sources``: for tests that run the sft data node."""

from __future__ import annotations

from pathlib import Path

HELP = "usr/share/libreoffice/help"
FAQ = "usr/share/doc/debian/FAQ"

HELP_PAGES = {
    "en-US": ["Deletes the selected scenario from the document.", "Choose Format - Cells to open the dialog.",
              "The number 0 is returned for empty cells and matrix elements.",
              "Untranslated paragraph that stays in English everywhere."],
    "zh-CN": ["从文档中删除选中的方案。", "选择「格式 - 单元格」打开对话框。", "对于空单元格和矩阵元素返回数字 0。",
              "Untranslated paragraph that stays in English everywhere."],
    "ja": ["選択したシナリオをドキュメントから削除します。", "書式 - セル を選択してダイアログを開きます。",
           "空のセルと行列要素には数値 0 が返されます。", "Untranslated paragraph that stays in English everywhere."],
}
HELP_PACKAGES = {"en-US": "libreoffice-help-en-us", "zh-CN": "libreoffice-help-zh-cn", "ja": "libreoffice-help-ja"}

CHATTERBOT = {
    "english": "conversations:\n- - Hello\n  - Hi there!\n- - How are you?\n  - I am fine, thank you.\n"
               "  - Good to hear.\n  - And you?\n- - What is Python?\n  - A programming language.\n",
    "chinese": "conversations:\n- - 你好\n  - 你好！\n- - 你喜欢什么？\n  - 我喜欢读书。\n- - 什么是Python\n  - 一种编程语言。\n",
    "japanese": "conversations:\n- - こんにちは\n  - こんにちは！\n- - 元気ですか\n  - 元気です。\n"
                "- - Pythonとは\n  - プログラミング言語です。\n",
}

FAQ_PAGES = {
    ("debian-faq", "basic-defs.en.html"): [("whatisdebian", "What is Debian?", "Debian is a free operating system."),
                                           ("apps", "What software is in it?", "Thousands of packages.")],
    ("debian-faq-zh-cn", "zh-cn/basic-defs.zh-cn.html"): [("whatisdebian", "什么是 Debian？", "Debian 是自由的操作系统。"),
                                                          ("apps", "它包含哪些软件？", "数以千计的软件包。")],
    ("debian-faq-ja", "ja/basic-defs.ja.html"): [("whatisdebian", "Debian とは何ですか?", "Debian は自由なオペレーティングシステムです。"),
                                                 ("apps", "どんなソフトウェアがありますか?", "数千のパッケージです。")],
}


def _help_page(paragraphs: list[str]) -> str:
    body = "\n".join(f'<p id="par_id{i}" class="paragraph">{text}</p>' for i, text in enumerate(paragraphs))
    return f'<html><body><div id="DisplayArea">\n{body}\n</div></body></html>\n'


def write_chat_cache(root: Path, pages: int = 4) -> Path:
    """The tiny cache under ``root`` (``pages`` copies of the help page, each with its own paragraphs)."""
    for lang, package in HELP_PACKAGES.items():
        for k in range(pages):
            path = root / package / HELP / lang / "text" / "shared" / f"page{k}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_help_page([f"{t} ({k})" if lang == "en-US" or i == 3 else f"{t}（{k}）"
                                        for i, t in enumerate(HELP_PAGES[lang])]), encoding="utf-8")
    for folder, text in CHATTERBOT.items():
        path = root / "chatterbot-corpus" / "chatterbot_corpus" / "data" / folder / "greetings.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for (package, rel), sections in FAQ_PAGES.items():
        path = root / package / FAQ / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<html><body>" + "".join(
            f'<div class="section"><h2 class="title"><a id="{anchor}"></a>1.{i}. {q}</h2><p>{a}</p></div>'
            for i, (anchor, q, a) in enumerate(sections)) + "</body></html>", encoding="utf-8")
    (root / "manifest.json").write_text('{"packages": {}}\n', encoding="utf-8")
    return root
