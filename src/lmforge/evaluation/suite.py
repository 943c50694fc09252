"""Evaluate the base (pretrained) and SFT models side by side on the same held-out data.

Held-out perplexity and bits per byte on the validation token shards, assistant-token perplexity
and bits per byte on held-out instruction conversations (rendered with the tokenizer's one chat
template), HumanEval pass@k (completions run in the sandbox), the identity probe (P/R/F1), exact
match and token F1 of greedy answers to held-out instruction pairs (``exact_match``) and a handful
of greedy generations. Metric names come from ``lmforge.evaluation.report`` and are stable:
``<model>.heldout.bits_per_byte``, ``<model>.humaneval.pass_at_1``, ``<model>.identity.f1``,
``<model>.heldout_pairs.exact_match``, ``<model>.heldout_pairs.token_f1``...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmforge.evaluation.humaneval import HumanEvalConfig

logger = logging.getLogger(__name__)


@dataclass
class EvaluationConfig:
    """What the evaluation stage measures."""

    # Batch size for scoring.
    batch_size: int = 8
    # Validation token blocks scored per model.
    max_heldout_blocks: int = 64
    # Held-out instruction conversations scored per model.
    max_sft_examples: int = 200
    # Longer held-out conversations are skipped (the models' context is finite).
    max_example_tokens: int = 512
    # Greedy generation settings: {"max_new_tokens": int, "prompts": [str, ...]}.
    generation: dict[str, Any] = field(default_factory=lambda: {"max_new_tokens": 48, "prompts": []})
    # HumanEval pass@k in the sandbox (lmforge.evaluation.humaneval).
    humaneval: HumanEvalConfig = field(default_factory=HumanEvalConfig)
    # Identity probe (lmforge.evaluation.identity_probe): {"enabled": bool, "max_new_tokens": int}.
    identity_probe: dict[str, Any] = field(default_factory=lambda: {"enabled": True, "max_new_tokens": 32})
    # Exact match / token F1 on held-out instruction pairs (lmforge.evaluation.exact_match), greedy:
    # {"enabled": bool, "max_examples": int, "max_new_tokens": int}. Only pairs whose reference fits in
    # max_new_tokens - 1 tokens are scored (a cut-off answer could never match exactly).
    heldout_pairs: dict[str, Any] = field(default_factory=lambda: {"enabled": True, "max_examples": 10,
                                                                   "max_new_tokens": 32})
    # Generation speed of the SFT model on held-out prompts (lmforge.evaluation.speed: our batched KV-cache loop
    # vs transformers generate): {"enabled": bool, "prompts": int, "max_new_tokens": int, "batch_size": int,
    # "rounds": int}.
    speed: dict[str, Any] = field(default_factory=lambda: {"enabled": True, "prompts": 8, "max_new_tokens": 16,
                                                           "batch_size": 8, "rounds": 5})
    # Operations metrics read back from the chain's MLflow runs (lmforge.evaluation.operations):
    # {"enabled": bool, "experiment": str}.
    operations: dict[str, Any] = field(default_factory=lambda: {"enabled": True, "experiment": "lmforge"})
    # Files of the serving stage shown in the report when present:
    # {"serving_load": path, "serving_feedback": path}.
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvaluationConfig:
        from lmforge.config import build_dataclass

        return build_dataclass(cls, d, path="evaluation")


def evaluate_models(models: Mapping[str, str], tokenizer_dir: str, token_shards: str,
                    conversations: Sequence[Mapping[str, Any]], config: EvaluationConfig,
                    identity: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """Score each ``{name: model_dir}``; returns (flat metrics, generations per model).

    ``identity`` is ``{"name", "developer"}`` the SFT data taught (``sft.identity``); the probe is
    skipped without it. The generations output also holds, per model, the identity answers and the
    HumanEval per-problem results (``<model>.identity_probe``, ``<model>.humaneval``).
    """
    from lmforge.evaluation.generation import generate_samples, load_model_and_tokenizer
    from lmforge.evaluation.perplexity import evaluate_lm_perplexity, evaluate_masked_perplexity, token_byte_lengths
    from lmforge.evaluation.report import summarize_evaluation
    from lmforge.tokenizer.artifact import load_tokenizer
    from lmforge.tokenizer.shards import TokenShards
    from lmforge.training.sft_data import build_sft_examples

    tok, template = load_tokenizer(tokenizer_dir)
    shards = TokenShards.open(token_shards, expected_tokenizer_sha256=tok.sha256)
    n_blocks = min(shards.n_blocks("validation"), config.max_heldout_blocks)
    blocks = [shards.block("validation", i) for i in range(n_blocks)]
    sft_examples, _ = build_sft_examples(conversations[: config.max_sft_examples], tok, template,
                                         max_length=config.max_example_tokens)
    examples = [(e["input_ids"], e["labels"]) for e in sft_examples]
    if not blocks or not examples:
        raise ValueError(f"nothing to evaluate: {len(blocks)} held-out blocks, {len(examples)} held-out conversations")
    token_bytes = token_byte_lengths(tok)
    gen = config.generation
    results: dict[str, dict] = {}
    generations: dict[str, Any] = {}
    for name, model_dir in models.items():
        model, hf_tokenizer = load_model_and_tokenizer(model_dir, tokenizer_dir)
        results[name] = {
            "heldout": evaluate_lm_perplexity(model, blocks, batch_size=config.batch_size, token_bytes=token_bytes),
            "sft_pairs": evaluate_masked_perplexity(model, examples, batch_size=config.batch_size, pad_id=tok.pad_id,
                                                    token_bytes=token_bytes),
        }
        generations[name] = generate_samples(model, hf_tokenizer, gen.get("prompts", []),
                                             max_new_tokens=int(gen.get("max_new_tokens", 48)))
        if config.humaneval.enabled:
            humaneval = _run_humaneval(model, hf_tokenizer, config.humaneval)
            generations[f"{name}.humaneval"] = humaneval.pop("per_problem")
            results[name]["humaneval"] = {k: v for k, v in humaneval.items() if k != "isolation"}
        probe = config.identity_probe
        if probe.get("enabled", True) and identity is not None:
            metrics, answers = _run_identity_probe(model, hf_tokenizer, identity, int(probe.get("max_new_tokens", 32)))
            results[name]["identity"] = metrics
            generations[f"{name}.identity_probe"] = answers
        pairs = config.heldout_pairs
        if pairs.get("enabled", True):
            metrics, records = _run_heldout_pairs(model, hf_tokenizer, conversations, pairs)
            results[name]["heldout_pairs"] = metrics
            generations[f"{name}.heldout_pairs"] = records
        if name == "sft" and config.speed.get("enabled", True):
            results[name]["speed"] = _run_speed(model, hf_tokenizer, conversations, config.speed)
        logger.info("%s: held-out ppl %.2f, instruction ppl %.2f", name, results[name]["heldout"]["perplexity"],
                    results[name]["sft_pairs"]["perplexity"])
        del model
    metrics = summarize_evaluation(results["base"], results["sft"])
    metrics["heldout_blocks"] = float(n_blocks)
    metrics["sft_examples"] = float(len(examples))
    return metrics, generations


def _run_humaneval(model: Any, hf_tokenizer: Any, config: HumanEvalConfig) -> dict[str, Any]:
    """HumanEval completions from raw code prompts (no chat template), scored in the sandbox."""
    from lmforge.evaluation.generation import generate_samples
    from lmforge.evaluation.humaneval import evaluate_humaneval

    context = getattr(model.config, "max_position_embeddings", None)
    truncated: set[int] = set()

    def fit(i: int, prompt: str) -> str:
        """Keep the prompt's last tokens when prompt + completion would overflow the model's context."""
        if not context:
            return prompt
        ids = hf_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = max(1, context - config.max_new_tokens - 1)  # -1: the BOS the tokenizer adds
        if len(ids) <= room:
            return prompt
        truncated.add(i)
        return hf_tokenizer.decode(ids[-room:])

    def generate(prompts: list[str], sample: int) -> list[str]:
        fitted = [fit(i, p) for i, p in enumerate(prompts)]
        samples = generate_samples(model, hf_tokenizer, fitted, max_new_tokens=config.max_new_tokens, chat=False,
                                   do_sample=config.temperature > 0, temperature=config.temperature or 1.0,
                                   seed=sample * 100_003)
        return [s["completion"] for s in samples]

    metrics = evaluate_humaneval(generate, config)
    metrics["prompts_truncated"] = len(truncated)
    if truncated:
        logger.warning("HumanEval: %d prompts kept only their last tokens to fit the %d-token context",
                       len(truncated), context)
    return metrics


def _run_identity_probe(model: Any, hf_tokenizer: Any, identity: Mapping[str, Any],
                        max_new_tokens: int) -> tuple[dict[str, float], list[dict]]:
    """Ask the probe questions through the chat template (greedy) and score the answers."""
    from lmforge.evaluation.generation import generate_samples
    from lmforge.evaluation.identity_probe import run_identity_probe

    def answer(questions: list[str]) -> list[str]:
        samples = generate_samples(model, hf_tokenizer, questions, max_new_tokens=max_new_tokens, chat=True)
        return [s["completion"] for s in samples]

    return run_identity_probe(answer, str(identity["name"]), str(identity["developer"]))


def _run_heldout_pairs(model: Any, hf_tokenizer: Any, conversations: Sequence[Mapping[str, Any]],
                       settings: Mapping[str, Any]) -> tuple[dict[str, float], list[dict]]:
    """Greedy answers to held-out single-turn pairs (chat template), scored by EM and token F1."""
    from lmforge.evaluation.exact_match import evaluate_exact_match
    from lmforge.evaluation.generation import encode_prompt, generate_samples

    max_new_tokens = int(settings.get("max_new_tokens", 32))
    context = getattr(model.config, "max_position_embeddings", None)

    def count_tokens(text: str) -> int:
        return len(hf_tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_fits(prompt: str) -> bool:
        return not context or len(encode_prompt(hf_tokenizer, prompt, chat=True)) + max_new_tokens <= context

    def answer(prompts: list[str]) -> list[str]:
        samples = generate_samples(model, hf_tokenizer, prompts, max_new_tokens=max_new_tokens, chat=True)
        return [s["completion"] for s in samples]

    return evaluate_exact_match(answer, conversations, max_examples=int(settings.get("max_examples", 10)),
                                count_tokens=count_tokens, max_reference_tokens=max_new_tokens - 1,
                                prompt_fits=prompt_fits)


def _run_speed(model: Any, hf_tokenizer: Any, conversations: Sequence[Mapping[str, Any]],
               settings: Mapping[str, Any]) -> dict[str, float]:
    """requests/s, tokens/s, response time p50/p95 and peak memory of batched greedy generation.

    Prompts: the user turns of the first ``prompts`` single-turn held-out pairs that fit the context
    with ``max_new_tokens``. Keys as ``lmforge.evaluation.speed.speed_metrics`` (ours, then ``transformers.*``).
    """
    from lmforge.evaluation.exact_match import split_single_turn
    from lmforge.evaluation.generation import encode_prompt
    from lmforge.evaluation.speed import compare_generation_speed, speed_metrics

    max_new_tokens = int(settings.get("max_new_tokens", 16))
    context = getattr(model.config, "max_position_embeddings", None) or 10**9
    prompts = []
    for conv in conversations:
        pair = split_single_turn(conv)
        if pair and len(encode_prompt(hf_tokenizer, pair[0], chat=True)) + max_new_tokens <= context:
            prompts.append(pair[0])
        if len(prompts) >= int(settings.get("prompts", 8)):
            break
    if not prompts:
        logger.warning("generation speed: no held-out prompt fits the %s-token context", context)
        return {}
    comparison = compare_generation_speed(model, hf_tokenizer, prompts, max_new_tokens=max_new_tokens,
                                          batch_size=int(settings.get("batch_size", 8)),
                                          rounds=int(settings.get("rounds", 1)))
    return {key.split(".", 1)[1]: value for key, value in speed_metrics(comparison).items()}
