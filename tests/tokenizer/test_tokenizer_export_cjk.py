"""HF parity of the export on Chinese and Japanese, with the rare characters left to byte fallback.

A tokenizer trained as the default is (character_coverage < 1) on real zh/ja/en prose (the chain's
LibreOffice help pages, ``tests/chain_corpus.json``) plus stdlib code, then checked on pages it never saw
and on the cases that stress byte fallback: Han characters outside the coverage (CJK extension B
included), emoji with joiners and skin tones, half- and full-width kana, full-width punctuation and
Latin, the ideographic space, mixed CJK and code. Every line and every whole text must give the same
ids and the same decoded text in sentencepiece and in ``AutoTokenizer``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_tokenizer_export import mismatches

from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.export import export_hf_tokenizer
from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "chain_corpus.json"
TRAIN_PAGES = 6  # of 8 per language; the last two are held out

EDGE_CASES = [
    "罕见字：龘靐齉爩鱻麤，扩展B区：𠀀𠮷𡈽𪚥，异体字：丟丢。",
    "絵文字 🐍🚀👨‍👩‍👧‍👦 👍🏽 ❤️ と国旗 🇯🇵🇨🇳、記号 ①②③ ㈱ ㍿。",
    "半角ｶﾀｶﾅﾃﾞｽ、全角カタカナです、ひらがなです。ヴァ・ヴィ・ゔ。",
    "全角标点：（括号）【方括号】「引号」『双引号』，。！？；：……——～",
    "全角英数：ＡＢＣａｂｃ１２３％＆＃　と和文の間の全角スペース。",
    "def 计算(数值: int) -> str:\n    \"\"\"返回字符串。戻り値は文字列です。\"\"\"\n    return f'{数值}个'  # 注释\n",
    "混合 mixed 文本 text: 2024年12月2日 12:30、価格¥1,980（税込）。",
    "\u3000\u3000段落以全角空格缩进。\n\n\t制表符\t之后。  两个空格。",
]


@pytest.fixture(scope="module")
def cjk_pages() -> dict[str, list[str]]:
    by_split: dict[str, list[str]] = {"train": [], "heldout": []}
    counts: dict[str, int] = {}
    for doc in json.loads(CORPUS.read_text("utf-8"))["documents"]:
        n = counts[doc["language_group"]] = counts.get(doc["language_group"], 0) + 1
        by_split["train" if n <= TRAIN_PAGES else "heldout"].append(doc["text"])
    return by_split


@pytest.fixture(scope="module")
def cjk_tokenizers(cjk_pages, train_texts, tmp_path_factory):
    from transformers import AutoTokenizer

    model = train_tokenizer(cjk_pages["train"] * 3 + train_texts[:20],
                            TokenizerTrainArgs(vocab_size=1024, character_coverage=0.995))
    out = tmp_path_factory.mktemp("cjk_tokenizer")
    export_hf_tokenizer(model, out, chat_template=DEFAULT_CHAT_TEMPLATE, model_max_length=512)
    return SentencePieceTokenizer.from_bytes(model), AutoTokenizer.from_pretrained(str(out), local_files_only=True)


def test_heldout_cjk_pages_fall_back_to_bytes_and_keep_parity(cjk_tokenizers, cjk_pages):
    ours, hf = cjk_tokenizers
    heldout = cjk_pages["heldout"]
    byte_ids = {i for i in range(ours.vocab_size) if ours.id_to_token(i).startswith("<0x")}
    fallback = sum(i in byte_ids and ours.id_to_token(i) != "<0x0A>" for t in heldout for i in ours.encode(t))
    assert fallback > 0  # the parity below covers the byte-fallback path, not only learned pieces
    assert mismatches(ours, hf, heldout) == []
    lines = [line for text in heldout for line in text.split("\n") if line]
    assert mismatches(ours, hf, lines, backend=True) == []


def test_parity_on_rare_han_emoji_kana_and_full_width_text(cjk_tokenizers):
    ours, hf = cjk_tokenizers
    assert any(ours.id_to_token(i).startswith("<0x") for i in ours.encode(EDGE_CASES[0]))
    assert mismatches(ours, hf, EDGE_CASES) == []
    for text in EDGE_CASES:
        assert ours.decode(ours.encode(text, parse_special=False)) == text


def test_parity_on_random_cjk_character_soup(cjk_tokenizers, cjk_pages):
    """Random strings of seen characters, unseen Han (BMP and extension B), kana, emoji and spaces."""
    ours, hf = cjk_tokenizers
    rng = random.Random(0)
    seen = sorted({ch for text in cjk_pages["train"] for ch in text if ord(ch) > 0x2E80})
    unseen = [chr(c) for c in range(0x9F90, 0x9FA5)] + [chr(c) for c in range(0x20000, 0x20010)]
    pool = seen + unseen + list("ぁァｱ　 、。🐍👍🏽\t") + ["\u200d", "\ufe0f"]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(2000)]
    assert mismatches(ours, hf, texts, backend=True) == []
