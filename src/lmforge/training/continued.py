"""Continued pretraining of a local Hugging Face causal LM (``pretrain.base_model``): the checks before the
job and the checkpoint's tokenizer and generation config after it.

The job itself is pretraining's (``training/pretrain.py`` loads ``init_from`` instead of building a preset;
same DeepSpeed launcher, checkpoints and resume). What differs is around it, and runs in the node's
process, never in the workers:

- before: ``check_base_model`` (remote code refused unless ``pretrain.trust_remote_code``, with the
  reason), the token shards must be the ones made with this model's own tokenizer (their
  ``tokenizer_sha256``, see ``lmforge.tokenizer.hf_encoder``), every id must fit the model's embedding
  and a block its positions;
- after: the exported checkpoint gets the base model's tokenizer, with its chat template where it has
  one (``ChatTokenizer.save``; a tokenizer without one is saved as it is, SFT may name a built-in
  template later), and the base model's ``generation_config.json`` (its EOS list, pad and BOS), so SFT,
  evaluation and serving read the model's own conventions from the checkpoint
  (``ChatTokenizer.for_model``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WHERE = "pretrain.base_model"


def check_continued_start(base_model: str, token_shards: str, *, trust_remote_code: bool) -> dict[str, Any]:
    """Refuse a base model lmforge may not or cannot train on these shards; return the shards' index."""
    from lmforge.model.base_model import check_base_model, check_vocab_fits, config_value
    from lmforge.tokenizer.hf_encoder import HFTextEncoder
    from lmforge.tokenizer.shards import TokenShards

    check_base_model(base_model, trust_remote_code=trust_remote_code, where=WHERE)
    encoder = HFTextEncoder(base_model, trust_remote_code=trust_remote_code)
    shards = TokenShards.open(token_shards, expected_tokenizer_sha256=encoder.sha256)
    config = check_vocab_fits(base_model, encoder.vocab_size, where=WHERE)
    positions = config_value(config, "max_position_embeddings")
    if positions is not None and shards.seq_len > positions:
        raise ValueError(f"{WHERE}: {base_model} takes at most {positions} positions but the token shards hold "
                         f"{shards.seq_len}-token blocks: lower tokenizer.shards.seq_len")
    return shards.index


def finish_continued_checkpoint(checkpoint: str | Path, base_model: str | Path, *, trust_remote_code: bool) -> dict:
    """Save the base model's tokenizer (with its chat template, if any) and generation config into ``checkpoint``.

    Returns what was saved: ``chat_template_sha256`` (None without a template) and ``end_of_turn``.
    """
    from transformers import AutoTokenizer, GenerationConfig

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    checkpoint, base_model = Path(checkpoint), Path(base_model)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model), local_files_only=True,
                                              trust_remote_code=trust_remote_code)
    saved: dict[str, Any] = {"chat_template_sha256": None, "end_of_turn": None}
    if getattr(tokenizer, "chat_template", None):
        chat = ChatTokenizer.load(base_model, model_dir=base_model, trust_remote_code=trust_remote_code)
        chat.save(checkpoint)
        saved.update(chat_template_sha256=chat.template_sha256, end_of_turn=chat.end_of_turn)
    else:
        logger.info("%s has no chat template: its tokenizer is saved as it is (name one with sft.chat_template)",
                    base_model)
        tokenizer.save_pretrained(str(checkpoint))
    if (base_model / "generation_config.json").is_file():  # the model's own stop ids, pad and bos, as shipped
        shutil.copyfile(base_model / "generation_config.json", checkpoint / "generation_config.json")
    else:
        config = json.loads((base_model / "config.json").read_text(encoding="utf-8"))
        generation = GenerationConfig(**{k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                                         if config.get(k) is not None})
        if generation.eos_token_id is None:
            generation.eos_token_id = tokenizer.eos_token_id
        generation.save_pretrained(str(checkpoint))
    return saved
