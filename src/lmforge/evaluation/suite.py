"""Evaluate the base (pretrained or ``sft.base_model``), SFT and (when align ran) aligned models side by side
on the same held-out data.

Each model in its own tokenizer's ids and chat template (``lmforge.evaluation.heldout``): held-out
perplexity and bits per byte on validation token blocks, assistant-token perplexity and bits per byte
on held-out instruction conversations (masked as training masks them), HumanEval pass@k (completions
run in the sandbox), the identity probe (P/R/F1), exact match and token F1 of greedy answers to
held-out instruction pairs (``exact_match``) and a handful of greedy generations. Per language:
bits per byte per language group on the validation documents (``by_language``: en, zh, ja, code, the
same text for both models), chrF/BLEU of greedy translations of the held-out translation pairs per
direction (``translation``) and the identity probe's scores in English and Chinese apart. For the report's
verdicts it also scores every held-out block and conversation on its own and writes the
paired-bootstrap SE of each ``<split>.loss_delta`` (``<split>.loss_delta_se``,
``lmforge.evaluation.verdicts``). Metric names come from ``lmforge.evaluation.report`` and are stable:
``<model>.heldout.bits_per_byte``, ``<model>.humaneval.pass_at_1``, ``<model>.identity.f1``,
``<model>.heldout_pairs.exact_match``, ``<model>.heldout_pairs.token_f1``,
``<model>.heldout.by_language.zh.bits_per_byte``, ``<model>.translation.en_zh.chrf``,
``<model>.identity.by_language.zh.recall``...

Before scoring, the SFT model's prompt as generation encodes it is audited against the one sft trained
on (``evaluation_audit``, ``lmforge.tokenizer.template_audit``): a template or stop-token mismatch fails
the stage naming the first differing token. The aligned model (``aligned``, ``lmforge.align``) is audited
the same way against the same reference: align trains on sft's template.

Held-out text (the blocks and the per-language groups) is scored by ``score_heldout`` only: the stage's models
and each quantized GGUF package of the chat model (``lmforge.evaluation.quantization``, a node of its own) get
the same numbers from the same code.

The aligned model gets every per-model metric (``aligned.*``) except the generation-speed step: it has
the SFT model's architecture and size, so its speed would measure the same thing again (``sft.speed.*``
stands for both) for a minute of CPU. Its comparisons with SFT are ``aligned_vs_sft.*`` and with base
``aligned_vs_base.*`` (``lmforge.evaluation.report``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.evaluation.config import (
    EvaluationConfig,
    HeldoutPairsConfig,
    SpeedConfig,
    TranslationConfig,
)
from lmforge.evaluation.heldout import HeldoutData, HeldoutSources
from lmforge.evaluation.humaneval import HumanEvalConfig

if TYPE_CHECKING:
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

__all__ = ["EvaluationConfig", "HeldoutSources", "evaluate_models"]

logger = logging.getLogger(__name__)


def evaluate_models(models: Mapping[str, str], sources: HeldoutSources, conversations: Sequence[Mapping[str, Any]],
                    config: EvaluationConfig, identity: Mapping[str, Any] | None = None, *,
                    chat_template: str | None = None, trust_remote_code: bool = False,
                    template_audit: Mapping[str, Any] | None = None) -> tuple[dict, dict, dict]:
    """Score each ``{name: model_dir}`` (``base``, ``sft`` and, when align ran, ``aligned``); returns (flat
    metrics, generations per model, the template audit of evaluation's prompts: the SFT model's).

    Each model is scored in its own tokenizer's ids (``lmforge.evaluation.heldout``); ``chat_template``
    names the built-in template of a model without one (``sft.chat_template``). ``template_audit`` is
    sft's (``lmforge.tokenizer.template_audit``): the SFT model's prompts as generation encodes them must
    match it, checked before anything is scored (``TemplateMismatchError`` names the first differing token).
    ``identity`` is ``{"name", "developer"}`` the SFT data taught (``sft.identity``); the probe is
    skipped without it. The generations output also holds, per model, the identity answers, the
    translations and the HumanEval per-problem results (``<model>.identity_probe``, ``<model>.translation``,
    ``<model>.humaneval``).
    """
    from lmforge.evaluation.heldout import heldout_data
    from lmforge.evaluation.perplexity import evaluate_masked_perplexity
    from lmforge.evaluation.report import summarize_evaluation
    from lmforge.generation import generate_samples, load_model_and_tokenizer
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer, has_tokenizer

    chats = {name: ChatTokenizer.for_model(model_dir, sources.stage_tokenizer, chat_template=chat_template,
                                           trust_remote_code=trust_remote_code) for name, model_dir in models.items()}
    audit = evaluation_audit(models["sft"], chats["sft"], trust_remote_code=trust_remote_code)
    if template_audit is not None:
        from lmforge.tokenizer.template_audit import check_audits

        for name in ("sft", "aligned"):  # the aligned model answers in the template sft trained
            if name in models:
                check_audits(template_audit, audit if name == "sft" else
                             evaluation_audit(models[name], chats[name], trust_remote_code=trust_remote_code))
    # lmforge's own tokenizer, when the tokenizer stage ran (SFT from a foreign model may do without it)
    stage_chat = ChatTokenizer.load(sources.stage_tokenizer) if has_tokenizer(sources.stage_tokenizer) else None
    data: dict[str, Any] = {}  # per tokenizer (sha256): base and sft share one unless their tokenizers differ
    language_texts = collect_heldout_language_texts(sources, config)  # the same text for every model
    gen = config.generation
    results: dict[str, dict] = {}
    generations: dict[str, Any] = {}
    per_item: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for name, model_dir in models.items():
        chat = chats[name]
        model, _ = load_model_and_tokenizer(model_dir, chat.source, trust_remote_code=trust_remote_code)
        hf_tokenizer = chat.tokenizer  # with the template (a built-in one for a model without its own)
        if chat.sha256 not in data:
            data[chat.sha256] = heldout_data(chat, sources, conversations, max_blocks=config.max_heldout_blocks,
                                             max_examples=config.max_sft_examples,
                                             max_example_tokens=config.max_example_tokens,
                                             context=getattr(model.config, "max_position_embeddings", None),
                                             stage_chat=stage_chat)
        held = data[chat.sha256]
        if not len(held.blocks) or not held.examples:
            raise ValueError(f"nothing to evaluate for {name}: {len(held.blocks)} held-out blocks, "
                             f"{len(held.examples)} held-out conversations")
        results[name] = {
            "heldout": score_heldout(model, chat, held, language_texts, config),
            "sft_pairs": evaluate_masked_perplexity(model, held.examples, batch_size=config.batch_size,
                                                    pad_id=chat.pad_id, token_bytes=held.token_bytes),
        }
        per_item[name] = _per_item_nats(model, held.blocks, held.examples, pad_id=chat.pad_id)
        generations[name] = generate_samples(model, hf_tokenizer, gen.prompts, max_new_tokens=gen.max_new_tokens)
        if config.humaneval.enabled:
            humaneval = _run_humaneval(model, hf_tokenizer, config.humaneval)
            generations[f"{name}.humaneval"] = humaneval.pop("per_problem")
            results[name]["humaneval"] = {k: v for k, v in humaneval.items() if k != "isolation"}
        if config.identity_probe.enabled and identity is not None:
            metrics, answers = _run_identity_probe(model, hf_tokenizer, identity, config.identity_probe.max_new_tokens)
            results[name]["identity"] = metrics
            generations[f"{name}.identity_probe"] = answers
        if config.heldout_pairs.enabled:
            metrics, records = _run_heldout_pairs(model, hf_tokenizer, conversations, config.heldout_pairs)
            results[name]["heldout_pairs"] = metrics
            generations[f"{name}.heldout_pairs"] = records
        if config.translation.enabled:
            metrics, records = _run_translation(model, hf_tokenizer, conversations, config.translation)
            results[name]["translation"] = metrics
            generations[f"{name}.translation"] = records
        if name == "sft" and config.speed.enabled:
            results[name]["speed"] = _run_speed(model, hf_tokenizer, conversations, config.speed)
        logger.info("%s: held-out ppl %.2f, instruction ppl %.2f", name, results[name]["heldout"]["perplexity"],
                    results[name]["sft_pairs"]["perplexity"])
        del model
    metrics = summarize_evaluation(results["base"], results["sft"], results.get("aligned"))
    if chats["base"].sha256 == chats["sft"].sha256:  # paired noise needs the same items in the same ids
        metrics.update(_loss_delta_noise(per_item["base"], per_item["sft"]))
    if "aligned" in models and chats["aligned"].sha256 == chats["sft"].sha256:
        metrics.update({f"aligned_vs_sft.{k}": v for k, v in _loss_delta_noise(per_item["sft"],
                                                                                per_item["aligned"]).items()})
    held = data[chats["sft"].sha256]
    metrics["heldout_blocks"] = float(len(held.blocks))
    metrics["sft_examples"] = float(len(held.examples))
    return metrics, generations, audit


def evaluation_audit(model_dir: str, chat: ChatTokenizer, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The template audit of evaluation: ``AUDIT_CONVERSATION[:-1]`` as ``lmforge.generation`` encodes the
    prompt for ``model_dir`` (its tokenizer and template), with the stop ids generation would use."""
    from lmforge.generation import encode_prompt, resolve_stop_token_ids
    from lmforge.tokenizer.template_audit import AUDIT_CONVERSATION, prompt_audit

    prompt_ids = encode_prompt(chat.tokenizer, list(AUDIT_CONVERSATION[:-1]), chat=True)
    stop_ids = resolve_stop_token_ids(chat.tokenizer, load_generation_config(model_dir, trust_remote_code))
    return prompt_audit("evaluation", chat.tokenizer, prompt_ids, stop_ids, source=chat.source)


