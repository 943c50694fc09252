"""Remove duplicate documents, keeping the first occurrence in input order.

Exact dedup hashes a fingerprint of each (already cleaned) text: sha256 of the text
with every run of whitespace collapsed to one space. Collapsing catches copies that
differ only in formatting (re-indented, re-wrapped, trailing blanks); the price is
that two Python files differing only in indentation count as duplicates, which is
rare and acceptable for a training corpus.

Every dedup stage returns a `DedupResult` whose removals name the kept document and
a similarity, so the MinHash `lmforge.data.dedup_minhash.near_dedup` (verified Jaccard,
reason "near_duplicate") sits beside `exact_dedup` and feeds the same quarantine and counts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from lmforge.data.documents import Document

logger = logging.getLogger(__name__)


@dataclass
class DedupResult:
    """What a dedup stage returns."""

    kept: list[Document]
    """Documents kept, in input order."""
    removed: list[dict]
    """One {"id", "kept_id", "similarity", "reason"} per removed document, in input order."""


def fingerprint_text(text: str) -> str:
    """Return the sha256 hex digest of text with whitespace runs collapsed to one space."""
    collapsed = " ".join(text.split())
    return hashlib.sha256(collapsed.encode("utf-8", errors="surrogatepass")).hexdigest()


def exact_dedup(docs: Iterable[Document]) -> DedupResult:
    """Keep the first document of each fingerprint; record each later copy as removed."""
    first_id_by_hash: dict[str, str] = {}
    kept: list[Document] = []
    removed: list[dict] = []
    for doc in docs:
        digest = fingerprint_text(doc.text)
        kept_id = first_id_by_hash.get(digest)
        if kept_id is None:
            first_id_by_hash[digest] = doc.id
            kept.append(doc)
        else:
            removed.append(
                {
                    "id": doc.id,
                    "kept_id": kept_id,
                    "similarity": 1.0,
                    "reason": "exact_duplicate",
                }
            )
    logger.info("Exact dedup: kept %d, removed %d", len(kept), len(removed))
    return DedupResult(kept=kept, removed=removed)
