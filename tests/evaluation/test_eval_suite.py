"""The evaluation suite's config and its HumanEval / identity-probe steps on a tiny random Llama."""

from __future__ import annotations

import copy

import pytest
import yaml

from lmforge.evaluation.humaneval import HumanEvalConfig
from lmforge.evaluation.identity_probe import QUESTIONS
from lmforge.evaluation.suite import EvaluationConfig, _run_humaneval, _run_identity_probe


def test_config_from_the_project_parameters(project_root):
    params = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["evaluation"]
    config = EvaluationConfig.from_dict(params)
    assert isinstance(config.humaneval, HumanEvalConfig)
    assert config.humaneval.enabled and config.humaneval.n_problems == 20  # the small CPU default
    assert config.identity_probe["enabled"] is True
    bad = copy.deepcopy(params)
    bad["humaneval"]["n_problem"] = 3
    with pytest.raises(ValueError, match="evaluation.humaneval.n_problem"):
        EvaluationConfig.from_dict(bad)


def test_humaneval_step_fits_long_prompts_into_the_context(tiny_model, tiny_tokenizer):
    # HumanEval prompts are longer than the tiny model's 128-token context: they keep their last tokens.
    config = HumanEvalConfig(n_problems=2, samples=1, max_new_tokens=4, k=[1])
    metrics = _run_humaneval(tiny_model, tiny_tokenizer, config)
    assert metrics["problems"] == 2 and metrics["samples"] == 1
    assert metrics["pass_at_1"] == 0.0  # a random model does not solve HumanEval
    assert metrics["prompts_truncated"] == 2
    assert [p["task_id"] for p in metrics["per_problem"]] == ["HumanEval/0", "HumanEval/1"]


def test_identity_step_asks_every_question(tiny_model, tiny_tokenizer):
    metrics, answers = _run_identity_probe(tiny_model, tiny_tokenizer, {"name": "Forge", "developer": "lmforge"}, 2)
    assert len(answers) == len(QUESTIONS)
    assert metrics["tp"] + metrics["fp"] + metrics["fn"] + metrics["tn"] == len(QUESTIONS)
    assert 0.0 <= metrics["f1"] <= 1.0
