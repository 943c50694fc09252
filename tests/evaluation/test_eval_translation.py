"""Translation quality: held-out pairs by direction from the SFT contract, real sacrebleu chrF/BLEU with the
target's tokenizer, and greedy translations through the one generation path."""

from __future__ import annotations

import pytest

from lmforge.evaluation.translation import (
    bleu_tokenize,
    evaluate_translation,
    score_translations,
    translation_pairs,
)


def pair(src, tgt, source_text, reference, pair_id, system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": f"Translate into {tgt}:\n{source_text}"},
        {"role": "assistant", "content": reference}]
    return {"messages": messages, "source": "libreoffice-help", "category": "translation",
            "metadata": {"src_lang": src, "tgt_lang": tgt, "pair_id": pair_id}}


RECORDS = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "source": "chatterbot",
     "category": "dialogue", "metadata": {}},
    pair("en", "zh", "Click the Save button.", "单击保存按钮。", "p1"),
    pair("en", "ja", "Click the Save button.", "保存ボタンをクリックします。", "p1"),
    pair("zh", "en", "单击保存按钮。", "Click the Save button.", "p1", system="You translate."),
    pair("en", "zh", "Open the file.", "打开文件。", "p2"),
    pair("en", "zh", "Close the window.", "关闭窗口。", "p3"),
]


def test_pairs_come_from_translation_records_by_direction_capped():
    pairs = translation_pairs(RECORDS, max_per_direction=2)
    assert list(pairs) == ["en_ja", "en_zh", "zh_en"]
    assert [p.pair_id for p in pairs["en_zh"]] == ["p1", "p2"]  # the first two, in input order
    zh_en = pairs["zh_en"][0]
    assert zh_en.reference == "Click the Save button."
    assert [m["role"] for m in zh_en.prompt] == ["system", "user"]  # everything before the reference


def test_a_translation_record_breaking_the_contract_is_named():
    broken = pair("en", "zh", "x", "y", "p9")
    del broken["metadata"]["tgt_lang"]
    with pytest.raises(ValueError, match=r"record 1 \(pair_id 'p9'\): .*metadata.src_lang and metadata.tgt_lang"):
        translation_pairs([RECORDS[0], broken], max_per_direction=8)
    no_reference = pair("en", "zh", "x", "y", "p8")
    no_reference["messages"].pop()
    with pytest.raises(ValueError, match=r"record 0 \(pair_id 'p8'\): .*assistant's reference"):
        translation_pairs([no_reference], max_per_direction=8)


def test_a_closer_translation_scores_higher():
    reference = ["单击保存按钮以保存当前文档。", "打开文件菜单，然后选择打印。"]
    good = ["单击保存按钮以保存文档。", "打开文件菜单，然后选择打印。"]
    poor = ["保存。", "选择菜单。"]
    wrong = ["天气很好。", "我喜欢猫。"]
    scores = [score_translations(h, reference, "zh") for h in (reference, good, poor, wrong)]
    assert scores[0]["chrf"] == pytest.approx(100.0) and scores[0]["bleu"] == pytest.approx(100.0)
    assert scores[0]["chrf"] > scores[1]["chrf"] > scores[2]["chrf"] > scores[3]["chrf"]
    assert scores[0]["bleu"] > scores[1]["bleu"] > scores[2]["bleu"] >= scores[3]["bleu"]
    en = score_translations(["Click the button to save the document."], ["Click the Save button to save the document."],
                            "en")
    assert 0 < en["bleu"] < 100 and 0 < en["chrf"] < 100 and en["pairs"] == 1.0


def test_chinese_bleu_needs_the_chinese_tokenizer():
    """Chinese has no spaces: with whitespace tokenization a sentence is one word, so a near-perfect translation
    scores BLEU 0 exactly as a wrong one; tokenize="zh" (one token per character) tells them apart."""
    from sacrebleu.metrics import BLEU, CHRF

    reference, near, wrong = ["单击保存按钮以保存当前文档。"], ["单击保存按钮以保存文档。"], ["天气很好。"]
    assert bleu_tokenize("zh") == "zh" and bleu_tokenize("en") == "13a" and bleu_tokenize("ja") == "char"
    naive = BLEU(tokenize="none")
    assert naive.corpus_score(near, [reference]).score == naive.corpus_score(wrong, [reference]).score == 0.0
    ours = score_translations(near, reference, "zh")
    assert ours["bleu"] > 30 > score_translations(wrong, reference, "zh")["bleu"]
    # chrF works on character n-grams: no segmentation needed, it separates them as well
    assert ours["chrf"] == pytest.approx(CHRF().corpus_score(near, [reference]).score)
    assert ours["chrf"] > 50 > score_translations(wrong, reference, "zh")["chrf"]
    # Japanese in characters: a near translation beats a wrong one, where whitespace BLEU cannot tell
    ja_ref, ja_near = ["保存ボタンをクリックします。"], ["保存ボタンを押します。"]
    assert naive.corpus_score(ja_near, [ja_ref]).score == 0.0
    assert score_translations(ja_near, ja_ref, "ja")["bleu"] > 20


def test_evaluate_translation_scores_each_direction_and_keeps_the_records():
    references = {p["messages"][-2]["content"]: p["messages"][-1]["content"] for p in RECORDS[1:]}

    def perfect(prompts):
        return [references[p[-1]["content"]] for p in prompts]

    metrics, records = evaluate_translation(perfect, RECORDS, max_per_direction=8,
                                            prompt_fits=lambda p: "Close" not in p[-1]["content"])
    assert metrics["pairs"] == 4 and metrics["skipped_long_prompt"] == 1
    assert metrics["en_zh"] == {"chrf": pytest.approx(100), "bleu": pytest.approx(100), "pairs": 2.0}
    assert set(metrics) == {"pairs", "skipped_long_prompt", "en_ja", "en_zh", "zh_en"}
    assert [(r["direction"], r["pair_id"]) for r in records] == [("en_ja", "p1"), ("en_zh", "p1"), ("en_zh", "p2"),
                                                                 ("zh_en", "p1")]
    assert all(r["hypothesis"] == r["reference"] and r["chrf"] == pytest.approx(100) for r in records)
    silent, _ = evaluate_translation(lambda prompts: [""] * len(prompts), RECORDS, max_per_direction=8)
    assert silent["en_zh"]["chrf"] == silent["en_zh"]["bleu"] == 0.0
    none, records = evaluate_translation(perfect, RECORDS[:1], max_per_direction=8)
    assert none == {"pairs": 0.0, "skipped_long_prompt": 0.0} and records == []


def test_translation_step_generates_through_the_chat_template(tiny_model, tiny_tokenizer):
    from lmforge.evaluation.config import TranslationConfig
    from lmforge.evaluation.suite import _run_translation
    from lmforge.generation import generate

    settings = TranslationConfig(max_pairs_per_direction=1, max_new_tokens=6, batch_size=1)
    metrics, records = _run_translation(tiny_model, tiny_tokenizer, RECORDS, settings)
    assert metrics["pairs"] == 3 and set(metrics) >= {"en_zh", "en_ja", "zh_en"}
    expected = generate(tiny_model, tiny_tokenizer, [RECORDS[1]["messages"][:-1]], max_new_tokens=6, chat=True)
    assert records[1]["direction"] == "en_zh" and records[1]["hypothesis"] == expected[0].text  # the one generation path
    assert all(0.0 <= metrics[d]["chrf"] <= 100.0 for d in ("en_zh", "en_ja", "zh_en"))
