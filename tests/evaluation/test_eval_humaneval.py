"""HumanEval scoring: the estimator by hand, program building, and the real problems through the sandbox."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from lmforge.evaluation.humaneval import (
    HumanEvalConfig,
    build_program,
    evaluate_humaneval,
    load_problems,
    pass_at_k,
    score_completions,
    truncate_completion,
)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 2 / 5),                              # pass@1 = c / n
    (5, 2, 2, 1 - math.comb(3, 2) / math.comb(5, 2)),  # 1 - 3/10 = 0.7
    (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),  # 1 - 21/252
    (10, 0, 5, 0.0),
    (4, 4, 2, 1.0),
    (10, 8, 3, 1.0),                               # n - c < k: every k-subset holds a correct sample
    (200, 13, 10, 1 - math.comb(187, 10) / math.comb(200, 10)),
])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, 2, 6), (5, -1, 1), (5, 2, 0)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_problems_are_the_164_shipped_ones_in_order(problems):
    assert len(problems) == 164
    assert [p["task_id"] for p in problems[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert problems[-1]["task_id"] == "HumanEval/163"
    assert len(load_problems(n_problems=7)) == 7


def test_bad_problem_file_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"task_id": "X/0", "prompt": "", "test": "", "entry_point": "f"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl.gz:2"):
        load_problems(path)


def test_truncate_completion_stops_at_top_level_code():
    body = "    return a + b\n"
    assert truncate_completion(body + "\ndef other():\n    pass\n") == body
    assert truncate_completion(body + "\nprint(add(1, 2))\n") == body
    assert truncate_completion(body + "\nif __name__ == '__main__':\n    main()") == body
    assert truncate_completion(body) == body
    assert truncate_completion("    x = 1  # not top level\n    return x\n") == "    x = 1  # not top level\n    return x\n"


def test_build_program_calls_check_on_the_entry_point(problems):
    program = build_program(problems[0], "    pass\n")
    assert program.startswith(problems[0]["prompt"] + "    pass\n")
    assert program.rstrip().endswith("check(has_close_elements)")


def test_canonical_passes_and_empty_body_fails_on_every_sampled_problem(problems):
    sample = problems[::16]  # 11 problems spread over the set; all 164 canonical ones: the test below
    completions = [[p["canonical_solution"], "    pass\n"] for p in sample]  # n = 2 samples, one correct
    metrics = score_completions(sample, completions, k=[1, 2])
    assert metrics["problems"] == len(sample) and metrics["samples"] == 2
    assert [p["passed"] for p in metrics["per_problem"]] == [1] * len(sample)  # canonical yes, empty no
    assert metrics["pass_at_1"] == pytest.approx(0.5)
    assert metrics["pass_at_2"] == pytest.approx(1.0)
    assert metrics["timeouts"] == 0


def test_greedy_canonical_and_empty_through_evaluate_humaneval(problems):
    sample = problems[:6]
    by_prompt = {p["prompt"]: p["canonical_solution"] for p in sample}
    config = HumanEvalConfig(n_problems=6, samples=1, k=[1, 10])
    canonical = evaluate_humaneval(lambda prompts, s: [by_prompt[p] + "\nprint('extra')\n" for p in prompts],
                                   config, problems=sample)
    empty = evaluate_humaneval(lambda prompts, s: ["" for _ in prompts], config, problems=sample)
    assert canonical["pass_at_1"] == 1.0 and "pass_at_10" not in canonical
    assert empty["pass_at_1"] == 0.0


def test_config_rejects_greedy_with_many_samples():
    with pytest.raises(ValueError, match="temperature"):
        HumanEvalConfig(samples=5, temperature=0.0)
    with pytest.raises(ValueError, match="n_problems"):
        HumanEvalConfig(n_problems=0)


def test_all_canonical_solutions_pass(problems):
    # The acceptance check, on all 164 problems: ~25 s on 2 busy cores (one sandboxed interpreter each,
    # 2 at a time), under the ~60 s budget for an unmarked test; bench/humaneval_sandbox.py times it.
    metrics = score_completions(problems, [[p["canonical_solution"]] for p in problems], k=[1])
    failed = [p["task_id"] for p in metrics["per_problem"] if p["passed"] == 0]
    assert failed == []
    assert metrics["pass_at_1"] == 1.0