def load_generation_config(model_dir: str, trust_remote_code: bool = False) -> Any:
    """The ``GenerationConfig`` a model loaded from ``model_dir`` gets (its generation_config.json, else config.json)."""
    from transformers import AutoConfig, GenerationConfig

    if (Path(model_dir) / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(model_dir)
    return GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_dir,
                                                                         trust_remote_code=trust_remote_code))


def _per_item_nats(model: Any, blocks: Sequence[Any], examples: Sequence[tuple[list[int], list[int]]], *,
                   pad_id: int) -> dict[str, list[tuple[float, float]]]:
    """``(summed nats, scored tokens)`` of every held-out block and conversation, each scored alone.

    A second pass over the same items (the metrics come from the batched pass, unchanged): the
    perplexity evaluators return totals only, and the noise of a difference needs the items.
    """
    from lmforge.evaluation.perplexity import IGNORE_INDEX, evaluate_lm_perplexity, evaluate_masked_perplexity

    def nats(scored: Mapping[str, float]) -> tuple[float, float]:
        return scored["loss"] * scored["tokens"], scored["tokens"]

    return {"heldout": [nats(evaluate_lm_perplexity(model, [block], batch_size=1)) for block in blocks],
            "sft_pairs": [nats(evaluate_masked_perplexity(model, [example], batch_size=1, pad_id=pad_id))
                          if any(label != IGNORE_INDEX for label in example[1]) else (0.0, 0.0)  # nothing scored
                          for example in examples]}


