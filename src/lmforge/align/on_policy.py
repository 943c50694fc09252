"""On-policy preference pairs: sample k answers from the policy, score them, pair the best against the worst.

One **round** (:func:`sample_round`) takes prompt items (:func:`prompts_from_conversations`: held-in SFT
prompts, the reference answer beside each), samples ``k`` answers per prompt from the current policy through
``lmforge.generation`` (the project's one generation path: the chat template, the stop tokens and decoding
are the evaluation's), scores every answer with a verifiable reward (``lmforge.align.rewards``) and makes one
preference pair per prompt, best answer chosen and worst rejected, when they differ by at least
``min_margin``. A prompt with no such margin (every sample as good as the others), a prompt too long for the
model's context and a best answer that is empty are skipped and counted by reason:
``prompts = pairs + skipped``. Every candidate is kept in the round's records with its reward, the rule and
the reason (what was preferred, and why).

**Sampling** is our batched decode loop (``generation.generate_batched``'s ``generate_batch``, temperature
and top-k) on ``k`` copies of each prompt, ``sample_batch_size // k`` prompts per batch, each batch seeded
from ``(seed, round, its item ids)``: the same model, items and arguments give the same samples and pairs.
A prompt's samples do depend on its batch neighbours (one random generator per batch, left padding): the
price of batching, which made sampling 2.7x cheaper than one prompt per batch on CPU. Measured on the 2-core
machine (shared with other jobs, load 5-12) with ``threads: 1``: 48 prompts x 4 samples x 40 tokens took 5 s of
CPU (13 s wall; ~2,500 new tokens) on the default chain's SFT model (9.4M parameters), 0.8 s on the tests' tiny
random model; the win rate's greedy answers (48 held-out items, two models) 5.6 s of CPU (11 s wall).

**Rounds** (:func:`run_rounds`): round 1 samples from the SFT model; round ``r`` from round ``r-1``'s
trained model; each round trains on the offline pairs plus that round's on-policy pairs
(:func:`round_training_pairs`; earlier rounds' samples came from an older policy and are not reused). Each
round draws its own prompts (seed ``seed + round - 1``).

**Win rate** (:func:`win_rate`): greedy answers of two models to the same held-out items, each scored with
the same reward; a win is a higher reward, a tie counts half. Held-out items are the SFT validation
conversations plus the identity probe's questions (:func:`heldout_items`; the SFT validation split holds no
identity conversations, and the probe's paraphrases were never trained on).

Long because (~440 lines) it is one concept, the on-policy loop: the prompt items, a sampled round, the rounds
and the win rate share their items, rewards, seeds and thread policy, and the stage imports them together; a
split would leave a module of prompt items importing ``OnPolicyArgs`` back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.align.rewards import Identity, explain_reward, reward_kind

logger = logging.getLogger(__name__)

SOURCE = "on_policy"
"""``source`` of every on-policy pair record."""
SKIP_REASONS = ("no_margin", "long_prompt", "empty_chosen")
"""Why a prompt made no pair: best - worst < min_margin (or 0); prompt + max_new_tokens over the context; best
answer empty."""


@dataclass
class OnPolicyArgs:
    """``align.on_policy``: on-policy rounds (sample, score, pair best vs worst, train) and the win rate.

    The defaults fit the CPU default chain (module docstring: 5-6 s of CPU per round). Temperature 0.7 and
    top-k 20 rather than 1.0 / 50: on the default chain's SFT model they gave identity samples that claim the
    identity (mean best identity reward 0.32-0.42 over seeds 0-2, against 0.19-0.35 at 1.0 / 50), the pairs
    the identity acceptance needs, for about the same number of pairs (16-18 of 48 prompts against 15-22).
    """

    # Rounds of sample -> score -> pair -> train; 0 trains on the offline pairs only.
    rounds: int = 1
    # Prompts sampled per round, spread evenly over ``categories`` (a category with fewer gives what it has).
    prompts_per_round: int = 48
    # SFT categories whose prompts are sampled; each needs a verifiable reward (code has none).
    categories: list[str] = field(default_factory=lambda: ["identity", "translation", "dialogue", "faq"])
    # Answers sampled per prompt (the best and the worst of them make the pair).
    k: int = 4
    # Longest sampled answer, in tokens.
    max_new_tokens: int = 40
    # Sampling temperature (> 0).
    temperature: float = 0.7
    # Sample among the ``top_k`` most likely tokens (0: the whole vocabulary).
    top_k: int = 20
    # Least reward difference between the best and the worst answer for a pair (rewards are in [0, 1]);
    # equal rewards never make a pair, whatever the margin.
    min_margin: float = 0.05
    # Seed of the prompt draw and of the sampling.
    seed: int = 0
    # Held-out prompts of the win rate (aligned vs SFT), spread over ``categories``; 0: no win rate.
    heldout_prompts: int = 48
    # Sequences per sampling batch (``sample_batch_size // k`` prompts, k copies each).
    sample_batch_size: int = 64
    # Sequences per forward pass when answering greedily for the win rate.
    batch_size: int = 8
    # torch CPU threads while sampling and answering (restored after; 0: leave torch's setting). Measured on
    # the 2-core machine shared with other jobs: 1 thread sampled the default round in 13 s wall, 2 in 72 s
    # (OpenMP threads spin-waiting for a busy core); the decode steps of a 9M model are too small to share.
    threads: int = 1

    def __post_init__(self) -> None:
        self.categories = list(self.categories)
        least = {"rounds": 0, "prompts_per_round": 0, "heldout_prompts": 0, "top_k": 0, "k": 2, "max_new_tokens": 1,
                 "sample_batch_size": 1, "batch_size": 1, "threads": 0}  # k: a pair needs two answers
        for key, low in least.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"align.on_policy.{key} must be an integer >= {low}, got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"align.on_policy.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.min_margin <= 1.0:
            raise ValueError(f"align.on_policy.min_margin must be in [0, 1] (rewards are), got {self.min_margin}")
        unscored = [c for c in self.categories if reward_kind({"category": c, "reference": "x"}) == "unscored"]
        if unscored or not self.categories:
            raise ValueError(f"align.on_policy.categories: {unscored or 'none given'} have no verifiable reward; "
                             "use some of identity, translation, dialogue, faq")

    def per_category(self, total: int) -> int:
        """Prompts per category for ``total`` prompts."""
        return math.ceil(total / len(self.categories)) if total else 0


# --- prompt items ------------------------------------------------------------------------------------------


def prompts_from_conversations(conversations: Sequence[Mapping[str, Any]], categories: Sequence[str],
                               per_category: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``per_category`` distinct prompts of each category, a stable sample by ``seed``.

    The prompt is the messages before the last assistant turn, the reference is that turn; a prompt that
    occurs several times (identity conversations are repeated, chatterbot has several replies to one
    question) is one item whose ``metadata.references`` lists every distinct reference (sorted; ``reference`` is
    the first) and whose id is the group's smallest record id. The sample is the
    ``per_category`` prompts of smallest ``sha256(seed, prompt)``: it does not depend on the input order.
    Records that are not a prompt + assistant answer are skipped (logged with their count).
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    unusable = 0
    for record in conversations:
        category = record.get("category")
        if category not in categories:
            continue
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in record.get("messages") or []]
        if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
            unusable += 1
            continue
        prompt, reference = messages[:-1], messages[-1]["content"]
        key = json.dumps(prompt, ensure_ascii=False, sort_keys=True)
        item = groups.get((category, key))
        if item is None:
            meta = dict(record.get("metadata") or {})
            language = meta.get("tgt_lang") or record.get("language") or meta.get("language_group")
            kind = "foreign" if record.get("polarity") == "negative" else "direct"
            groups[(category, key)] = item = {
                "id": str(record.get("id") or f"{category}-{_digest(0, key)[:10]}"), "category": category,
                "language": language,
                "messages": prompt, "reference": reference,
                "metadata": {**({"kind": kind} if category == "identity" else {}), "references": []},
            }
        if record.get("id") and str(record["id"]) < item["id"]:
            item["id"] = str(record["id"])  # the smallest id of the group: independent of the input order
        if reference not in item["metadata"]["references"]:
            item["metadata"]["references"] = sorted([*item["metadata"]["references"], reference])
            item["reference"] = item["metadata"]["references"][0]
    if unusable:
        logger.warning("on-policy prompts: %d record(s) of %s do not end in a user turn + assistant answer: skipped",
                       unusable, list(categories))
    used: set[str] = set()
    for (_category, key), item in groups.items():  # ids must be unique: a pair's id is built from its item's
        if item["id"] in used:
            item["id"] = f"{item['id']}-{_digest(0, key)[:8]}"
        used.add(item["id"])
    out = []
    for category in categories:
        keys = sorted((k for c, k in groups if c == category), key=lambda k: _digest(seed, k))
        out += [groups[(category, k)] for k in keys[:per_category]]
        if len(keys) < per_category:
            logger.info("on-policy prompts: category %s has %d distinct prompts (%d asked)", category, len(keys),
                        per_category)
    return out


def probe_identity_items(kinds: Sequence[str] = ("direct", "foreign")) -> list[dict[str, Any]]:
    """The identity probe's questions of ``kinds`` as prompt items (no reference: the classifier scores them)."""
    from lmforge.evaluation.identity_probe import QUESTIONS

    return [{"id": f"identity-probe-{i}", "category": "identity", "language": lang,
             "messages": [{"role": "user", "content": question}], "reference": None,
             "metadata": {"kind": kind, "references": []}}
            for i, (lang, kind, question) in enumerate(QUESTIONS) if kind in kinds]


