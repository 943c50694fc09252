"""Nodes of the align pipeline.

``build_align_config`` turns ``params:align`` into the typed ``AlignConfig`` once (typos rejected by their
dotted path); the other nodes take that object (the ``align_config`` memory dataset). Who the assistant is,
its chat template and remote-code permission come from ``params:sft`` (one place for each).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.align.config import AlignConfig


def build_align_config(params: dict[str, Any]) -> AlignConfig:
    """``params:align`` as an ``AlignConfig``: every default filled in, unknown keys an error."""
    from lmforge.align.config import AlignConfig
    from lmforge.config import build_dataclass
    from lmforge.tracking import log_config

    config = build_dataclass(AlignConfig, params, path="align")
    log_config(config, "align")
    return config


def _sft(sft_params: dict[str, Any]) -> Any:
    from lmforge.config import build_dataclass
    from lmforge.training.sft_config import SftConfig

    return build_dataclass(SftConfig, sft_params, path="sft")


def build_preference_pairs(config: AlignConfig, sft_params: dict[str, Any]) -> tuple[list[dict], list[dict], dict]:
    """The offline pairs (``align.sources`` files, the built-in identity pairs), quarantined records and counts."""
    from lmforge.align.stage import build_offline_pairs

    return build_offline_pairs(config, _sft(sft_params).identity)


def align_model(offline_pairs: list[dict], source_quarantine: list[dict], train_conversations: list[dict],
                validation_conversations: list[dict], sft_checkpoint: str, tokenizer: str,
                deepspeed_templates: dict[str, Any], data_stats: dict, sft_params: dict[str, Any],
                config: AlignConfig) -> tuple[str, dict, list[dict], list[dict], list[dict], list[dict]]:
    """Preference-tune the SFT model over ``align.on_policy.rounds`` rounds (or write the disabled marker).

    The quarantine it writes holds the records the readers refused and the pairs tokenization refused.
    """
    from lmforge.align.stage import align_model as run
    from lmforge.training.jobs import resolve_templates

    sft = _sft(sft_params)
    checkpoint, metrics, curve, pairs, samples, quarantine = run(
        offline_pairs, train_conversations, validation_conversations, sft_checkpoint, tokenizer,
        resolve_templates(deepspeed_templates), config, identity=sft.identity, chat_template=sft.chat_template,
        trust_remote_code=sft.trust_remote_code)
    return checkpoint, {**metrics, "data": data_stats}, curve, pairs, samples, [*source_quarantine, *quarantine]
