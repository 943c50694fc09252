"""Nodes of the tokenizer pipeline.

Each node turns ``params:tokenizer`` into the stage's one typed config (`TokenizerConfig`, typos
rejected, defaults from the dataclass) and passes it down whole.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.tokenizer.config import TokenizerConfig


def build_config(params: dict[str, Any]) -> TokenizerConfig:
    """``params:tokenizer`` as the typed stage config, logged to the active MLflow run as flat params."""
    from lmforge.config import build_dataclass
    from lmforge.tokenizer.config import TokenizerConfig
    from lmforge.tracking import log_config

    config = build_dataclass(TokenizerConfig, params, path="tokenizer")
    log_config(config, "tokenizer")
    return config


def split_texts(clean_documents: dict[str, Any], config: TokenizerConfig) -> dict[str, list[str]]:
    """Texts of the clean documents by train/validation split (by document id: `tokenizer.shards`)."""
    from lmforge.data.documents import iter_records
    from lmforge.data.splits import split_record_texts

    return split_record_texts(iter_records(clean_documents), config.shards.validation_fraction,
                              config.shards.split_seed)


def train_tokenizer(clean_documents: dict[str, Any], params: dict[str, Any]) -> tuple[str, dict]:
    """Train sentencepiece on the TRAIN split, export it with the chat template, prove HF parity on validation."""
    from lmforge.data.decontamination import measure_split_overlap
    from lmforge.tokenizer.artifact import build_tokenizer_dir, load_tokenizer, measure_tokenizer
    from lmforge.tokenizer.export import ParityError, verify_hf_parity

    config = build_config(params)
    splits = split_texts(clean_documents, config)
    out_dir = tempfile.mkdtemp(prefix="lmforge-tokenizer-")
    info = build_tokenizer_dir(splits["train"], config, out_dir)
    tok, _ = load_tokenizer(out_dir)
    parity = verify_hf_parity(out_dir, splits["validation"])
    if parity["hf_parity_mismatches"] and config.require_hf_parity:
        raise ParityError(f"the exported HF tokenizer differs from sentencepiece on {parity['hf_parity_mismatches']} of "
                          f"{parity['hf_parity_texts']} validation documents ({'; '.join(parity['hf_parity_examples'])});"
                          " set tokenizer.require_hf_parity: false to accept it (e.g. for unigram models)")
    parity.pop("hf_parity_examples")
    # Held-out contamination is measured where the split is made (see lmforge.data.decontamination).
    overlap = measure_split_overlap(splits["train"], splits["validation"])
    return out_dir, {**info, **measure_tokenizer(splits["validation"], tok), **parity, **overlap}


def build_token_shards(clean_documents: dict[str, Any], tokenizer: str, train_metrics: dict,
                       params: dict[str, Any]) -> tuple[str, dict]:
    """Encode and pack train/validation documents into memory-mapped token shards."""
    from lmforge.tokenizer.artifact import build_token_shards_dir

    config = build_config(params)
    out_dir = tempfile.mkdtemp(prefix="lmforge-tokens-")
    counts = build_token_shards_dir(split_texts(clean_documents, config), tokenizer, out_dir, config.shards)
    return out_dir, {**train_metrics, **counts}
