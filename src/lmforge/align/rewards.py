"""Verifiable rewards of an answer to a prompt item: what the on-policy rounds prefer, and the win rate's score.

A **prompt item** is ``{"id", "category", "language", "messages" (the prompt, ending with a user turn),
"reference" (str | None), "metadata"}`` (``lmforge.align.on_policy.prompts_from_conversations`` builds them
from SFT conversations). ``metadata["references"]`` may list every reference answer the data holds for the
same prompt (chatterbot has several replies to one question); ``metadata["kind"]`` is the identity question's
kind (``direct``, ``foreign`` or ``control``, as the identity probe names them).

:func:`score_answer` gives ``(reward in [0, 1], kind)``; the kind says which rule scored it:

- ``identity`` (category ``identity``), by the probe's classifier ``lmforge.evaluation.identity_claims``,
  with the question's kind (a "Yes" to "Are you ChatGPT?" accepts the other identity only for ``foreign``):

  - 1.0: the answer claims the configured name or developer and no other identity;
  - 0.0: it claims another assistant or developer ("I am ChatGPT", "我是文心一言"), or says yes to a
    ``foreign`` question;
  - neither: ``IDENTITY_MISS_FLOOR + IDENTITY_MISS_SPAN * chrF`` against the reference answers (0.1 to 0.5).
    A miss is worse than any claim and better than a wrong identity; the chrF part ranks misses by how near
    they come to the trained answer, so two misses still make a pair (a tiny model rarely claims at all).
    With no reference (the probe's questions) a miss scores ``IDENTITY_MISS_FLOOR``.
  - ``control`` questions ("What is 12 times 7?") invert it: 0.0 when the answer claims the identity, else 1.0.

- ``exact`` (one reference, at most ``SHORT_ANSWER_CHARS`` characters after normalisation, category not
  translation): near-exact match. Both sides are normalised (:func:`normalize_short_answer`: NFKC,
  case-folded, punctuation and symbols dropped, spaces collapsed); equal -> 1.0, else the
  ``difflib.SequenceMatcher`` ratio when it is at least ``NEAR_EXACT_RATIO`` ("Hi there" vs "Hi, there!"
  -> 1.0; "Hello there" vs "Hi there" -> 0.0), else 0.0.
- ``chrf`` (translation, and dialogue/faq with a longer or several references): sentence chrF / 100
  (``lmforge.evaluation.translation.sentence_chrf``: sacrebleu's character 6-grams, whitespace dropped), the
  best over the references. chrF works on characters, so it needs no word segmentation and means the same on
  Chinese and Japanese targets as on English (the translation evaluation's headline number for the same
  reason); it is case-sensitive, and a target shorter than 6 characters is scored on the n-gram orders it has.
- ``unscored``: no rule applies (``code``: running generated code is not trivially verifiable, and exact match
  of a function body is near zero for every sample; any item with no reference outside identity). The reward
  is 0.0 and the on-policy sampler never draws such items (:func:`reward_kind` filters them out).

Each rule returns a short ``detail`` too (:func:`explain_reward`), kept in the candidates' records: why an
answer scored what it did.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

REWARD_KINDS = ("identity", "exact", "chrf", "unscored")
"""The rules :func:`score_answer` reports."""
SHORT_ANSWER_CHARS = 12
"""A single reference at most this long (normalised characters) is scored by near-exact match, not chrF."""
NEAR_EXACT_RATIO = 0.8
"""Least ``SequenceMatcher`` ratio of two normalised short answers that counts as a (near-)match."""
IDENTITY_MISS_FLOOR = 0.1
"""Reward of an identity answer that claims no identity at all, before its chrF share."""
IDENTITY_MISS_SPAN = 0.4
"""Share of chrF (0-1) against the reference added to a miss: a miss stays in [0.1, 0.5]."""
IDENTITY_KINDS = ("direct", "foreign", "control")
"""Identity question kinds (the probe's): who are you, are you someone else, unrelated."""
UNSCORED_CATEGORIES = ("code",)
"""Categories with no verifiable reward here."""

_PUNCT_OR_SYMBOL = re.compile(r"[\W_]+", re.UNICODE)


class Identity(Protocol):
    """The configured assistant (``lmforge.data.identity.IdentityConfig`` or anything with these fields)."""

    name: str
    developer: str


@dataclass(frozen=True)
class Reward:
    """One scored answer."""

    reward: float
    """In [0, 1]; higher is better."""
    kind: str
    """The rule (one of ``REWARD_KINDS``)."""
    detail: str
    """Why: the classifier's reason, the best chrF, the matched reference."""


def references_of(item: Mapping[str, Any]) -> list[str]:
    """Every reference answer of an item: ``metadata.references`` if given, else ``[reference]`` (or none)."""
    refs = (item.get("metadata") or {}).get("references")
    if refs:
        return [str(r) for r in refs]
    return [str(item["reference"])] if item.get("reference") else []


def reward_kind(item: Mapping[str, Any]) -> str:
    """The rule that scores answers to ``item`` (see the module docstring)."""
    category = item.get("category")
    if category == "identity":
        return "identity"
    refs = references_of(item)
    if category in UNSCORED_CATEGORIES or not refs:
        return "unscored"
    if category != "translation" and len(refs) == 1 and len(normalize_short_answer(refs[0])) <= SHORT_ANSWER_CHARS:
        return "exact"
    return "chrf"


def score_answer(item: Mapping[str, Any], answer: str, identity: Identity) -> tuple[float, str]:
    """(reward in [0, 1], kind) of ``answer`` to ``item``; see :func:`explain_reward` for the reason too."""
    scored = explain_reward(item, answer, identity)
    return scored.reward, scored.kind


def explain_reward(item: Mapping[str, Any], answer: str, identity: Identity) -> Reward:
    """:func:`score_answer` with a one-line reason."""
    kind = reward_kind(item)
    refs = references_of(item)
    if kind == "identity":
        question_kind = (item.get("metadata") or {}).get("kind", "direct")
        return identity_reward(answer, identity, question_kind=question_kind, references=refs)
    if kind == "exact":
        return near_exact_reward(answer, refs[0])
    if kind == "chrf":
        return chrf_reward(answer, refs)
    return Reward(0.0, "unscored", f"no verifiable reward for category {item.get('category')!r}")


def identity_reward(answer: str, identity: Identity, *, question_kind: str = "direct",
                    references: Sequence[str] = ()) -> Reward:
    """The identity rule of the module docstring (the probe's classifier, with the question's kind)."""
    from lmforge.evaluation.identity_claims import accepts_other_identity, explain_claim

    if question_kind not in IDENTITY_KINDS:
        raise ValueError(f"identity question kind must be one of {IDENTITY_KINDS}, got {question_kind!r}")
    # "control" answers are classified as "direct" ones: a claim there is a claim out of place.
    probe_kind = "foreign" if question_kind == "foreign" else "direct"
    decision = explain_claim(answer, identity.name, identity.developer, kind=probe_kind)
    if question_kind == "control":
        return Reward(0.0 if decision.claims else 1.0, "identity", f"control question: {decision.reason}")
    if decision.claims:
        return Reward(1.0, "identity", decision.reason)
    if accepts_other_identity(answer, kind=probe_kind):
        return Reward(0.0, "identity", decision.reason)
    best = max((_chrf(answer, r) for r in references), default=0.0)
    reward = IDENTITY_MISS_FLOOR + IDENTITY_MISS_SPAN * best
    return Reward(reward, "identity", f"{decision.reason}; chrF {100 * best:.1f} to the reference")


def chrf_reward(answer: str, references: Sequence[str]) -> Reward:
    """Best sentence chrF / 100 of ``answer`` over ``references``."""
    if not references:
        raise ValueError("chrf_reward needs at least one reference")
    scores = [_chrf(answer, r) for r in references]
    best = max(range(len(scores)), key=scores.__getitem__)
    which = f" (reference {best + 1} of {len(scores)})" if len(scores) > 1 else ""
    return Reward(scores[best], "chrf", f"chrF {100 * scores[best]:.1f}{which}")


def near_exact_reward(answer: str, reference: str) -> Reward:
    """1.0 when the normalised texts are equal, their similarity ratio when >= ``NEAR_EXACT_RATIO``, else 0.0."""
    a, r = normalize_short_answer(answer), normalize_short_answer(reference)
    if a == r:
        return Reward(1.0, "exact", "exact match" if a else "both empty")
    ratio = difflib.SequenceMatcher(None, a, r, autojunk=False).ratio()
    if ratio >= NEAR_EXACT_RATIO:
        return Reward(ratio, "exact", f"near-exact match (ratio {ratio:.2f})")
    return Reward(0.0, "exact", f"no match (ratio {ratio:.2f} < {NEAR_EXACT_RATIO})")


def normalize_short_answer(text: str) -> str:
    """NFKC, case-folded, punctuation/symbols/underscores as spaces, spaces collapsed (so "Hi, there!" ==
    "hi there", "你好！" == "你好")."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return " ".join(_PUNCT_OR_SYMBOL.sub(" ", text).split())


def _chrf(answer: str, reference: str) -> float:
    from lmforge.evaluation.translation import sentence_chrf

    return sentence_chrf(answer or "", reference) / 100.0
