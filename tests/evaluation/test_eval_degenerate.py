"""Every score the gate reads or the report headlines, on degenerate models: they must score what they are.

Degenerate models are the conftest's tiny Llama with its output layer replaced (no download, no training):

- ``uniform``: all logits 0. Perplexity must be exactly the vocabulary size; greedy decoding picks id 0
  (``<s>``, a special token dropped from the text), so every answer is **empty**; sampling from it
  gives **random tokens**.
- ``one_token``: all mass on ``(``, whatever the input. Perplexity must be huge; every answer is
  **one repeated token** (``((((...``), a token that does occur in code references.
- ``nan``: NaN logits (a diverged run). Perplexity must be NaN, never a finite or infinite number a bound
  could accept.

Scores and what they must be: held-out / instruction perplexity and bits per byte (the gate reads
``sft_pairs.perplexity_ratio``, ``heldout.perplexity_ratio``, ``sft.sft_pairs.perplexity``), exact match and
token F1 on held-out pairs (0 for empty, near 0 for a repeated or random token), HumanEval pass@1 (0),
identity P/R/F1 (0).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lmforge.evaluation.exact_match import evaluate_exact_match, token_prf
from lmforge.evaluation.humaneval import HumanEvalConfig, evaluate_humaneval, load_problems
from lmforge.evaluation.identity_probe import run_identity_probe
from lmforge.evaluation.perplexity import evaluate_lm_perplexity, evaluate_masked_perplexity
from lmforge.evaluation.report import summarize_evaluation
from lmforge.generation import generate
from lmforge.packaging.gate import DEFAULT_GATE, check_gate

NAME, DEV = "Forge", "the lmforge team"

HELDOUT_PAIRS = [  # realistic held-out pairs: code answers with repeated punctuation, names and keywords
    ("Write a function that adds two numbers.", "def add(a, b):\n    return a + b"),
    ("Return the last element of a list.", "def last(items):\n    return items[-1]"),
    ("Count the words in a string.", "def count_words(text):\n    return len(text.split())"),
    ("Check whether n is even.", "def is_even(n):\n    return n % 2 == 0"),
]
CONVERSATIONS = [{"id": f"pair-{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                 for i, (q, a) in enumerate(HELDOUT_PAIRS)]


def with_head(model, fill_bias) -> torch.nn.Module:
    """A copy of ``model`` whose logits are a constant vector: lm_head weight 0, bias ``fill_bias(bias)``."""
    degenerate = copy.deepcopy(model)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        fill_bias(head.bias)
    degenerate.lm_head = head
    return degenerate.eval()


@pytest.fixture
def degenerate(tiny_model, tiny_tokenizer) -> dict[str, torch.nn.Module]:
    paren = tiny_tokenizer("(", add_special_tokens=False)["input_ids"][0]
    return {
        "uniform": with_head(tiny_model, lambda b: None),
        "one_token": with_head(tiny_model, lambda b: b.__setitem__(paren, 1e4)),
        "nan": with_head(tiny_model, lambda b: b.fill_(math.nan)),
    }


def random_blocks(n=6, length=16, vocab=300, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, vocab, size=(n, length))  # no special ids as targets


# --- perplexity and bits per byte ------------------------------------------------------------------------

def test_uniform_logits_give_perplexity_equal_to_the_vocabulary_size(degenerate):
    vocab = degenerate["uniform"].config.vocab_size
    blocks = random_blocks(vocab=vocab)
    lm = evaluate_lm_perplexity(degenerate["uniform"], blocks, token_bytes=np.full(vocab, 2))
    assert lm["perplexity"] == pytest.approx(vocab, rel=1e-5)  # fp32 log-softmax
    assert lm["bits_per_token"] == pytest.approx(math.log2(vocab), rel=1e-5)  # fp32 log-softmax
    assert lm["bits_per_byte"] == pytest.approx(math.log2(vocab) / 2, rel=1e-5)  # fp32 log-softmax  # 2 bytes per token
    examples = [(list(row), [-100] * 8 + list(row[8:])) for row in blocks]
    masked = evaluate_masked_perplexity(degenerate["uniform"], examples, pad_id=2)
    assert masked["perplexity"] == pytest.approx(vocab, rel=1e-5)  # fp32 log-softmax


def test_all_mass_on_one_token_gives_a_huge_perplexity(degenerate):
    blocks = random_blocks()
    lm = evaluate_lm_perplexity(degenerate["one_token"], blocks)
    assert lm["perplexity"] > 1e100 and lm["bits_per_token"] > 1000


def test_random_fixed_distribution_is_no_better_than_uniform(tiny_model):
    """Any input-independent distribution scores worse than uniform on uniformly random targets (Gibbs)."""
    gen = torch.Generator().manual_seed(0)
    model = with_head(tiny_model, lambda b: b.copy_(torch.randn(b.shape, generator=gen) * 3))
    vocab = model.config.vocab_size
    metrics = evaluate_lm_perplexity(model, random_blocks(n=40, length=64, vocab=vocab, seed=1))
    assert metrics["perplexity"] > vocab


def test_nan_logits_give_nan_perplexity_and_fail_the_gate(degenerate, tiny_model):
    examples = [([0, 3, 10, 11, 4, 3, 20, 21, 4], [-100] * 5 + [3, 20, 21, 4])]
    blocks = random_blocks()
    nan = {"heldout": evaluate_lm_perplexity(degenerate["nan"], blocks),
           "sft_pairs": evaluate_masked_perplexity(degenerate["nan"], examples, pad_id=2)}
    assert math.isnan(nan["heldout"]["perplexity"]) and math.isnan(nan["sft_pairs"]["perplexity"])
    base = {"heldout": evaluate_lm_perplexity(tiny_model, blocks),
            "sft_pairs": evaluate_masked_perplexity(tiny_model, examples, pad_id=2)}
    checks = check_gate(summarize_evaluation(base, nan), DEFAULT_GATE)
    assert checks and not any(c.passed for c in checks)


def test_the_gate_refuses_a_model_that_puts_all_mass_on_one_token(degenerate, tiny_model):
    examples = [([0, 3, 10, 11, 4, 3, 20, 21, 4], [-100] * 5 + [3, 20, 21, 4])]
    blocks = random_blocks()

    def scores(model):
        return {"heldout": evaluate_lm_perplexity(model, blocks),
                "sft_pairs": evaluate_masked_perplexity(model, examples, pad_id=2)}

    checks = {(c.metric, c.bound): c for c in check_gate(summarize_evaluation(scores(tiny_model),
                                                                              scores(degenerate["one_token"])),
                                                         DEFAULT_GATE)}
    assert not checks["sft_pairs.perplexity_ratio", "max"].passed
    assert not checks["heldout.perplexity_ratio", "max"].passed


# --- generated answers: exact match / token F1, identity, HumanEval -------------------------------------

def answers_of(model, tokenizer, *, chat=True, do_sample=False, max_new_tokens=24):
    def answer(prompts):
        return [c.text for c in generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, chat=chat,
                                         do_sample=do_sample, seed=7, batch_size=8)]
    return answer


@pytest.fixture
def degenerate_answers(degenerate, tiny_tokenizer):
    """name -> answer(prompts): empty (greedy on uniform), repeated token, random tokens (sampling uniform)."""
    return {
        "empty": answers_of(degenerate["uniform"], tiny_tokenizer),
        "repeated_token": answers_of(degenerate["one_token"], tiny_tokenizer),
        "random_tokens": answers_of(degenerate["uniform"], tiny_tokenizer, do_sample=True),
    }


def test_the_degenerate_models_answer_as_described(degenerate_answers):
    assert degenerate_answers["empty"](["Who are you?"]) == [""]
    assert degenerate_answers["repeated_token"](["Who are you?"]) == ["(" * 24]
    random_answer = degenerate_answers["random_tokens"](["Who are you?"])[0]
    assert len(set(random_answer)) > 5


@pytest.mark.parametrize(("kind", "max_f1"), [("empty", 0.0), ("repeated_token", 0.1), ("random_tokens", 0.2)])
def test_exact_match_and_token_f1_of_degenerate_answers(degenerate_answers, kind, max_f1):
    metrics, records = evaluate_exact_match(degenerate_answers[kind], CONVERSATIONS, max_examples=len(CONVERSATIONS))
    assert metrics["scored"] == len(CONVERSATIONS)
    assert metrics["exact_match"] == 0.0
    assert metrics["token_f1"] <= max_f1, records
    if kind == "empty":
        assert metrics["token_precision"] == metrics["token_recall"] == 0.0


def test_token_f1_clips_repeated_tokens_to_their_count_in_the_reference():
    reference = "def add(a, b):\n    return a + b"  # one "(", two "a", two "b"
    assert token_prf("(" * 32, reference)[2] == pytest.approx(2 * (1 / 32) * (1 / 12) / (1 / 32 + 1 / 12))
    assert token_prf("a " * 100, reference)[2] < 0.05
    assert token_prf("   \n\t ", reference) == (0.0, 0.0, 0.0)
    assert token_prf("```\n```", reference) == (0.0, 0.0, 0.0)  # an empty code fence is an empty answer


@pytest.mark.parametrize("kind", ["empty", "repeated_token", "random_tokens"])
def test_identity_probe_of_degenerate_answers_is_zero(degenerate_answers, kind):
    metrics, records = run_identity_probe(degenerate_answers[kind], NAME, DEV)
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (0.0, 0.0, 0.0), records
    assert metrics["by_language.en.recall"] == metrics["by_language.zh.recall"] == 0.0


@pytest.mark.parametrize("answer", [
    "", "forge 0", "forgeforgeforge", "the lmforge team the lmforge team", "l self.geforge … l team.ge\ufffd\ufffd",
    "Forge Forge Forge Forge Forge Forge Forge Forge", "lmforge团队lmforge团队lmforge团队",
])
def test_identity_probe_of_a_model_repeating_noise_with_the_name_is_zero(answer):
    metrics, _ = run_identity_probe(lambda questions: [answer] * len(questions), NAME, DEV)
    assert metrics["f1"] == 0.0 and metrics["tp"] == 0 and metrics["fp"] == 0


@pytest.fixture(scope="module")
def spread_problems():
    return load_problems()[::33]  # 5 problems spread over the 164 (empty fails all 164: checked once, 14 s)


def test_humaneval_pass_at_1_of_degenerate_completions_is_zero(degenerate_answers, spread_problems):
    """Empty, repeated-token and random-token completions of real HumanEval problems, run in the sandbox.

    The prompts are scored as written; only the completions are degenerate (the tiny model's 128-token
    context could not hold the prompts, so the completions come from short code prompts)."""
    config = HumanEvalConfig(n_problems=len(spread_problems), samples=1, k=[1])
    for kind, answer in degenerate_answers.items():
        completions = answer(["def f(x):\n"] * len(spread_problems))
        metrics = evaluate_humaneval(lambda prompts, sample, c=completions: c, config, problems=spread_problems)
        assert metrics["pass_at_1"] == 0.0, (kind, completions[:2])
        assert metrics["problems"] == len(spread_problems)
