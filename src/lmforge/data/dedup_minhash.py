"""Near-duplicate removal with MinHash LSH, vectorised with numpy, every removal verified exactly.

A document's shingles are n-grams of its tokens, chosen per document by script:
- space-separated text and code: words, i.e. maximal runs of ASCII letters, digits, "_" or
  non-ASCII bytes of the UTF-8 text, lowercased (so punctuation and layout do not count);
  `shingle_size` words per shingle;
- Chinese and Japanese text (Han, kana: at least `cjk_min_share` of the letters of its first
  `_SCRIPT_SAMPLE_CHARS` characters), which has no spaces between words: every Han/kana character is
  a token of its own, Latin words stay whole and CJK punctuation is dropped; `cjk_shingle_size`
  tokens per shingle (character n-grams). A man page that is ~40% Latin option names still counts
  as CJK by its prose.
Everything after the split runs as whole-array numpy operations over a batch of documents:

1. token hashes: a polynomial hash of each token's bytes from one prefix sum over the batch
   (mod 2**64, position removed with inverse powers), then a splitmix64 finaliser;
2. shingle hashes: a random linear combination of n consecutive token hashes, finalised again;
   n-grams that would cross a document boundary are dropped. A document with fewer than n tokens
   has no shingles and is never a near-duplicate (exact dedup still sees it);
3. signatures: all permutations at once as (a * h + b) mod 2**64 over (shingles, permutations)
   uint64 blocks, reduced per document with `np.minimum.reduceat`;
4. LSH: each band of `rows` signature values is hashed to one key; documents sharing a key in any
   band become candidate pairs (all pairs of a bucket; in a very large bucket, each member with
   the bucket's first 64 members);
5. greedy selection, verified: documents are taken in input order; a document is removed only when
   the exact Jaccard similarity of its shingle set with an already KEPT candidate partner is at or
   above the threshold; the removal names that kept document (the most similar one, the first on a
   tie) and the similarity. So every removed document is at least `threshold` similar to the
   document the manifest names, and a chain A~B~C with A-C below the threshold keeps C
   (connected components would remove it: on three releases of one library, 9 of 360 removals
   were only 0.71-0.80 similar to their survivor). Precision against exact Jaccard is 1.0.

Same documents, same config (seed included) -> same result: nothing depends on PYTHONHASHSEED.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lmforge.data.dedup import DedupResult
from lmforge.data.documents import Document

logger = logging.getLogger(__name__)

_U64 = np.uint64
_WORD_POLY = 0x100000001B3  # FNV-64 prime, odd: invertible mod 2**64
_BATCH_BYTES = 4_000_000  # text bytes hashed per numpy batch (~32 bytes of temporaries per byte)
_BLOCK_SHINGLES = 8192  # shingles per (shingles, permutations) signature block
_MAX_BUCKET_PAIRS = 64  # buckets larger than this pair each member with their first 64 members only


@dataclass
class NearDedupConfig:
    """MinHash LSH near-duplicate removal (`data_processing.near_dedup`)."""

    enabled: bool = True
    """Run near-dedup after exact dedup in `process_corpus`."""
    shingle_size: int = 5
    """Words per shingle (word n-grams)."""
    num_perm: int = 128
    """MinHash permutations per signature; must equal bands * rows."""
    bands: int = 16
    """LSH bands. Probability that a pair of Jaccard s becomes a candidate: 1 - (1 - s**rows)**bands."""
    rows: int = 8
    """Signature values per band."""
    threshold: float = 0.8
    """Exact Jaccard similarity at or above which a verified pair is a near-duplicate."""
    seed: int = 42
    """Seed of the hash constants and permutations."""
    cjk_shingle_size: int = 5
    """Tokens per shingle of a Chinese/Japanese document, whose tokens are single Han/kana characters
    (character n-grams; Latin words inside it stay one token each)."""
    cjk_min_share: float = 0.3
    """A document is shingled by characters when Han + kana make at least this share of the letters
    (Han, kana, ASCII) of its first 5,000 characters; 1.0 or more: never (words only)."""

    def __post_init__(self) -> None:
        if self.shingle_size < 1:
            raise ValueError(f"near_dedup.shingle_size must be >= 1, got {self.shingle_size}")
        if self.bands < 1 or self.rows < 1 or self.bands * self.rows != self.num_perm:
            raise ValueError(
                f"near_dedup: bands * rows must equal num_perm, got {self.bands} * {self.rows} != {self.num_perm}"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"near_dedup.threshold must be in (0, 1], got {self.threshold}")
        if self.cjk_shingle_size < 1:
            raise ValueError(f"near_dedup.cjk_shingle_size must be >= 1, got {self.cjk_shingle_size}")
        if self.cjk_min_share < 0.0:
            raise ValueError(f"near_dedup.cjk_min_share must be >= 0, got {self.cjk_min_share}")


def _build_tables() -> tuple[np.ndarray, np.ndarray]:
    """Byte -> is-word-byte, and byte -> lowercased byte (+1, so no byte hashes as zero)."""
    is_word = np.zeros(256, dtype=bool)
    for lo, hi in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z")), (0x80, 0xFF)):
        is_word[lo : hi + 1] = True
    is_word[ord("_")] = True
    lower = np.arange(256, dtype=np.uint64)
    lower[ord("A") : ord("Z") + 1] += 32
    return is_word, lower + _U64(1)


_IS_WORD, _LOWER = _build_tables()

_CJK_CHAR = re.compile("[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# CJK symbols and punctuation, fullwidth forms that are not letters or digits, and other common
# non-ASCII punctuation: dropped from character-shingled text (they would glue to a token).
_CJK_PUNCT = re.compile("[\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
                        "\u2010-\u2027\u30fb\u00b7]")
_ASCII_LETTER = re.compile("[A-Za-z]")
_SCRIPT_SAMPLE_CHARS = 5000


def uses_character_shingles(text: str, config: NearDedupConfig) -> bool:
    """True when text is Chinese/Japanese enough (see `cjk_min_share`) to be shingled by characters."""
    sample = text[:_SCRIPT_SAMPLE_CHARS]
    if config.cjk_min_share > 1.0 or not _CJK_CHAR.search(sample):
        return False
    cjk = len(_CJK_CHAR.findall(sample))
    return cjk >= config.cjk_min_share * (cjk + len(_ASCII_LETTER.findall(sample)))


def character_tokens_text(text: str) -> str:
    """Return text with every Han/kana character spaced out and CJK punctuation removed.

    The word splitter then reads each CJK character as a token of its own and Latin words whole.
    """
    return _CJK_CHAR.sub(r" \g<0> ", _CJK_PUNCT.sub(" ", text))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Finalise 64-bit hashes in place (splitmix64): every input bit affects every output bit."""
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def _word_hashes(blob: bytes, doc_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (hash, document index) of every word of a batch of documents joined by b"\\n"."""
    b = np.frombuffer(blob, dtype=np.uint8)
    is_word = _IS_WORD[b]
    edges = np.diff(is_word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if starts.size == 0:
        return np.empty(0, _U64), np.empty(0, np.int64)
    # Polynomial hash sum_j v[j] * P**(j - start) over each word, from one prefix sum (wraps mod 2**64).
    powers = np.full(b.size, _WORD_POLY, dtype=_U64)
    powers[0] = 1
    np.cumprod(powers, out=powers)
    prefix = np.zeros(b.size + 1, dtype=_U64)
    np.cumsum(_LOWER[b] * powers, out=prefix[1:])
    inv_powers = np.full(b.size, pow(_WORD_POLY, -1, 1 << 64), dtype=_U64)  # P**-j, to take out P**start
    inv_powers[0] = 1
    np.cumprod(inv_powers, out=inv_powers)
    inv_start = inv_powers[starts]
    words = (prefix[ends] - prefix[starts]) * inv_start
    words += (ends - starts).astype(_U64)  # length, so "a" and "a\0" never collide trivially
    return _splitmix64(words), np.searchsorted(doc_ends, starts, side="right")


def _shingle_hashes(
    words: np.ndarray, word_docs: np.ndarray, n: int, coeffs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (hash, document index) of every n-gram of consecutive words inside one document."""
    count = words.size - n + 1
    if count <= 0:
        return np.empty(0, _U64), np.empty(0, np.int64)
    shingles = words[:count] * coeffs[0]
    for k in range(1, n):
        shingles += words[k : k + count] * coeffs[k]
    inside = word_docs[:count] == word_docs[n - 1 :]
    return _splitmix64(shingles[inside]), word_docs[:count][inside]


def _signatures(
    shingles: np.ndarray, shingle_docs: np.ndarray, n_docs: int, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Return the (n_docs, num_perm) MinHash signatures; documents without shingles stay at the maximum."""
    sig = np.full((a.size, n_docs), np.iinfo(np.uint64).max, dtype=_U64)  # (num_perm, docs) while filling
    block = np.empty((a.size, _BLOCK_SHINGLES), dtype=_U64)
    for lo in range(0, shingles.size, _BLOCK_SHINGLES):
        h = shingles[lo : lo + _BLOCK_SHINGLES]
        docs = shingle_docs[lo : lo + _BLOCK_SHINGLES]
        out = block[:, : h.size]
        np.multiply(a[:, None], h[None, :], out=out)  # (num_perm, shingles): every permutation at once
        out += b[:, None]
        seg = np.flatnonzero(np.diff(docs, prepend=-1))  # first shingle of each document in the block
        mins = np.minimum.reduceat(out, seg, axis=1)  # (num_perm, documents in the block)
        seg_docs = docs[seg]
        sig[:, seg_docs] = np.minimum(sig[:, seg_docs], mins)
    sig = np.ascontiguousarray(sig.T)  # (docs, num_perm)
    return sig


def _candidate_pairs(sig: np.ndarray, has_shingles: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """Return unique (i, j) pairs, i < j, of documents sharing a band key in any band."""
    rng = np.random.default_rng(seed + 1)
    mix = rng.integers(1, 1 << 63, size=rows, dtype=np.uint64) | _U64(1)
    docs = np.flatnonzero(has_shingles)
    pairs = []
    for band in range(bands):
        keys = _splitmix64((sig[docs, band * rows : (band + 1) * rows] * mix).sum(axis=1, dtype=_U64))
        order = np.argsort(keys, kind="stable")  # stable: input order inside a bucket
        sorted_keys = keys[order]
        same = sorted_keys[1:] == sorted_keys[:-1]
        if not same.any():
            continue
        # Buckets are runs of equal keys; pair all members of small ones; in a large one, pair every
        # member with the first _MAX_BUCKET_PAIRS members (linear, and a member whose earlier
        # partners were removed still meets the first, kept, members: a chain would not).
        bounds = np.flatnonzero(np.diff(np.concatenate(([False], same, [False])).astype(np.int8)))
        for lo, hi in zip(bounds[0::2], bounds[1::2] + 1, strict=True):
            members = docs[order[lo:hi]]
            if members.size <= _MAX_BUCKET_PAIRS:
                i, j = np.triu_indices(members.size, k=1)
                pairs.append(np.stack([members[i], members[j]], axis=1))
            else:
                head = members[:_MAX_BUCKET_PAIRS]
                pairs.append(np.stack([np.repeat(head, members.size), np.tile(members, head.size)], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    found = np.concatenate(pairs)
    found = found[found[:, 0] != found[:, 1]]
    found.sort(axis=1)
    return np.unique(found, axis=0)


def _jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted arrays of unique shingle hashes."""
    inter = np.intersect1d(x, y, assume_unique=True).size
    union = x.size + y.size - inter
    return inter / union if union else 1.0


def _shingle_batches(texts: Sequence[str], n: int, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shingle hashes, index in texts of each) of n-grams of the texts' tokens, in input order."""
    out_hashes, out_docs = [], []
    start = 0
    while start < len(texts):
        encoded, size, stop = [], 0, start
        while stop < len(texts) and (size < _BATCH_BYTES or not encoded):
            encoded.append(texts[stop].encode("utf-8", errors="surrogatepass"))
            size += len(encoded[-1]) + 1
            stop += 1
        doc_ends = np.cumsum([len(e) + 1 for e in encoded]) - 1  # offset of each separator
        words, word_docs = _word_hashes(b"\n".join(encoded), doc_ends)
        hashes, docs = _shingle_hashes(words, word_docs, n, coeffs)
        out_hashes.append(hashes)
        out_docs.append(docs + start)
        start = stop
    if not out_hashes:
        return np.empty(0, _U64), np.empty(0, np.int64)
    return np.concatenate(out_hashes), np.concatenate(out_docs)


def _shingle_coeffs(config: NearDedupConfig, n: int) -> np.ndarray:
    return np.random.default_rng(config.seed).integers(1, 1 << 63, size=n, dtype=np.uint64) | _U64(1)


def shingle_documents(texts: Sequence[str], config: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return (shingle hashes, document index of each), grouped by document in input order.

    Each document is shingled by words or, when `uses_character_shingles`, by CJK characters.
    """
    texts = list(texts)
    by_char = [i for i, text in enumerate(texts) if uses_character_shingles(text, config)]
    if not by_char:
        return _shingle_batches(texts, config.shingle_size, _shingle_coeffs(config, config.shingle_size))
    char_set = set(by_char)
    by_word = [i for i in range(len(texts)) if i not in char_set]
    parts = []
    for index, n, prepare in ((by_word, config.shingle_size, None),
                              (by_char, config.cjk_shingle_size, character_tokens_text)):
        if not index:
            continue
        group = [texts[i] if prepare is None else prepare(texts[i]) for i in index]
        hashes, docs = _shingle_batches(group, n, _shingle_coeffs(config, n))
        parts.append((hashes, np.asarray(index, dtype=np.int64)[docs]))
    hashes = np.concatenate([h for h, _ in parts])
    docs = np.concatenate([d for _, d in parts])
    order = np.argsort(docs, kind="stable")
    return hashes[order], docs[order]


def near_duplicate_pairs(texts: Sequence[str], config: NearDedupConfig) -> list[tuple[int, int, float]]:
    """Return every verified near-duplicate pair (i, j, exact Jaccard), i < j, Jaccard >= threshold."""
    sig, has_shingles, shingle_set = _shingle_sets(texts, config)
    return verify_candidate_pairs(sig, has_shingles, shingle_set, config)


def minhash_signatures(
    texts: Sequence[str], config: NearDedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (signatures (n, num_perm), has-shingles mask (n,), shingle hashes, document index of each).

    A document's signature depends on its text and the config only, so signatures of separate
    batches (shards) can be concatenated and clustered together by `cluster_near_duplicates`.
    """
    n = len(texts)
    shingles, shingle_docs = shingle_documents(texts, config)
    rng = np.random.default_rng(config.seed + 2)
    a = rng.integers(1, 1 << 63, size=config.num_perm, dtype=np.uint64) | _U64(1)
    b = rng.integers(0, 1 << 63, size=config.num_perm, dtype=np.uint64)
    sig = _signatures(shingles, shingle_docs, n, a, b)
    has_shingles = np.bincount(shingle_docs, minlength=n) > 0
    return sig, has_shingles, shingles, shingle_docs


def cluster_near_duplicates(
    sig: np.ndarray,
    has_shingles: np.ndarray,
    shingle_set: Callable[[int], np.ndarray],
    config: NearDedupConfig,
) -> tuple[list[tuple[int, int, float]], dict[int, tuple[int, float]]]:
    """LSH candidates, then greedy selection in input order with exact-Jaccard verification.

    Document j is removed when some kept document i < j among its candidate partners has exact
    Jaccard >= threshold with it; it names the most similar such i (the first on a tie). Pairs whose
    earlier member was removed are not verified (they cannot remove anything).
    shingle_set(i) returns document i's sorted unique shingle hashes (only called for candidates).
    Returns (the verified pairs (i, j, Jaccard >= threshold), {removed index: (kept index, Jaccard)}).
    """
    candidates = _candidate_pairs(sig, has_shingles, config.bands, config.rows, config.seed)
    partners: dict[int, list[int]] = {}
    for i, j in candidates.tolist():  # sorted by (i, j); i < j
        partners.setdefault(j, []).append(i)
    verified: list[tuple[int, int, float]] = []
    removed: dict[int, tuple[int, float]] = {}
    for j in sorted(partners):
        best: tuple[int, float] | None = None
        for i in partners[j]:
            if i in removed:
                continue
            sim = _jaccard(shingle_set(i), shingle_set(j))
            if sim >= config.threshold:
                verified.append((i, j, sim))
                if best is None or sim > best[1]:
                    best = (i, sim)
        if best is not None:
            removed[j] = best
    logger.debug("near dedup: %d candidate pairs, %d verified", len(candidates), len(verified))
    return verified, removed


def verify_candidate_pairs(
    sig: np.ndarray, has_shingles: np.ndarray, shingle_set: Callable[[int], np.ndarray], config: NearDedupConfig
) -> list[tuple[int, int, float]]:
    """Every LSH candidate pair (i, j, Jaccard), i < j, whose exact Jaccard is >= threshold."""
    candidates = _candidate_pairs(sig, has_shingles, config.bands, config.rows, config.seed)
    pairs = [(i, j, _jaccard(shingle_set(i), shingle_set(j))) for i, j in candidates.tolist()]
    return [pair for pair in pairs if pair[2] >= config.threshold]


def _shingle_sets(texts: Sequence[str], config: NearDedupConfig):
    """(signatures, has-shingles mask, shingle_set(i) -> sorted unique shingle hashes of text i)."""
    n = len(texts)
    sig, has_shingles, shingles, shingle_docs = minhash_signatures(texts, config)
    bounds = np.searchsorted(shingle_docs, np.arange(n + 1))
    sets: dict[int, np.ndarray] = {}

    def shingle_set(i: int) -> np.ndarray:
        if i not in sets:
            sets[i] = np.unique(shingles[bounds[i] : bounds[i + 1]])
        return sets[i]

    return sig, has_shingles, shingle_set


def _near_dedup_indices(
    texts: Sequence[str], config: NearDedupConfig
) -> tuple[list[tuple[int, int, float]], dict[int, tuple[int, float]]]:
    """Return (verified pairs, {removed index: (kept index, Jaccard to it)})."""
    return cluster_near_duplicates(*_shingle_sets(texts, config), config)


def near_dedup(docs: Sequence[Document], config: NearDedupConfig | None = None) -> DedupResult:
    """Remove each document at or above the threshold to an earlier kept one; record which kept one."""
    config = config or NearDedupConfig()
    docs = list(docs)
    _, removed = _near_dedup_indices([doc.text for doc in docs], config)
    kept = [doc for i, doc in enumerate(docs) if i not in removed]
    removals = [
        {"id": docs[i].id, "kept_id": docs[root].id, "similarity": round(sim, 6), "reason": "near_duplicate"}
        for i, (root, sim) in sorted(removed.items())
    ]
    logger.info("Near dedup (MinHash LSH, threshold %.2f): kept %d, removed %d", config.threshold, len(kept),
                len(removals))
    return DedupResult(kept=kept, removed=removals)
