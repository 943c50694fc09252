"""Benchmark: MinHash LSH near-dedup, lmforge's `near_dedup` versus datatrove and datasketch.

Same input, same run, same word 5-grams, threshold 0.8 and 128 permutations (16 bands x 8 rows)
for all three. The input is a few thousand real .py files of this project's site-packages,
vendored copies included (pip/_vendor, setuptools/_vendor, ...), after exact dedup (every
contender would drop exact copies with a hash first).

- ours: `near_dedup_pairs` (numpy shingling + signatures + LSH + exact-Jaccard verification);
- datatrove 0.10.1: MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster, run
  in process, one task per stage/bucket, 64-bit sha1 shingle hashes;
- datasketch 2.0: MinHash.update_batch over the same shingles + MinHashLSH (same 16 x 8 banding)
  insert and query.

Throughput is MB of UTF-8 input per second, one core, best of --repeats. Ground truth is the exact
Jaccard of every pair of documents over our shingle sets (word = lowercased run of letters, digits,
"_"), computed by brute force as a sparse matrix product over all pairs. Each contender's pairs
(ours: verified pairs; datatrove: the pairs its bucket stage writes; datasketch: LSH query hits)
are scored for precision and recall against the pairs with Jaccard >= threshold, and so are the
documents each would remove (union-find over its pairs, keep the first of each cluster) against the
documents the true pairs remove: the headline, since datatrove reports chains, not all pairs. datatrove
shingles its own way (simplify_text + spaCy word tokenizer), so its scores are against a slightly
different definition of a word; datasketch is fed our exact shingles.

    python bench/dedup_minhash.py            # ~3,000 files; writes bench/results/dedup_minhash.json
    python bench/dedup_minhash.py --quick    # 400 files, printed, not saved
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench.dedup_minhash")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dedup_minhash.json"
MB = 1_000_000
WORD = re.compile(rb"[A-Za-z0-9_\x80-\xff]+")


def read_site_packages(n_files: int, max_bytes: int, seed: int) -> tuple[list[str], list[str]]:
    """Up to n_files .py files: every vendored/pip/setuptools file first, then a seeded sample of the rest."""
    from lmforge.data.dedup import fingerprint_text

    site = Path(np.__file__).resolve().parents[1]
    paths = sorted(p for p in site.rglob("*.py") if p.is_file() and "__pycache__" not in p.parts)
    rich = [p for p in paths if "_vendor" in p.parts or p.parts[len(site.parts)] in ("pip", "setuptools")]
    rest = [p for p in paths if p not in set(rich)]
    random.Random(seed).shuffle(rest)
    texts, names, seen = [], [], set()
    for path in rich + rest:
        if len(texts) >= n_files:
            break
        data = path.read_bytes()
        if not data or len(data) > max_bytes:
            continue
        text = data.decode("utf-8", errors="replace")
        digest = fingerprint_text(text)
        if digest in seen:  # exact copies go to exact dedup, not here
            continue
        seen.add(digest)
        texts.append(text)
        names.append(str(path.relative_to(site)))
    return texts, names


def brute_force_pairs(texts: list[str], shingle_size: int, threshold: float) -> dict[tuple[int, int], float]:
    """Exact Jaccard >= threshold over all pairs: docs x shingles sparse matrix, X @ X.T intersections."""
    from scipy import sparse

    from lmforge.data.dedup_minhash import NearDedupConfig, shingle_documents

    hashes, owners = shingle_documents(texts, NearDedupConfig(shingle_size=shingle_size))
    pairs = np.unique(np.stack([owners, hashes.view(np.int64)], axis=1), axis=0)  # unique (doc, shingle)
    _, cols = np.unique(pairs[:, 1], return_inverse=True)
    x = sparse.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], cols)), shape=(len(texts), cols.max() + 1))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = (x @ x.T).tocoo()
    i, j, v = inter.row, inter.col, inter.data
    keep = i < j
    i, j, v = i[keep], j[keep], v[keep]
    sim = v / (sizes[i] + sizes[j] - v)
    hit = sim >= threshold - 1e-9
    return {(int(a), int(b)): float(s) for a, b, s in zip(i[hit], j[hit], sim[hit], strict=True)}


def removed_documents(pairs, n: int) -> set[int]:
    """Documents a dedup built on these pairs removes: union-find, keep the first of each cluster."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return {i for i in range(n) if find(i) != i}


def precision_recall(found: set, truth: set) -> dict:
    tp = len(found & truth)
    return {
        "reported": len(found),
        "true_positives": tp,
        "precision": round(tp / len(found), 4) if found else 1.0,
        "recall": round(tp / len(truth), 4) if truth else 1.0,
    }


def score(found: set[tuple[int, int]], truth: dict[tuple[int, int], float], n: int) -> dict:
    """Pair-level and removed-document-level precision/recall against brute-force exact Jaccard.

    Pair level under-counts tools that report a chain through a bucket (datatrove writes consecutive
    pairs, not all of them); the removed documents (keep the first of each cluster) compare like with like.
    """
    return {
        "removed_documents": precision_recall(removed_documents(found, n), removed_documents(truth, n)),
        "pairs": precision_recall(found, set(truth)),
    }


