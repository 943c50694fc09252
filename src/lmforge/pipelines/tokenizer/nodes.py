"""Nodes of the tokenizer pipeline.

Each node turns ``params:tokenizer`` into the stage's one typed config (`TokenizerConfig`, typos
rejected, defaults from the dataclass) and passes it down whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmforge.locks import owned_tempdir

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
    return split_texts_and_labels(clean_documents, config)[0]


def split_texts_and_labels(clean_documents: dict[str, Any], config: TokenizerConfig
                           ) -> tuple[dict[str, list[str]], dict[str, list[dict[str, str]]]]:
    """``split_texts`` and, in the same order, each document's language group, source and licence."""
    from lmforge.data.documents import iter_records
    from lmforge.data.splits import SPLITS, assign_split
    from lmforge.tokenizer.metrics import document_labels

    texts: dict[str, list[str]] = {name: [] for name in SPLITS}
    labels: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for record in iter_records(clean_documents):
        split = assign_split(record["id"], config.shards.validation_fraction, config.shards.split_seed)
        texts[split].append(record["text"])
        labels[split].append(document_labels(record))
    return texts, labels


def train_tokenizer(clean_documents: dict[str, Any], params: dict[str, Any]) -> tuple[str, dict]:
    """Train sentencepiece on the TRAIN split, export it with the chat template, prove HF parity on validation."""
    from lmforge.data.decontamination import measure_split_overlap
    from lmforge.tokenizer.artifact import build_tokenizer_dir, load_tokenizer, measure_tokenizer
    from lmforge.tokenizer.export import ParityError, verify_hf_parity
    from lmforge.tokenizer.metrics import measure_by_language

    config = build_config(params)
    splits, labels = split_texts_and_labels(clean_documents, config)
    out_dir = str(owned_tempdir("lmforge-tokenizer-"))
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
    by_language = measure_by_language(splits["validation"], [doc["language"] for doc in labels["validation"]], tok)
    return out_dir, {**info, **measure_tokenizer(splits["validation"], tok), **parity, **overlap,
                     "by_language": {group: {"validation": figures} for group, figures in by_language.items()}}


def build_token_shards(clean_documents: dict[str, Any], tokenizer: str, train_metrics: dict,
                       params: dict[str, Any]) -> tuple[str, dict]:
    """Encode and pack train/validation documents into memory-mapped token shards; the train tokens per
    language, source and licence join the held-out figures per language of ``train_metrics``."""
    from lmforge.tokenizer.artifact import build_token_shards_dir
    from lmforge.tokenizer.metrics import merge_by_language

    config = build_config(params)
    out_dir = str(owned_tempdir("lmforge-tokens-"))
    texts, labels = split_texts_and_labels(clean_documents, config)
    counts = build_token_shards_dir(texts, tokenizer, out_dir, config.shards, split_labels=labels,
                                    executor=config.executor)
    by_language = merge_by_language(train_metrics.get("by_language", {}), counts.pop("by_language"))
    return out_dir, {**train_metrics, **counts, "by_language": by_language}
