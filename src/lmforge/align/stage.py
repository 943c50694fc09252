"""The align stage end to end: offline pairs, on-policy rounds, one DeepSpeed job per round, and the win rate.

What the Kedro nodes call (``pipelines/align/nodes.py``), with the stage's typed ``AlignConfig``:

- ``build_offline_pairs``: the preference files of ``align.sources`` (``lmforge.data.preferences``) and the
  built-in identity pairs (chosen: the ``sft.identity`` answer; rejected: a claim to be another assistant),
  with the quarantined records and the counts per source.
- ``align_model``: the offline pairs are split by prompt into training and held-out pairs
  (``align.validation_fraction``). Then ``align.on_policy.rounds`` rounds, each: sample ``k`` answers from the
  current policy (round 1: the SFT model) for held-in prompts of the SFT training conversations, score them
  with a verifiable reward and pair best vs worst (``lmforge.align.on_policy``); train on the offline and
  that round's pairs (``lmforge.training.jobs.run_align``: the round's own run directory, its checkpoints and
  exact resume; a round finished before a kill is reused, not retrained); the round's output is the next
  round's policy and reference. After the last round: the win rate of the aligned model over the SFT model
  on held-out prompts (the SFT validation conversations) under the same rewards.

Every pair trained on is returned with its origin and scores (``align_pairs``), every sampled candidate with
its reward (``align_samples``: what was preferred and why). ``pairs_sha256`` (the content hash of the pairs
of every round) goes into the metrics, the model card and the registered version's tags.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.align.config import DISABLED_MARKER, AlignConfig

if TYPE_CHECKING:
    from lmforge.data.identity import IdentityConfig

logger = logging.getLogger(__name__)


def build_offline_pairs(config: AlignConfig, identity: IdentityConfig) -> tuple[list[dict], list[dict], dict]:
    """(pairs, quarantined records, stats): the preference files, then the built-in identity pairs."""
    from lmforge.data.preferences import build_identity_pairs, read_preference_sources

    if not config.enabled:
        return [], [], {"enabled": False}
    pairs, quarantine, stats = read_preference_sources(config.sources)
    if config.identity_pairs:
        identity_pairs = build_identity_pairs(identity, languages=tuple(config.identity_languages))
        pairs += identity_pairs
        stats = {**stats, "identity": {"read": len(identity_pairs), "kept": len(identity_pairs), "quarantined": 0}}
    return pairs, quarantine, {"offline_pairs": len(pairs), "quarantined": len(quarantine), "sources": stats}


def write_disabled(directory: Path) -> str:
    """The checkpoint directory of a disabled stage: only the marker that says so."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    (directory / DISABLED_MARKER).write_text(
        "# align disabled\n\n`align.enabled` was false when this stage ran: evaluation, the quality gate and\n"
        "packaging use the SFT model (`lmforge.align.chat_model.resolve_chat_model`).\n", encoding="utf-8")
    return str(directory)


