"""Assign documents to train/validation splits from a hash of their id.

The split of a document depends only on (seed, id), never on input order or on
the other documents, so adding data does not move existing documents between
splits and two machines agree. `split_documents` adds one guarantee on top: with
a fraction strictly between 0 and 1 and at least 2 documents, neither split is
empty (it moves the single document closest to the boundary when needed).

The seed has no default here: each caller's config owns it (the tokenizer stage's
`tokenizer.shards.split_seed`, SFT's `sft.data.seed`), so a split default exists once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping

from lmforge.data.documents import Document

SPLITS = ("train", "validation")


def hash_unit_interval(doc_id: str, seed: int) -> float:
    """Map (seed, doc_id) to a float in [0, 1), uniformly and deterministically."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_fraction(validation_fraction: float) -> None:
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")


def assign_split(doc_id: str, validation_fraction: float, seed: int) -> str:
    """Return "validation" if hash(seed, doc_id) falls below validation_fraction, else "train"."""
    _check_fraction(validation_fraction)
    return "validation" if hash_unit_interval(doc_id, seed) < validation_fraction else "train"


def split_documents(docs: Iterable[Document], validation_fraction: float, seed: int) -> dict[str, list[Document]]:
    """Split docs into {"train": [...], "validation": [...]}, each in input order.

    With validation_fraction > 0 and at least 2 documents, validation is never empty:
    if no hash falls below the fraction, the document with the smallest hash moves
    there (and symmetrically train keeps the largest hash). Only then can a document's
    split differ from `assign_split`.
    """
    _check_fraction(validation_fraction)
    docs = list(docs)
    keys = [hash_unit_interval(doc.id, seed) for doc in docs]
    in_validation = [key < validation_fraction for key in keys]
    if validation_fraction > 0 and len(docs) >= 2:
        if not any(in_validation):
            in_validation[keys.index(min(keys))] = True
        if all(in_validation):
            in_validation[keys.index(max(keys))] = False
    return {
        "train": [doc for doc, val in zip(docs, in_validation, strict=True) if not val],
        "validation": [doc for doc, val in zip(docs, in_validation, strict=True) if val],
    }


def split_record_texts(records: Iterable[Mapping], validation_fraction: float, seed: int) -> dict[str, list[str]]:
    """Texts of document records ({"id", "text", ...}) by `assign_split` of their id, each in input order.

    The tokenizer stage's split: the tokenizer trains on "train" and the token shards hold both.
    """
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for record in records:
        splits[assign_split(record["id"], validation_fraction, seed)].append(record["text"])
    return splits


def iter_split_texts(records: Iterable[Mapping], split: str, validation_fraction: float, seed: int) -> Iterator[str]:
    """Texts of the records `split_record_texts` puts in ``split``, streamed (evaluation reads the validation
    split of the cleaned documents without holding the corpus)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for record in records:
        if assign_split(record["id"], validation_fraction, seed) == split:
            yield record["text"]