def heldout_items(validation_conversations: Sequence[Mapping[str, Any]], args: OnPolicyArgs) -> list[dict[str, Any]]:
    """``args.heldout_prompts`` held-out items over ``args.categories``: validation prompts, and for identity
    the probe's direct and foreign questions (the validation split has no identity conversations)."""
    per = args.per_category(args.heldout_prompts)
    others = [c for c in args.categories if c != "identity"]
    items = prompts_from_conversations(validation_conversations, others, per, args.seed)
    if "identity" in args.categories:
        probe = sorted(probe_identity_items(), key=lambda it: _digest(args.seed, it["id"]))
        items = probe[:per] + items
    return items


# --- sampling a round ----------------------------------------------------------------------------------------


def sample_round(model_dir: str | Path, items: Sequence[Mapping[str, Any]], args: OnPolicyArgs, identity: Identity,
                 round_index: int, *, tokenizer_dir: str | Path | None = None,
                 ) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """(pairs, candidate records, stats) of one round sampled from the model in ``model_dir``."""
    from lmforge.generation import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_dir, tokenizer_dir)
    with torch_threads(args.threads):
        return sample_pairs(model, tokenizer, items, args, identity, round_index)


def sample_pairs(model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], args: OnPolicyArgs,
                 identity: Identity, round_index: int) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """:func:`sample_round` on a loaded model and tokenizer."""
    from lmforge.generation import (
        decode_completion,
        encode_prompt,
        generate_batch,
        resolve_pad_token_id,
        resolve_stop_token_ids,
    )

    started = time.perf_counter()
    stop_ids = resolve_stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    pad_id = resolve_pad_token_id(tokenizer, stop_ids)
    context = getattr(model.config, "max_position_embeddings", None)
    origin = f"{SOURCE}:round{round_index}"
    encoded = [(item, encode_prompt(tokenizer, item["messages"], chat=True)) for item in items]
    fits = [(item, ids) for item, ids in encoded if context is None or len(ids) + args.max_new_tokens <= context]
    samples: dict[str, tuple[list[list[int]], int]] = {}  # item id -> (k new-token lists, batch seed)
    per_batch = max(1, args.sample_batch_size // args.k)
    for start in range(0, len(fits), per_batch):
        batch = fits[start:start + per_batch]
        seed = _batch_seed(args.seed, round_index, [item["id"] for item, _ in batch])
        rows = generate_batch(model, [ids for _, ids in batch for _ in range(args.k)],
                              max_new_tokens=args.max_new_tokens, stop_ids=stop_ids, pad_id=pad_id, do_sample=True,
                              temperature=args.temperature, top_k=args.top_k, seed=seed)
        for i, (item, _) in enumerate(batch):
            samples[item["id"]] = (rows[i * args.k:(i + 1) * args.k], seed)

    pairs: list[dict] = []
    records: list[dict] = []
    per_item: list[tuple[Mapping[str, Any], list[float], str | None]] = []
    for item, _ in encoded:
        if item["id"] not in samples:
            records.append(_record(item, round_index, None, None, skipped="long_prompt"))
            per_item.append((item, [], "long_prompt"))
            continue
        new_ids, seed = samples[item["id"]]
        answers = [decode_completion(tokenizer, row, stop_ids)[0] for row in new_ids]
        scored = [explain_reward(item, a, identity) for a in answers]
        rewards = [s.reward for s in scored]
        best = max(range(len(rewards)), key=lambda j: (rewards[j], -j))  # ties: the first sample
        worst = min(range(len(rewards)), key=lambda j: (rewards[j], j))
        skipped = None
        if rewards[best] - rewards[worst] < args.min_margin or rewards[best] == rewards[worst]:
            skipped = "no_margin"
        elif not answers[best].strip():
            skipped = "empty_chosen"
        else:
            pairs.append(_pair(item, answers[best], answers[worst], rewards[best], rewards[worst], scored[best].kind,
                               len(answers), origin, round_index))
        for j, (answer, s) in enumerate(zip(answers, scored, strict=True)):
            role = None if skipped else "chosen" if j == best else "rejected" if j == worst else None
            records.append(_record(item, round_index, j, answer, reward=s, role=role, skipped=skipped,
                                   new_tokens=len(new_ids[j]), seed=seed))
        per_item.append((item, rewards, skipped))
    new_tokens = sum(len(row) for rows, _ in samples.values() for row in rows)
    stats = _round_stats(per_item, len(pairs))
    stats.update({"round": round_index, "samples": sum(len(r) for _, r, _ in per_item), "new_tokens": new_tokens,
                  "seconds": round(time.perf_counter() - started, 3)})
    logger.info("on-policy round %d: %d prompts -> %d pairs, %d skipped %s (%d samples, %d tokens, %.1f s)",
                round_index, stats["prompts"], stats["pairs"], stats["skipped"], stats["skipped_by_reason"],
                stats["samples"], new_tokens, stats["seconds"])
    return pairs, records, stats


def _pair(item: Mapping[str, Any], chosen: str, rejected: str, r_chosen: float, r_rejected: float, kind: str,
          candidates: int, origin: str, round_index: int) -> dict[str, Any]:
    """A preference pair record (the schema of ``lmforge.data.preferences``)."""
    return {"id": f"{SOURCE}-r{round_index}-{item['id']}", "source": SOURCE, "category": item["category"],
            "language": item.get("language"), "prompt": [dict(m) for m in item["messages"]],
            "chosen": chosen, "rejected": rejected, "origin": origin,
            "scores": {"chosen": r_chosen, "rejected": r_rejected, "reward": kind, "candidates": candidates}}


def _record(item: Mapping[str, Any], round_index: int, sample: int | None, answer: str | None, *,
            reward: Any = None, role: str | None = None, skipped: str | None = None, new_tokens: int = 0,
            seed: int | None = None) -> dict[str, Any]:
    """One candidate (or one prompt that was not sampled) as a JSON row of the round's records."""
    return {"round": round_index, "item_id": item["id"], "category": item["category"], "language": item.get("language"),
            "prompt": item["messages"][-1]["content"], "reference": item.get("reference"), "sample": sample,
            "seed": seed, "answer": answer, "new_tokens": new_tokens,
            "reward": None if reward is None else reward.reward, "reward_kind": None if reward is None else reward.kind,
            "why": None if reward is None else reward.detail, "role": role, "skipped": skipped}


def _round_stats(per_item: Sequence[tuple[Mapping[str, Any], list[float], str | None]], pairs: int) -> dict[str, Any]:
    """Counts that reconcile (prompts = pairs + skipped, per category too) and the rewards seen."""
    def summary(rows: Sequence[tuple[Mapping[str, Any], list[float], str | None]]) -> dict[str, Any]:
        sampled = [r for _, r, _ in rows if r]
        flat = [x for r in sampled for x in r]
        return {"prompts": len(rows), "pairs": sum(s is None for _, _, s in rows),
                "skipped": sum(s is not None for _, _, s in rows),
                "mean_reward": sum(flat) / len(flat) if flat else 0.0,
                "mean_best_reward": sum(max(r) for r in sampled) / len(sampled) if sampled else 0.0,
                "mean_margin": sum(max(r) - min(r) for r in sampled) / len(sampled) if sampled else 0.0}

    stats = summary(per_item)
    if stats["pairs"] != pairs or stats["prompts"] != stats["pairs"] + stats["skipped"]:
        raise AssertionError(f"on-policy counts do not reconcile: {stats} vs {pairs} pairs")
    reasons = Counter(s for _, _, s in per_item if s is not None)
    stats["skipped_by_reason"] = {r: reasons.get(r, 0) for r in SKIP_REASONS}
    categories = list(dict.fromkeys(item["category"] for item, _, _ in per_item))
    stats["by_category"] = {c: summary([row for row in per_item if row[0]["category"] == c]) for c in categories}
    return stats


# --- rounds ----------------------------------------------------------------------------------------------


def round_training_pairs(offline_pairs: Sequence[Mapping[str, Any]],
                         on_policy_pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What round ``r`` trains on: the offline pairs, then that round's on-policy pairs (ids must be unique)."""
    combined = [dict(p) for p in offline_pairs] + [dict(p) for p in on_policy_pairs]
    duplicates = [i for i, n in Counter(p["id"] for p in combined).items() if n > 1]
    if duplicates:
        raise ValueError(f"preference pair ids must be unique; repeated: {duplicates[:5]}")
    return combined


@dataclass
class RoundsResult:
    """What :func:`run_rounds` did."""

    model_dir: str
    """The last round's trained model (the start model when ``rounds`` is 0)."""
    pairs: list[dict] = field(default_factory=list)
    """Every on-policy pair of every round (the artifact), in round order."""
    records: list[dict] = field(default_factory=list)
    """Every candidate of every round, with its reward and role."""
    stats: list[dict] = field(default_factory=list)
    """Per round: ``sample_round``'s stats."""


def run_rounds(start_model_dir: str | Path, conversations: Sequence[Mapping[str, Any]], args: OnPolicyArgs,
               identity: Identity, train: Callable[[int, str, list[dict]], str], *,
               offline_pairs: Sequence[Mapping[str, Any]] = (), tokenizer_dir: str | Path | None = None,
               ) -> RoundsResult:
    """``args.rounds`` rounds: round ``r`` samples from round ``r-1``'s model (round 1 from ``start_model_dir``),
    then ``train(r, policy_dir, pairs) -> new model dir`` trains on :func:`round_training_pairs`.

    With ``rounds`` 0 the caller trains on the offline pairs itself; this returns the start model.
    """
    result = RoundsResult(model_dir=str(start_model_dir))
    per = args.per_category(args.prompts_per_round)
    for r in range(1, args.rounds + 1):
        items = prompts_from_conversations(conversations, args.categories, per, args.seed + r - 1)
        pairs, records, stats = sample_round(result.model_dir, items, args, identity, r, tokenizer_dir=tokenizer_dir)
        result.pairs += pairs
        result.records += records
        result.stats.append(stats)
        result.model_dir = str(train(r, result.model_dir, round_training_pairs(offline_pairs, pairs)))
    return result


# --- win rate ---------------------------------------------------------------------------------------------


def win_rate(model_a: str | Path, model_b: str | Path, items: Sequence[Mapping[str, Any]], identity: Identity, *,
             max_new_tokens: int, batch_size: int = 8, threads: int = 1, tokenizer_dir: str | Path | None = None,
             tokenizer_dir_b: str | Path | None = None) -> dict[str, Any]:
    """Win rate of model A over model B on ``items``: greedy answers, one reward each, win = A's reward is
    higher, a tie counts half. Returns ``{win_rate, wins, ties, losses, items, mean_reward_a, mean_reward_b,
    by_category: {category: the same}, rows: [per-item answers and rewards]}``; unscored items are left out."""
    from lmforge.generation import generate, load_model_and_tokenizer

    scored = [it for it in items if reward_kind(it) != "unscored"]
    prompts = [it["messages"] for it in scored]
    answers = []
    for model_dir, tok_dir in ((model_a, tokenizer_dir), (model_b, tokenizer_dir_b or tokenizer_dir)):
        model, tokenizer = load_model_and_tokenizer(model_dir, tok_dir)
        with torch_threads(threads):
            answers.append([c.text for c in generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                                     engine="batched", batch_size=batch_size)])
        del model
    rows = []
    for item, a, b in zip(scored, answers[0], answers[1], strict=True):
        ra, rb = explain_reward(item, a, identity), explain_reward(item, b, identity)
        outcome = "tie" if abs(ra.reward - rb.reward) < 1e-9 else "a" if ra.reward > rb.reward else "b"
        rows.append({"item_id": item["id"], "category": item["category"], "language": item.get("language"),
                     "prompt": item["messages"][-1]["content"], "reference": item.get("reference"),
                     "answer_a": a, "answer_b": b, "reward_a": ra.reward, "reward_b": rb.reward,
                     "reward_kind": ra.kind, "why_a": ra.detail, "why_b": rb.detail, "winner": outcome})
    result = _win_summary(rows)
    result["by_category"] = {c: _win_summary([r for r in rows if r["category"] == c])
                             for c in dict.fromkeys(r["category"] for r in rows)}
    result["rows"] = rows
    logger.info("win rate A over B: %.3f on %d items (%d wins, %d ties, %d losses)", result["win_rate"],
                result["items"], result["wins"], result["ties"], result["losses"])
    return result


def _win_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    wins, ties = sum(r["winner"] == "a" for r in rows), sum(r["winner"] == "tie" for r in rows)
    return {"win_rate": (wins + 0.5 * ties) / n if n else 0.5, "wins": wins, "ties": ties, "losses": n - wins - ties,
            "items": n, "mean_reward_a": sum(r["reward_a"] for r in rows) / n if n else 0.0,
            "mean_reward_b": sum(r["reward_b"] for r in rows) / n if n else 0.0}


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's CPU thread count set to ``threads`` inside the block, restored after (0: left alone)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _digest(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def _batch_seed(seed: int, round_index: int, item_ids: Sequence[str]) -> int:
    """The sampling seed of one batch: a function of (seed, round, the batch's item ids)."""
    return int(_digest(seed, f"{round_index}\0" + "\0".join(item_ids))[:12], 16)