def align_model(offline_pairs: Sequence[Mapping[str, Any]], train_conversations: Sequence[Mapping[str, Any]],
                heldout_conversations: Sequence[Mapping[str, Any]], sft_checkpoint: str, tokenizer_dir: str,
                templates: Mapping[str, Any], config: AlignConfig, *, identity: IdentityConfig,
                chat_template: str | None = None,
                trust_remote_code: bool = False) -> tuple[str, dict[str, Any], list[dict], list[dict], list[dict], list[dict]]:
    """Run the rounds; returns (checkpoint, metrics, loss curve, pairs trained on, sampled candidates, pairs
    quarantined by tokenization)."""
    from lmforge.align.data import pairs_sha256, split_pairs, tokenize_pairs
    from lmforge.align.on_policy import heldout_items, run_rounds, win_rate
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.training.jobs import run_align

    run_root = Path(config.run_dir).resolve()
    if not config.enabled:
        logger.info("align: disabled (align.enabled: false): evaluation and packaging take the SFT model")
        return write_disabled(run_root / "disabled"), {"enabled": False}, [], [], [], []
    chat = ChatTokenizer.for_model(sft_checkpoint, tokenizer_dir, chat_template=chat_template,
                                   trust_remote_code=trust_remote_code)
    tokenize = {"max_length": config.max_length, "max_prompt_length": config.max_prompt_length}
    train_pairs, heldout_pairs = split_pairs(list(offline_pairs), config.validation_fraction, config.split_seed)
    heldout_examples, heldout_quarantine, _ = tokenize_pairs(heldout_pairs, chat, **tokenize) if heldout_pairs \
        else ([], [], {})
    trained: list[dict] = []
    curve: list[dict] = []
    rounds: list[dict[str, Any]] = []
    quarantine: list[dict] = list(heldout_quarantine)
    last_metrics: dict[str, Any] = {}

    def train(index: int, policy: str, pairs: list[dict]) -> str:
        """One round's DeepSpeed job on ``pairs`` from ``policy``; its output is the next round's policy."""
        examples, dropped, token_stats = tokenize_pairs(pairs, chat, **tokenize)
        quarantine.extend({**q, "round": index} for q in dropped)
        offset = config.train.max_steps * (index - 1)
        checkpoint, metrics, round_curve = run_align(
            examples, heldout_examples, policy, chat, templates, replace(config, run_dir=str(run_root / f"round_{index}")),
            log_step_offset=offset, trust_remote_code=trust_remote_code)
        curve.extend({**row, "step": row["step"] + offset, "round": index} for row in round_curve)
        kept = {ex["id"] for ex in examples}
        trained.extend({**p, "round": index} for p in pairs if p["id"] in kept)
        rounds.append({"round": index, "pairs": len(examples), "on_policy_pairs": sum(p.get("source") == "on_policy"
                                                                                    for p in pairs if p["id"] in kept),
                       "tokenization": token_stats,
                       **{k: metrics.get(k) for k in ("initial_loss", "final_loss", "heldout", "heldout_initial",
                                                      "train_time_s")}})
        last_metrics.clear()
        last_metrics.update(metrics)
        return checkpoint

    args = config.on_policy
    if args.rounds == 0:  # offline pairs only
        final, samples, sampling = train(1, sft_checkpoint, list(train_pairs)), [], []
    else:
        done = run_rounds(sft_checkpoint, train_conversations, args, identity, train, offline_pairs=train_pairs)
        final, samples, sampling = done.model_dir, done.records, done.stats
    for info, stats in zip(rounds, sampling, strict=False):
        info["sampling"] = stats
    items = heldout_items(heldout_conversations, args) if args.heldout_prompts else []
    wins = win_rate(final, sft_checkpoint, items, identity, max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size, threads=args.threads) if items else {}
    samples = [*samples, *({"kind": "win_rate", **row} for row in wins.get("rows", []))]
    result = {
        **{k: v for k, v in last_metrics.items() if k not in ("heldout", "heldout_initial", "pairs", "heldout_pairs")},
        "enabled": True, "method": config.loss.method, "beta": config.loss.beta, "rounds": len(rounds),
        "offline_pairs": len(offline_pairs), "train_pairs": len(train_pairs), "heldout_pairs": len(heldout_examples),
        "pairs_trained": len(trained), "quarantined": len(quarantine), "pairs_sha256": pairs_sha256(trained),
        "heldout": rounds[-1].get("heldout") or {}, "heldout_initial": rounds[0].get("heldout_initial") or {},
        "win_rate": {"vs_sft": wins.get("win_rate"), **{k: v for k, v in wins.items() if k not in ("win_rate", "rows")}},
        "by_round": rounds,
    }
    logger.info("align: %d round(s), %d pairs, held-out preference accuracy %s, win rate vs SFT %s",
                len(rounds), len(trained), result["heldout"].get("preference_accuracy"), result["win_rate"]["vs_sft"])
    return final, result, curve, trained, samples, quarantine
