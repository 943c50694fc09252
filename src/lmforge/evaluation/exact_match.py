"""Exact match (EM) and token-level F1 of generated answers against held-out instruction pairs.

The SQuAD metrics, with the normalisation adapted to code. SQuAD lower-cases, deletes punctuation
and the articles "a/an/the", and compares bags of whitespace-separated words. For code each of
those steps would call different programs equal: ``Foo`` and ``foo`` are different names,
``a[0]`` and ``a(0)`` differ only in punctuation, and ``a`` is a common variable name. So here:

- **normalisation** (both sides, before EM and F1): drop a surrounding Markdown code fence
  (```` ```python ... ``` ````), remove the common indentation (``textwrap.dedent``: an answer
  indented as a function body equals the same body at column 0), strip trailing whitespace, drop
  blank lines, and collapse runs of spaces/tabs after a line's indentation to one space (tabs count
  4 columns). Case, punctuation, every word, line breaks and relative indentation are kept: they
  are the program's statements and nesting.
- **exact match**: 1.0 when the normalised prediction equals the normalised reference, else 0.0.
- **token F1**: the normalised texts are split into code tokens (identifiers/numbers ``\\w+``, and
  every other non-space character on its own: ``a[0]`` -> ``a [ 0 ]``), compared as bags (multiset
  intersection, as SQuAD): precision = common / predicted tokens, recall = common / reference
  tokens, F1 their harmonic mean. Two empty texts score 1.0; one empty side scores 0.0.

Aggregates are means over the scored pairs (``exact_match``, ``token_precision``,
``token_recall``, ``token_f1``) with the counts that reconcile:
``considered = scored + skipped_not_single_turn + skipped_long_reference + skipped_long_prompt``.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"^\s*```[\w+.-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)
_INLINE_SPACE = re.compile(r"[ \t]+")
_CODE_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize_answer(text: str) -> str:
    """Normalised answer text (see the module docstring); case and punctuation are kept."""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    text = textwrap.dedent(text.replace("\r\n", "\n").expandtabs(4))
    lines = []
    for line in text.split("\n"):
        body = line.strip()
        if body:  # leading spaces are nesting (kept exactly); runs of spaces after them are not
            lines.append(line[: len(line) - len(line.lstrip())] + _INLINE_SPACE.sub(" ", body))
    return "\n".join(lines)


def code_tokens(text: str) -> list[str]:
    """Identifiers/numbers and single punctuation characters of ``text`` (already normalised or not)."""
    return _CODE_TOKEN.findall(text)


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised texts are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_prf(prediction: str, reference: str) -> tuple[float, float, float]:
    """(precision, recall, F1) of the bags of code tokens of the normalised texts."""
    pred = code_tokens(normalize_answer(prediction))
    ref = code_tokens(normalize_answer(reference))
    if not pred and not ref:
        return 1.0, 1.0, 1.0
    if not pred or not ref:
        return 0.0, 0.0, 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0, 0.0, 0.0
    precision, recall = common / len(pred), common / len(ref)
    return precision, recall, 2 * precision * recall / (precision + recall)


def score_answers(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean EM, token precision/recall/F1 over aligned predictions and references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    n = len(references)
    if n == 0:
        return {"scored": 0.0}
    prf = [token_prf(p, r) for p, r in zip(predictions, references, strict=True)]
    return {
        "exact_match": sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True)) / n,
        "token_precision": sum(x[0] for x in prf) / n,
        "token_recall": sum(x[1] for x in prf) / n,
        "token_f1": sum(x[2] for x in prf) / n,
        "scored": float(n),
    }


def split_single_turn(conversation: Mapping[str, Any]) -> tuple[str, str] | None:
    """(user prompt, reference answer) of a ``[user, assistant]`` conversation, else None."""
    messages = conversation.get("messages") or []
    roles = [m.get("role") for m in messages]
    if roles != ["user", "assistant"]:
        return None
    return str(messages[0].get("content", "")), str(messages[1].get("content", ""))


def evaluate_exact_match(answer: Callable[[list[str]], list[str]], conversations: Sequence[Mapping[str, Any]], *,
                         max_examples: int, count_tokens: Callable[[str], int] | None = None,
                         max_reference_tokens: int | None = None,
                         prompt_fits: Callable[[str], bool] | None = None) -> tuple[dict[str, float], list[dict]]:
    """Score ``answer(prompts) -> answers`` on the first ``max_examples`` usable held-out pairs.

    Usable: a single user turn and an assistant answer (``split_single_turn``), a reference of at
    most ``max_reference_tokens`` tokens by ``count_tokens`` (an answer cut off by a short generation
    budget could never match exactly), and a prompt that ``prompt_fits`` the model's context.
    Returns (metrics, per-pair records ``{"id", "prompt", "reference", "prediction", "exact_match", "token_f1"}``).
    """
    skipped: Counter = Counter()
    chosen: list[tuple[str, str, str]] = []
    considered = 0
    for conv in conversations:
        if len(chosen) >= max_examples:
            break
        considered += 1
        pair = split_single_turn(conv)
        if pair is None:
            skipped["skipped_not_single_turn"] += 1
            continue
        prompt, reference = pair
        if count_tokens and max_reference_tokens is not None and count_tokens(reference) > max_reference_tokens:
            skipped["skipped_long_reference"] += 1
            continue
        if prompt_fits and not prompt_fits(prompt):
            skipped["skipped_long_prompt"] += 1
            continue
        chosen.append((str(conv.get("id", considered - 1)), prompt, reference))
    predictions = answer([p for _, p, _ in chosen]) if chosen else []
    if len(predictions) != len(chosen):
        raise ValueError(f"answer() returned {len(predictions)} answers for {len(chosen)} prompts")
    metrics = score_answers(predictions, [r for _, _, r in chosen])
    metrics.update({"considered": float(considered),
                    **{k: float(skipped[k]) for k in ("skipped_not_single_turn", "skipped_long_reference",
                                                      "skipped_long_prompt")}})
    records = [{"id": i, "prompt": p, "reference": r, "prediction": pred, "exact_match": exact_match(pred, r),
                "token_f1": token_prf(pred, r)[2]} for (i, p, r), pred in zip(chosen, predictions, strict=True)]
    if chosen:
        logger.info("held-out pairs: EM %.3f, token F1 %.3f on %d pairs (%d considered)", metrics["exact_match"],
                    metrics["token_f1"], len(chosen), considered)
    else:
        logger.warning("held-out pairs: no usable pair among %d considered (%s)", considered, dict(skipped))
    return metrics, records