def _loss_delta_noise(base: Mapping[str, Sequence[tuple[float, float]]],
                      other: Mapping[str, Sequence[tuple[float, float]]]) -> dict[str, float]:
    """``<split>.loss_delta_se``: paired-bootstrap SE of the token-weighted loss difference ``other - base``."""
    from lmforge.evaluation.verdicts import paired_bootstrap_se, token_weighted_loss

    return {f"{split}.loss_delta_se": paired_bootstrap_se(base[split], other[split], token_weighted_loss)
            for split in base if base[split] and len(base[split]) == len(other.get(split, ()))}


def _run_humaneval(model: Any, hf_tokenizer: Any, config: HumanEvalConfig) -> dict[str, Any]:
    """HumanEval completions from raw code prompts (no chat template), scored in the sandbox."""
    from lmforge.evaluation.humaneval import evaluate_humaneval
    from lmforge.generation import generate

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

    def complete(prompts: list[str], sample: int) -> list[str]:
        fitted = [fit(i, p) for i, p in enumerate(prompts)]
        completions = generate(model, hf_tokenizer, fitted, max_new_tokens=config.max_new_tokens, chat=False,
                               do_sample=config.temperature > 0, temperature=config.temperature or 1.0,
                               seed=sample * 100_003)
        return [c.text for c in completions]

    metrics = evaluate_humaneval(complete, config)
    metrics["prompts_truncated"] = len(truncated)
    if truncated:
        logger.warning("HumanEval: %d prompts kept only their last tokens to fit the %d-token context",
                       len(truncated), context)
    return metrics


def _run_identity_probe(model: Any, hf_tokenizer: Any, identity: Mapping[str, Any],
                        max_new_tokens: int) -> tuple[dict[str, float], list[dict]]:
    """Ask the probe questions through the chat template (greedy) and score the answers."""
    from lmforge.evaluation.identity_probe import run_identity_probe
    from lmforge.generation import generate

    def answer(questions: list[str]) -> list[str]:
        return [c.text for c in generate(model, hf_tokenizer, questions, max_new_tokens=max_new_tokens, chat=True)]

    return run_identity_probe(answer, str(identity["name"]), str(identity["developer"]))