def run_ours(texts: list[str], args) -> set[tuple[int, int]]:
    from lmforge.data.dedup_minhash import NearDedupConfig, near_duplicate_pairs

    config = NearDedupConfig(shingle_size=args.shingle_size, num_perm=args.bands * args.rows, bands=args.bands,
                             rows=args.rows, threshold=args.threshold, seed=args.seed)
    return {(i, j) for i, j, _ in near_duplicate_pairs(texts, config)}


def our_shingles(text: str, n: int) -> list[bytes]:
    words = [w.lower() for w in WORD.findall(text.encode("utf-8", errors="surrogatepass"))]
    return [b" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def run_datasketch(texts: list[str], args) -> set[tuple[int, int]]:
    from datasketch import MinHash, MinHashLSH

    num_perm = args.bands * args.rows
    lsh = MinHashLSH(threshold=args.threshold, num_perm=num_perm, params=(args.bands, args.rows))
    sigs = []
    for i, text in enumerate(texts):
        shingles = our_shingles(text, args.shingle_size)
        m = MinHash(num_perm=num_perm, seed=args.seed)
        if shingles:
            m.update_batch(shingles)
            lsh.insert(i, m)
        sigs.append(m if shingles else None)
    found = set()
    for i, m in enumerate(sigs):
        if m is not None:
            found.update((min(i, j), max(i, j)) for j in lsh.query(m) if j != i)
    return found


def run_datatrove(texts: list[str], args) -> set[tuple[int, int]]:
    import struct

    from datatrove.data import Document as DTDocument
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig

    # sha1: datatrove's default xxhash needs the xxhash package, and 0.10.1 passes it str, which xxhash 4 refuses.
    from loguru import logger as loguru_logger  # datatrove logs every bucket through loguru

    loguru_logger.remove()
    config = MinhashConfig(n_grams=args.shingle_size, num_buckets=args.bands, hashes_per_bucket=args.rows,
                           seed=args.seed, hash_config=HashConfig(precision=64, hash_fc="sha1"))
    with tempfile.TemporaryDirectory(prefix="bench-datatrove-") as tmp:
        sigs, buckets, clusters = f"{tmp}/sigs", f"{tmp}/buckets", f"{tmp}/clusters"
        docs = (DTDocument(text=t, id=str(i)) for i, t in enumerate(texts))
        MinhashDedupSignature(output_folder=sigs, config=config).run(docs, rank=0, world_size=1)
        for bucket in range(config.num_buckets):
            MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=config).run(
                rank=bucket, world_size=config.num_buckets)
        MinhashDedupCluster(input_folder=buckets, output_folder=clusters, config=config).run()
        found = set()
        for path in Path(buckets).glob("*.dups"):
            data = path.read_bytes()
            for _, doc_a, _, doc_b in struct.iter_unpack("<4I", data):
                found.add((min(doc_a, doc_b), max(doc_a, doc_b)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000, help="number of .py files (default 3000)")
    parser.add_argument("--max-file-bytes", type=int, default=300_000, help="skip larger files")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per contender (best counts)")
    parser.add_argument("--shingle-size", type=int, default=5)
    parser.add_argument("--bands", type=int, default=16)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], choices=["datatrove", "datasketch"],
                        help="contenders to leave out")
    parser.add_argument("--quick", action="store_true", help="400 files, 1 repeat, nothing saved")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("datatrove", "lmforge"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.quick:
        args.files, args.repeats = 400, 1

    texts, names = read_site_packages(args.files, args.max_file_bytes, args.seed)
    mb = sum(len(t.encode("utf-8", errors="surrogatepass")) for t in texts) / MB
    logger.info("corpus: %d files, %.1f MB (site-packages, exact copies removed)", len(texts), mb)

    t0 = time.perf_counter()
    truth = brute_force_pairs(texts, args.shingle_size, args.threshold)
    logger.info("brute force: %d pairs with Jaccard >= %.2f in %.1f s", len(truth), args.threshold,
                time.perf_counter() - t0)

    contenders = {"ours": run_ours, "datatrove": run_datatrove, "datasketch": run_datasketch}
    results = {}
    for name, fn in contenders.items():
        if name in args.skip:
            continue
        best, found = float("inf"), set()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            found = fn(texts, args)
            best = min(best, time.perf_counter() - t0)
        results[name] = {"seconds": round(best, 3), "mb_per_s": round(mb / best, 3), **score(found, truth, len(texts))}
        logger.info("%-10s %7.2f MB/s  %s", name, mb / best, score(found, truth, len(texts)))

    ratios = {f"ours_vs_{name}_throughput": round(results["ours"]["mb_per_s"] / r["mb_per_s"], 2)
              for name, r in results.items() if name != "ours"}
    report = {
        "benchmark": "MinHash LSH near-dedup throughput and pair precision/recall vs brute-force exact Jaccard",
        "corpus": {"files": len(texts), "mb": round(mb, 2), "source": "site-packages .py (vendored first)",
                   "true_pairs": len(truth)},
        "params": {"shingle_size": args.shingle_size, "num_perm": args.bands * args.rows, "bands": args.bands,
                   "rows": args.rows, "threshold": args.threshold, "repeats": args.repeats},
        "results": results,
        "ratios": ratios,
        "targets": {"throughput_vs_datatrove": 10.0, "recall": 0.9, "precision": 0.95},
        "machine": {"python": platform.python_version(), "cpus_note": "2 shared cores; one process each"},
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
