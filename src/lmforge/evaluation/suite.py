"""Evaluate the base (pretrained) and SFT models side by side on the same held-out data.

Held-out perplexity on the validation token shards, assistant-token perplexity on held-out
instruction conversations (rendered with the tokenizer's one chat template), and a handful of
greedy generations. Metric names come from ``lmforge.evaluation.report`` and are stable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvaluationConfig:
        from lmforge.config import build_dataclass

        return build_dataclass(cls, d, path="evaluation")


def evaluate_models(models: Mapping[str, str], tokenizer_dir: str, token_shards: str,
                    conversations: Sequence[Mapping[str, Any]], config: EvaluationConfig) -> tuple[dict, dict]:
    """Score each ``{name: model_dir}``; returns (flat metrics, generations per model)."""
    from lmforge.evaluation.generation import generate_samples, load_model_and_tokenizer
    from lmforge.evaluation.perplexity import evaluate_lm_perplexity, evaluate_masked_perplexity
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
    gen = config.generation
    results: dict[str, dict] = {}
    generations: dict[str, list] = {}
    for name, model_dir in models.items():
        model, hf_tokenizer = load_model_and_tokenizer(model_dir, tokenizer_dir)
        results[name] = {
            "heldout": evaluate_lm_perplexity(model, blocks, batch_size=config.batch_size),
            "sft_pairs": evaluate_masked_perplexity(model, examples, batch_size=config.batch_size, pad_id=tok.pad_id),
        }
        generations[name] = generate_samples(model, hf_tokenizer, gen.get("prompts", []),
                                             max_new_tokens=int(gen.get("max_new_tokens", 48)))
        logger.info("%s: held-out ppl %.2f, instruction ppl %.2f", name, results[name]["heldout"]["perplexity"],
                    results[name]["sft_pairs"]["perplexity"])
        del model
    metrics = summarize_evaluation(results["base"], results["sft"])
    metrics["heldout_blocks"] = float(n_blocks)
    metrics["sft_examples"] = float(len(examples))
    return metrics, generations
