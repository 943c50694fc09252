"""Literal sample texts and conversations shared by the tokenizer tests."""

MULTILINGUAL = [
    "日本語のテキストです。東京は日本の首都です。ひらがな、カタカナ、漢字を混ぜて書きます。",
    "中文文本：北京是中国的首都。我们用简体字和繁體字写代码注释。",
    "한국어 텍스트입니다. 서울은 한국의 수도입니다.",
    "Ελληνικά, русский текст, עברית, العربية, emoji 🐍🚀 and accents: café, naïve, Ångström.",
]

CONVERSATIONS = [
    [  # 3 turns: system, user, assistant
        {"role": "system", "content": "You are a careful Python assistant."},
        {"role": "user", "content": "Write a function that adds two numbers."},
        {"role": "assistant", "content": "def add(a, b):\n    return a + b\n"},
    ],
    [  # multi-turn, tabs, blank lines, trailing spaces
        {"role": "user", "content": "Indent with tabs please.\n\n  Thanks!  "},
        {"role": "assistant", "content": "class A:\n\tdef f(self):\n\t\treturn 1  \n\n\tx = [1,\n\t     2]"},
        {"role": "user", "content": "Now in Japanese: 説明してください。"},
        {"role": "assistant", "content": "これは関数です。\n中文也可以。 🐍"},
    ],
    [  # assistant turn with empty content, leading newline and spaces
        {"role": "system", "content": ""},
        {"role": "user", "content": "\n    leading newline and spaces"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "x = 1;  y = 2"},
        {"role": "assistant", "content": "    indented first line\n        deeper"},
    ],
]
