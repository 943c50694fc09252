"""Nodes of the tokenizer pipeline."""

from __future__ import annotations

import tempfile
from typing import Any


def _split_texts(clean_documents: dict[str, Any], params: dict[str, Any]) -> dict[str, list[str]]:
    from lmforge.data.process import iter_records
    from lmforge.data.splits import assign_split

    shards = params.get("shards", {})
    fraction, seed = shards.get("validation_fraction", 0.05), shards.get("split_seed", 0)
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    for record in iter_records(clean_documents):
        splits[assign_split(record["id"], fraction, seed)].append(record["text"])
    return splits


def train_tokenizer(clean_documents: dict[str, Any], params: dict[str, Any]) -> tuple[str, dict]:
    """Train sentencepiece on the TRAIN split, export it with the chat template, prove HF parity on validation."""
    from lmforge.data.decontamination import measure_split_overlap
    from lmforge.tokenizer.artifact import build_tokenizer_dir, load_tokenizer, measure_tokenizer
    from lmforge.tokenizer.export import ParityError, verify_hf_parity
    from lmforge.tokenizer.train import TokenizerConfig

    splits = _split_texts(clean_documents, params)
    out_dir = tempfile.mkdtemp(prefix="lmforge-tokenizer-")
    info = build_tokenizer_dir(splits["train"], TokenizerConfig.from_dict(params.get("train", {})), out_dir,
                               chat_template=params["chat_template"],
                               model_max_length=params.get("model_max_length", 2048))
    tok, _ = load_tokenizer(out_dir)
    parity = verify_hf_parity(out_dir, splits["validation"])
    if parity["hf_parity_mismatches"] and params.get("require_hf_parity", True):
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

    shards = params.get("shards", {})
    out_dir = tempfile.mkdtemp(prefix="lmforge-tokens-")
    counts = build_token_shards_dir(_split_texts(clean_documents, params), tokenizer, out_dir,
                                    seq_len=shards.get("seq_len", 256),
                                    blocks_per_shard=shards.get("blocks_per_shard", 4096),
                                    num_proc=shards.get("num_proc", 2))
    return out_dir, {**train_metrics, **counts}
