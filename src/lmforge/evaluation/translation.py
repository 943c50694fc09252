"""Translation quality on held-out translation pairs: chrF and BLEU (sacrebleu) per direction.

The pairs are the held-out SFT conversations of category ``translation`` (catalog dataset
``sft_validation_conversations``): ``metadata`` names ``src_lang`` and ``tgt_lang`` (en, zh, ja), the
last message is the assistant's reference translation and the messages before it are the prompt,
asked through the chat template and answered greedily (the caller's ``answer``, which goes through
``lmforge.generation``). At most ``max_pairs_per_direction`` pairs per direction (in input order) are
answered: generation is the expensive part on a CPU.

Scores (sacrebleu, corpus level, per direction ``<src>_<tgt>``):

- **chrF** (``sacrebleu.metrics.CHRF`` defaults: character 6-grams, beta 2): works on characters, so it
  needs no word segmentation and is the headline number for Chinese and Japanese targets.
- **BLEU** with the tokenizer for the target language (``BLEU_TOKENIZE``): ``zh`` (each CJK character
  a token) for Chinese, ``13a`` for English, and ``char`` for Japanese. sacrebleu's ``ja-mecab`` would
  segment Japanese into words, but it needs ``mecab-python3`` and ``ipadic``, and ipadic is published
  only as a source distribution (no wheel): with ``char`` Japanese BLEU counts character n-grams, so
  it runs higher than word-level BLEU would; compare it only with itself. Without the right tokenizer a
  Chinese sentence is one "word" and BLEU is 0 for anything short of a verbatim copy.

Records (``<model>.translation`` in generations.json) keep each pair's prompt, reference, hypothesis
and sentence chrF, so a saved run can be re-read without generating again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

BLEU_TOKENIZE = {"zh": "zh", "ja": "char", "en": "13a"}
"""sacrebleu BLEU tokenizer by target language (see the module docstring for ``ja``)."""
DEFAULT_BLEU_TOKENIZE = "13a"
"""BLEU tokenizer of any other target language."""
CATEGORY = "translation"
"""The SFT category of translation conversations."""


@dataclass(frozen=True)
class TranslationPair:
    """One held-out translation conversation."""

    direction: str
    """``<src>_<tgt>``, e.g. ``en_zh``."""
    pair_id: str
    """``metadata.pair_id`` (else the record's position)."""
    prompt: list[dict[str, str]]
    """The messages before the reference (system and user turns)."""
    reference: str
    """The assistant turn: the reference translation."""


def bleu_tokenize(tgt_lang: str) -> str:
    """The sacrebleu BLEU tokenizer for a target language."""
    return BLEU_TOKENIZE.get(tgt_lang, DEFAULT_BLEU_TOKENIZE)


def translation_pairs(conversations: Sequence[Mapping[str, Any]], *,
                      max_per_direction: int) -> dict[str, list[TranslationPair]]:
    """``{direction: pairs}`` of the ``translation`` records, at most ``max_per_direction`` each, in input order.

    A translation record without ``metadata.src_lang``/``tgt_lang`` or whose last message is not a
    non-empty assistant turn breaks the contract of ``sft_validation_conversations``: a ValueError
    names its position and pair id.
    """
    pairs: dict[str, list[TranslationPair]] = {}
    for i, record in enumerate(conversations):
        if record.get("category") != CATEGORY:
            continue
        meta = record.get("metadata") or {}
        messages = list(record.get("messages") or [])
        where = f"sft_validation_conversations record {i} (pair_id {meta.get('pair_id')!r})"
        if not meta.get("src_lang") or not meta.get("tgt_lang"):
            raise ValueError(f"{where}: a translation record needs metadata.src_lang and metadata.tgt_lang; "
                             "rebuild the SFT data (kedro run --pipelines sft)")
        if len(messages) < 2 or messages[-1].get("role") != "assistant" or not str(messages[-1].get("content", "")):
            raise ValueError(f"{where}: a translation record ends with the assistant's reference translation; "
                             "rebuild the SFT data (kedro run --pipelines sft)")
        direction = f"{meta['src_lang']}_{meta['tgt_lang']}"
        chosen = pairs.setdefault(direction, [])
        if len(chosen) < max_per_direction:
            chosen.append(TranslationPair(direction, str(meta.get("pair_id", i)),
                                          [{"role": str(m["role"]), "content": str(m["content"])} for m in messages[:-1]],
                                          str(messages[-1]["content"])))
    return dict(sorted(pairs.items()))


def score_translations(hypotheses: Sequence[str], references: Sequence[str], tgt_lang: str) -> dict[str, float]:
    """Corpus chrF and BLEU (the target's tokenizer) of aligned hypotheses and references, 0-100."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("no translation pair to score")
    hyps, refs = list(hypotheses), [list(references)]
    return {"chrf": float(CHRF().corpus_score(hyps, refs).score),
            "bleu": float(BLEU(tokenize=bleu_tokenize(tgt_lang)).corpus_score(hyps, refs).score),
            "pairs": float(len(references))}


def sentence_chrf(hypothesis: str, reference: str) -> float:
    """chrF of one hypothesis (for the per-pair records)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(hypothesis, [reference]).score)


def evaluate_translation(answer: Callable[[list[list[dict[str, str]]]], list[str]],
                         conversations: Sequence[Mapping[str, Any]], *, max_per_direction: int,
                         prompt_fits: Callable[[list[dict[str, str]]], bool] | None = None,
                         ) -> tuple[dict[str, Any], list[dict]]:
    """Answer the held-out pairs with ``answer(prompts) -> translations`` and score each direction.

    Returns (``{direction: {chrf, bleu, pairs}, "pairs": n, "skipped_long_prompt": n}``, per-pair records).
    Pairs whose prompt does not ``prompt_fits`` the model's context are skipped and counted.
    """
    by_direction = translation_pairs(conversations, max_per_direction=max_per_direction)
    skipped = 0
    chosen: list[TranslationPair] = []
    for pairs in by_direction.values():
        for pair in pairs:
            if prompt_fits is None or prompt_fits(pair.prompt):
                chosen.append(pair)
            else:
                skipped += 1
    hypotheses = answer([p.prompt for p in chosen]) if chosen else []
    if len(hypotheses) != len(chosen):
        raise ValueError(f"answer() returned {len(hypotheses)} translations for {len(chosen)} prompts")
    metrics: dict[str, Any] = {"pairs": float(len(chosen)), "skipped_long_prompt": float(skipped)}
    for direction in by_direction:
        scored = [(p, h) for p, h in zip(chosen, hypotheses, strict=True) if p.direction == direction]
        if scored:
            metrics[direction] = score_translations([h for _, h in scored], [p.reference for p, _ in scored],
                                                    direction.split("_", 1)[1])
            logger.info("translation %s: chrF %.1f BLEU %.1f on %d pairs", direction, metrics[direction]["chrf"],
                        metrics[direction]["bleu"], len(scored))
    if not by_direction:
        logger.warning("translation: no held-out record of category %r", CATEGORY)
    records = [{"direction": p.direction, "pair_id": p.pair_id, "prompt": p.prompt[-1]["content"] if p.prompt else "",
                "reference": p.reference, "hypothesis": h, "chrf": sentence_chrf(h, p.reference)}
               for p, h in zip(chosen, hypotheses, strict=True)]
    return metrics, records
