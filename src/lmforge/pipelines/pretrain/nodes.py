"""Nodes of the pretrain pipeline: the stage's typed config, the corpus re-tokenized for a base model, the job.

``build_pretrain_config`` turns ``params:pretrain`` into ``PretrainConfig`` once (typos rejected by their
dotted path); the other nodes take that object. With ``pretrain.base_model`` null (the default chain)
``tokenize_for_base_model`` writes only a note saying so and ``pretrain_model`` trains the preset on the
tokenizer stage's ``token_shards`` exactly as before; with a base model it re-tokenizes the cleaned
corpus with that model's own tokenizer (same split and block length as the tokenizer stage:
``tokenizer.shards``) and the job continues pretraining the model on those shards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.locks import owned_tempdir

if TYPE_CHECKING:
    from lmforge.training.pretrain_config import PretrainConfig

# What the pretrain_token_shards folder holds when no base model is set (the stage still writes its output).
NOT_BUILT_FILE = "not_built.json"


def build_pretrain_config(params: dict[str, Any]) -> PretrainConfig:
    """``params:pretrain`` as a ``PretrainConfig``: every default filled in, unknown keys an error; a base
    model is checked here, before anything runs (remote code refused unless ``pretrain.trust_remote_code``)."""
    from lmforge.config import build_dataclass
    from lmforge.training.pretrain_config import PretrainConfig

    config = build_dataclass(PretrainConfig, params, path="pretrain")
    if config.base_model:
        from lmforge.model.base_model import check_base_model

        check_base_model(config.base_model, trust_remote_code=config.trust_remote_code, where="pretrain.base_model")
    return config


def tokenize_for_base_model(clean_documents: dict[str, Any], config: PretrainConfig,
                            tokenizer_params: dict[str, Any]) -> tuple[str, dict]:
    """The cleaned corpus as token shards of ``pretrain.base_model``'s own tokenizer (or a note: none set)."""
    from lmforge.config import build_dataclass
    from lmforge.tokenizer.config import TokenizerConfig

    out_dir = str(owned_tempdir("lmforge-pretrain-tokens-"))
    if not config.base_model:
        note = {"base_model": None, "reason": "pretrain.base_model is null: the preset trains on the tokenizer "
                                              "stage's token_shards"}
        Path(out_dir, NOT_BUILT_FILE).write_text(json.dumps(note, indent=1) + "\n", encoding="utf-8")
        return out_dir, {}

    from lmforge.data.documents import iter_records
    from lmforge.data.splits import split_record_texts
    from lmforge.tokenizer.hf_encoder import build_model_token_shards_dir

    tokenizer_config = build_dataclass(TokenizerConfig, tokenizer_params, path="tokenizer")
    shards = tokenizer_config.shards
    splits = split_record_texts(iter_records(clean_documents), shards.validation_fraction, shards.split_seed)
    counts = build_model_token_shards_dir(splits, config.base_model, out_dir, seq_len=shards.seq_len,
                                          blocks_per_shard=shards.blocks_per_shard, executor=tokenizer_config.executor,
                                          trust_remote_code=config.trust_remote_code)
    # the hash evaluation needs to find these shards for a model: lmforge.tokenizer.hf_encoder.hf_tokenizer_sha256
    return out_dir, {f"tokens.{key}": value for key, value in counts.items() if key != "bos_id"}


def pretrain_model(token_shards: str, pretrain_token_shards: str, tokenizer: str, deepspeed_templates: dict[str, Any],
                   token_counts: dict, config: PretrainConfig) -> tuple[str, dict, list[dict]]:
    """Run the pretraining job: the preset on ``token_shards``, or the base model on its own shards."""
    from lmforge.training.jobs import run_pretraining

    if config.base_model:
        checkpoint, metrics, curve = run_pretraining(pretrain_token_shards, None, deepspeed_templates, config)
        return checkpoint, {**metrics, **token_counts}, curve
    checkpoint, metrics, curve = run_pretraining(token_shards, tokenizer, deepspeed_templates, config)
    return checkpoint, {**metrics, **training_tokens_by_language(token_shards)}, curve


def training_tokens_by_language(token_shards: str) -> dict[str, Any]:
    """``{"shards": {"by_language": {group: {documents, tokens, token_share}}}}`` of the shards' train split,
    as the tokenizer stage recorded them in the shard index (empty for shards written without labels).

    Under ``shards`` (MLflow ``pretrain.shards.by_language...``): the MLflow compare view lists a run's
    metrics sorted and renders only the first rows, where the loss keys must stay."""
    from lmforge.tokenizer.metrics import summarize_token_counts
    from lmforge.tokenizer.shards import read_token_counts

    rows = read_token_counts(token_shards, "train")
    return {"shards": {"by_language": summarize_token_counts(rows)["by_language"]}} if rows else {}
