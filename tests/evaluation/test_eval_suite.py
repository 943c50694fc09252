"""The evaluation suite's config and its HumanEval / identity-probe steps on a tiny random Llama."""

from __future__ import annotations

import copy

import pytest
import yaml

from lmforge.evaluation.config import HeldoutPairsConfig, SpeedConfig
from lmforge.evaluation.humaneval import HumanEvalConfig
from lmforge.evaluation.identity_probe import QUESTIONS
from lmforge.evaluation.suite import (
    EvaluationConfig,
    _loss_delta_noise,
    _per_item_nats,
    _run_heldout_pairs,
    _run_humaneval,
    _run_identity_probe,
    _run_speed,
)


def test_config_from_the_project_parameters(project_root):
    params = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["evaluation"]
    config = EvaluationConfig.from_dict(params)
    assert isinstance(config.humaneval, HumanEvalConfig)
    assert config.humaneval.enabled and config.humaneval.n_problems == 20  # the small CPU default
    assert config.identity_probe.enabled is True
    assert config.heldout_pairs.enabled is True and config.heldout_pairs.max_examples <= 50  # keeps the stage short
    assert config.operations.experiment == yaml.safe_load(
        (project_root / "conf/base/mlflow.yml").read_text())["tracking"]["experiment"]["name"]
    bad = copy.deepcopy(params)
    bad["humaneval"]["n_problem"] = 3
    with pytest.raises(ValueError, match="evaluation.humaneval.n_problem"):
        EvaluationConfig.from_dict(bad)


def test_yaml_and_dataclass_defaults_agree(project_root):
    from lmforge.config import default_mismatches

    params = yaml.safe_load((project_root / "conf/base/parameters_evaluation.yml").read_text())["evaluation"]
    assert default_mismatches(EvaluationConfig, params, path="evaluation") == []


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


def test_heldout_pairs_step_scores_greedy_answers(tiny_model, tiny_tokenizer):
    pairs = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Complete def f{i}(x):"},
                                          {"role": "assistant", "content": "return x"}]} for i in range(3)]
    pairs.insert(1, {"id": "long", "messages": [{"role": "user", "content": "q"},
                                                {"role": "assistant", "content": "return x + 1 " * 20}]})
    metrics, records = _run_heldout_pairs(tiny_model, tiny_tokenizer, pairs,
                                          HeldoutPairsConfig(max_examples=2, max_new_tokens=10))
    assert metrics["scored"] == 2 and metrics["skipped_long_reference"] == 1 and metrics["considered"] == 3
    assert [r["id"] for r in records] == ["p0", "p1"]
    assert 0.0 <= metrics["token_f1"] <= 1.0 and metrics["exact_match"] == 0.0  # a random model
    assert all(isinstance(r["prediction"], str) for r in records)


def test_speed_step_times_held_out_prompts(tiny_model, tiny_tokenizer):
    pairs = [{"messages": [{"role": "user", "content": f"def f{i}(x):"}, {"role": "assistant", "content": "pass"}]}
             for i in range(5)]
    metrics = _run_speed(tiny_model, tiny_tokenizer, pairs,
                         SpeedConfig(prompts=3, max_new_tokens=4, batch_size=2, rounds=1))
    assert metrics["requests_per_s"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["latency_ms_p95"] >= metrics["latency_ms_p50"] > 0
    assert metrics["outputs_equal"] == 1.0  # greedy: our loop and transformers agree
    assert _run_speed(tiny_model, tiny_tokenizer, [{"messages": []}], SpeedConfig(prompts=3, rounds=1)) == {}


def test_per_item_losses_add_up_to_the_batched_metric_and_give_the_noise(tiny_model):
    """Scored one by one, the blocks and conversations give the batched totals back; the paired noise of a
    model against itself is 0, against another model positive."""
    import math

    import torch

    from lmforge.evaluation.perplexity import evaluate_lm_perplexity, evaluate_masked_perplexity

    rng = torch.Generator().manual_seed(0)
    blocks = torch.randint(5, 100, (6, 16), generator=rng).tolist()
    examples = [(ids, [-100] * 4 + ids[4:]) for ids in torch.randint(5, 100, (5, 12), generator=rng).tolist()]
    items = _per_item_nats(tiny_model, blocks, examples, pad_id=0)
    batched = evaluate_lm_perplexity(tiny_model, blocks, batch_size=4)
    assert sum(t for _, t in items["heldout"]) == batched["tokens"]
    assert math.isclose(sum(n for n, _ in items["heldout"]) / batched["tokens"], batched["loss"], rel_tol=1e-5)
    masked = evaluate_masked_perplexity(tiny_model, examples, batch_size=4, pad_id=0)
    assert math.isclose(sum(n for n, _ in items["sft_pairs"]) / masked["tokens"], masked["loss"], rel_tol=1e-5)

    assert _loss_delta_noise(items, items) == {"heldout.loss_delta_se": 0.0, "sft_pairs.loss_delta_se": 0.0}
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=rng) * 0.05)
    noise = _loss_delta_noise(items, _per_item_nats(other, blocks, examples, pad_id=0))
    assert noise["heldout.loss_delta_se"] > 0 and noise["sft_pairs.loss_delta_se"] > 0