def _run_heldout_pairs(model: Any, hf_tokenizer: Any, conversations: Sequence[Mapping[str, Any]],
                       settings: HeldoutPairsConfig) -> tuple[dict[str, float], list[dict]]:
    """Greedy answers to held-out single-turn pairs (chat template), scored by EM and token F1."""
    from lmforge.evaluation.exact_match import evaluate_exact_match
    from lmforge.generation import encode_prompt, generate

    max_new_tokens = settings.max_new_tokens
    context = getattr(model.config, "max_position_embeddings", None)

    def count_tokens(text: str) -> int:
        return len(hf_tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_fits(prompt: str) -> bool:
        return not context or len(encode_prompt(hf_tokenizer, prompt, chat=True)) + max_new_tokens <= context

    def answer(prompts: list[str]) -> list[str]:
        return [c.text for c in generate(model, hf_tokenizer, prompts, max_new_tokens=max_new_tokens, chat=True)]

    return evaluate_exact_match(answer, conversations, max_examples=settings.max_examples,
                                count_tokens=count_tokens, max_reference_tokens=max_new_tokens - 1,
                                prompt_fits=prompt_fits)


def score_heldout(model: Any, chat: ChatTokenizer, held: HeldoutData, language_texts: Mapping[str, Sequence[str]],
                  config: EvaluationConfig) -> dict[str, Any]:
    """Perplexity and bits per byte on the held-out blocks and, when ``language_texts`` are given, per language
    (``{..., "by_language": {group: metrics}}``): the one scoring of held-out text, for the stage's models and for
    each quantized package (``lmforge.evaluation.quantization``)."""
    from lmforge.evaluation.by_language import score_by_language
    from lmforge.evaluation.perplexity import evaluate_lm_perplexity

    scores: dict[str, Any] = evaluate_lm_perplexity(model, held.blocks, batch_size=config.batch_size,
                                                    token_bytes=held.token_bytes)
    if language_texts:
        seq_len = min(config.by_language.seq_len, getattr(model.config, "max_position_embeddings", None) or 10**9)
        scores["by_language"] = score_by_language(model, chat.tokenizer, language_texts, token_bytes=held.token_bytes,
                                                  seq_len=seq_len, pad_id=chat.pad_id, batch_size=config.batch_size)
    return scores


def collect_heldout_language_texts(sources: HeldoutSources, config: EvaluationConfig) -> dict[str, list[str]]:
    """Validation text per language group (``lmforge.evaluation.by_language``), {} when off or not given."""
    from lmforge.evaluation.by_language import collect_language_texts

    settings = config.by_language
    if not settings.enabled:
        return {}
    if sources.validation_documents is None:
        logger.warning("per-language held-out scores skipped: no validation documents were given")
        return {}
    return collect_language_texts(sources.validation_documents(), languages=settings.languages,
                                  max_chars=settings.max_chars)


def _run_translation(model: Any, hf_tokenizer: Any, conversations: Sequence[Mapping[str, Any]],
                     settings: TranslationConfig) -> tuple[dict[str, Any], list[dict]]:
    """Greedy translations of the held-out translation pairs (chat template), scored by chrF and BLEU."""
    from lmforge.evaluation.translation import evaluate_translation
    from lmforge.generation import encode_prompt, generate

    context = getattr(model.config, "max_position_embeddings", None)

    def prompt_fits(prompt: list[dict[str, str]]) -> bool:
        return not context or len(encode_prompt(hf_tokenizer, prompt, chat=True)) + settings.max_new_tokens <= context

    def answer(prompts: list[list[dict[str, str]]]) -> list[str]:
        return [c.text for c in generate(model, hf_tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                                         chat=True, batch_size=settings.batch_size)]

    return evaluate_translation(answer, conversations, max_per_direction=settings.max_pairs_per_direction,
                                prompt_fits=prompt_fits)


def _run_speed(model: Any, hf_tokenizer: Any, conversations: Sequence[Mapping[str, Any]],
               settings: SpeedConfig) -> dict[str, float]:
    """requests/s, tokens/s, response time p50/p95 and peak memory of batched greedy generation.

    Prompts: the user turns of the first ``prompts`` single-turn held-out pairs that fit the context
    with ``max_new_tokens``. Keys as ``lmforge.evaluation.speed.speed_metrics`` (ours, then ``transformers.*``).
    """
    from lmforge.evaluation.exact_match import split_single_turn
    from lmforge.evaluation.speed import compare_generation_speed, speed_metrics
    from lmforge.generation import encode_prompt

    max_new_tokens = settings.max_new_tokens
    context = getattr(model.config, "max_position_embeddings", None) or 10**9
    prompts = []
    for conv in conversations:
        pair = split_single_turn(conv)
        if pair and len(encode_prompt(hf_tokenizer, pair[0], chat=True)) + max_new_tokens <= context:
            prompts.append(pair[0])
        if len(prompts) >= settings.prompts:
            break
    if not prompts:
        logger.warning("generation speed: no held-out prompt fits the %s-token context", context)
        return {}
    comparison = compare_generation_speed(model, hf_tokenizer, prompts, max_new_tokens=max_new_tokens,
                                          batch_size=settings.batch_size, rounds=settings.rounds)
    return {key.split(".", 1)[1]: value for key, value in speed_metrics(comparison).items()}
