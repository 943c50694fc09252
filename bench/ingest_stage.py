"""Benchmark: the data_processing ingest (node `ingest_corpus` + the catalog's save of `raw_documents`).

What Kedro does for the first node of `kedro run --pipeline data_processing`, on the project's own
configuration (conf/base/parameters_data_processing.yml, sources in data/00_sources, `make corpus`):
the node builds the shards, then `AtomicPartitionedDataset.save` writes them one at a time into
data/01_raw/corpus (here: a temporary folder). Measured in this process: wall time, the parent's own
CPU seconds (user + system), its peak RSS (`ru_maxrss`), the CPU seconds of its (reaped) workers, and
the sha256 of every written shard, so two runs (before/after a change, 1 or 2 workers) can be compared
byte for byte.

    python bench/ingest_stage.py --workers 2 --label after   # prints one JSON object
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "conf" / "base" / "parameters_data_processing.yml"


def tree_digest(folder: Path) -> tuple[str, int, int]:
    """(sha256 over (name, sha256 of content) of every file, files, bytes) of a folder."""
    digest = hashlib.sha256()
    files = size = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        files += 1
        size += len(data)
    return digest.hexdigest(), files, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kind", default="local", help="executor kind: local | sequential")
    parser.add_argument("--label", default="")
    parser.add_argument("--params", default=str(PARAMS), help="a parameters_data_processing.yml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import yaml

    from lmforge.pipelines.data_processing.nodes import ingest_corpus
    from lmforge.pipelines.datasets import AtomicPartitionedDataset

    params = yaml.safe_load(Path(args.params).read_text())["data_processing"]
    params["executor"] = {"kind": args.kind, "workers": args.workers}  # the YAML's is ${globals:executor}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        out = Path(tmp) / "corpus"
        dataset = AtomicPartitionedDataset(path=str(out), dataset="lmforge.pipelines.datasets.JSONLinesDataset",
                                           filename_suffix=".jsonl", overwrite=True)
        start = time.perf_counter()
        node_start = time.perf_counter()
        shards = ingest_corpus(params)
        node_s = time.perf_counter() - node_start
        dataset.save(shards)
        wall = time.perf_counter() - start
        del shards
        digest, files, size = tree_digest(out)
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stdout.write(json.dumps({
        "label": args.label, "executor": args.kind, "workers": args.workers, "wall_s": round(wall, 2),
        "node_s": round(node_s, 2), "save_s": round(wall - node_s, 2),
        "parent_cpu_s": round(own.ru_utime + own.ru_stime, 2),
        "children_cpu_s": round(children.ru_utime + children.ru_stime, 2),
        "parent_peak_rss_mb": round(own.ru_maxrss / 1024, 1), "shards": files, "bytes": size, "sha256": digest,
    }) + "\n")


if __name__ == "__main__":
    main()
