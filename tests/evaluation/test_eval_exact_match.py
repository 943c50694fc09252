"""Exact match and token F1 with the code-aware normalisation, on literal strings."""

from __future__ import annotations

import pytest

from lmforge.evaluation.exact_match import (
    code_tokens,
    evaluate_exact_match,
    exact_match,
    normalize_answer,
    score_answers,
    token_prf,
)


def test_normalisation_keeps_case_punctuation_and_nesting():
    fenced = "```python\n    if x:\n        return  a[0]   \n\n```"
    assert normalize_answer(fenced) == "if x:\n    return a[0]"
    assert exact_match(fenced, "if x:\n    return a[0]") == 1.0
    assert exact_match("return a[0]", "return a(0)") == 0.0        # SQuAD would strip the brackets
    assert exact_match("return Foo", "return foo") == 0.0           # ...and lower-case the name
    assert exact_match("x = a", "x = ") == 0.0                      # ...and drop the article-like "a"
    assert exact_match("if x:\n    y\n    z", "if x:\n    y\nz") == 0.0  # nesting is kept


def test_code_tokens_split_punctuation():
    assert code_tokens("a[0] += f(x_1)") == ["a", "[", "0", "]", "+", "=", "f", "(", "x_1", ")"]


def test_token_f1_counts_a_multiset_intersection():
    precision, recall, f1 = token_prf("return x + y", "return x + x")
    # pred: return x + y ; ref: return x + x -> common: return, x, + = 3 of 4 each
    assert precision == pytest.approx(0.75) and recall == pytest.approx(0.75) and f1 == pytest.approx(0.75)
    assert token_prf("return x", "return x + y") == pytest.approx((1.0, 0.5, 2 / 3))
    assert token_prf("", "") == (1.0, 1.0, 1.0)
    assert token_prf("", "x") == (0.0, 0.0, 0.0)
    assert token_prf("a", "b") == (0.0, 0.0, 0.0)


def test_scores_are_means_over_pairs():
    scores = score_answers(["return x", "pass"], ["return x", "return y"])
    assert scores["exact_match"] == 0.5
    assert scores["token_f1"] == pytest.approx((1.0 + 0.0) / 2)
    assert scores["scored"] == 2.0
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score_answers(["a", "b"], ["a"])


def test_evaluate_skips_unusable_pairs_and_counts_reconcile():
    def conv(i, *roles):
        return {"id": f"c{i}", "messages": [{"role": r, "content": f"{r} {i}" if r == "user" else "return x"}
                                            for r in roles]}

    conversations = [conv(0, "user", "assistant"), conv(1, "system", "user", "assistant"),
                     {"id": "long", "messages": [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": "x " * 50}]},
                     conv(3, "user", "assistant"), conv(4, "user", "assistant"), conv(5, "user", "assistant")]
    asked = []

    def answer(prompts):
        asked.extend(prompts)
        return ["return x", "return y", "return x"]

    metrics, records = evaluate_exact_match(answer, conversations, max_examples=3, count_tokens=lambda t: len(t.split()),
                                            max_reference_tokens=10, prompt_fits=lambda p: p != "user 3")
    assert asked == ["user 0", "user 4", "user 5"]
    assert metrics["scored"] == 3 and metrics["considered"] == 6
    assert metrics["skipped_not_single_turn"] == 1 and metrics["skipped_long_reference"] == 1
    assert metrics["skipped_long_prompt"] == 1
    assert metrics["considered"] == metrics["scored"] + metrics["skipped_not_single_turn"] + \
        metrics["skipped_long_reference"] + metrics["skipped_long_prompt"]
    assert metrics["exact_match"] == pytest.approx(2 / 3)
    assert [r["id"] for r in records] == ["c0", "c4", "c5"] and records[1]["exact_match"] == 0.0


def test_answer_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="1 answers for 2 prompts"):
        evaluate_exact_match(lambda p: ["x"], [{"messages": [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": "a"}]}] * 2,
                             max_examples=5)
