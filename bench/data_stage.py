"""Benchmark: the whole data-processing stage on this venv's site-packages, from 10% to 100% of it.

"Whole stage" = ingest of a code_folder source (lazy shards: each worker reads its own files) +
`process_corpus` with the project's configuration (conf/base/parameters_data_processing.yml:
cleaning, exact dedup, MinHash near dedup, decontamination; executor `local` on every core) +
writing the outputs the way the catalog does (clean JSONL shards one at a time, the quarantine,
the dedup manifest). The Great Expectations validation node is not included.

Sizes: a deterministic sample of the .py files (sha256 of the relative path; the 10% sample is
inside the 25% one, and so on), each size run in a fresh child process. Measured per size: wall
time, MB/s (UTF-8 text bytes in per wall second), CPU seconds of the whole process tree (user +
system, sampled every 0.1 s with psutil), MB/s per core = MB per CPU second (what one busy core
does; robust when other jobs share the machine), and peak memory: the peak of the SUM of the RSS of
the child and all its workers (same sampling), plus the largest single process's `ru_maxrss`. Counts must reconcile exactly at every size (records in == files sampled ==
kept + dropped; written shards hold records_out records and bytes_out bytes; the written quarantine
holds sum(dropped) records with the same per-reason counts; kept ids unique) or the run fails.

Peer, same input, same run: datatrove 0.10.1's MinHash dedup pipeline on the same documents written
as JSONL (JsonlReader -> MinhashDedupSignature; MinhashDedupBuckets; MinhashDedupCluster;
JsonlReader -> MinhashDedupFilter -> JsonlWriter) on LocalPipelineExecutor with as many workers,
same 5-grams / 16 bands x 8 rows. It does only near dedup (no cleaning, exact dedup or
decontamination), so the ratio favours it. Its signature stage runs ~0.4 MB/s per core, so by default
it runs at the 10% size only (`peer_fraction` in the JSON).

    python bench/data_stage.py            # 10/25/50/100% + peer at 10%; writes bench/results/data_stage.json
    python bench/data_stage.py --quick    # 1% and 2%, peer at 1%, printed, not saved
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench.data_stage")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "data_stage.json"
PARAMS = ROOT / "conf" / "base" / "parameters_data_processing.yml"
MB = 1_000_000


def sample_paths(root: Path, fraction: float) -> list[str]:
    """Sorted .py paths under root whose sha256 falls below fraction (nested across fractions)."""
    from lmforge.data.sources import list_files

    paths = list_files(root, ("**/*.py",), ("**/__pycache__/**",))
    limit = fraction * 2**32
    return [p for p in paths if int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) < limit]


def stage_config(workers: int | None, kind: str = "local", **executor):
    """The project's data_processing config (sources aside), with the executor's kind and worker count (the YAML's
    ``executor: ${globals:executor}`` is replaced, not resolved)."""
    import yaml

    from lmforge.data.process import DataProcessingConfig

    params = yaml.safe_load(PARAMS.read_text())["data_processing"]
    params = {k: v for k, v in params.items() if k not in ("sources", "shard_size")}
    params["executor"] = {"kind": kind, "workers": workers, **executor}
    return DataProcessingConfig.from_dict(params)


def run_ours(root: Path, fraction: float, shard_size: int, workers: int | None, **executor) -> dict:
    """One size, in this process: ingest + process + write; returns timings and reconciled counts.
    ``executor``: ExecutorConfig fields besides workers (default: kind local)."""
    from lmforge.data.ingest import SourceConfig, load_code_shard
    from lmforge.data.process import process_corpus

    config = stage_config(workers, **executor)
    t0 = time.perf_counter()
    paths = sample_paths(root, fraction)
    source = SourceConfig(name="site-packages", root=str(root), license="various")
    shards = {f"site-packages-shard-{k // shard_size:05d}": functools.partial(load_code_shard, source, str(root),
                                                                             paths[k : k + shard_size])
              for k in range(0, len(paths), shard_size)}
    result = process_corpus(shards, config, shard_size=shard_size)
    t_process = time.perf_counter() - t0
    report = result.report
    out_records = out_bytes = 0
    ids: set[str] = set()
    by_reason: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-stage-") as tmp:
        for name, loader in result.clean_shards.lazy().items():  # what PartitionedDataset.save does
            records = loader()
            with open(Path(tmp) / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            out_records += len(records)
            out_bytes += sum(len(r["text"].encode("utf-8", errors="surrogatepass")) for r in records)
            ids.update(r["id"] for r in records)
        with open(Path(tmp) / "quarantine.jsonl", "w", encoding="utf-8") as fh:
            for record in result.quarantine:
                fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                by_reason[record["reason"]] = by_reason.get(record["reason"], 0) + 1
        with open(Path(tmp) / "dedup_manifest.jsonl", "w", encoding="utf-8") as fh:
            for record in result.dedup_manifest():
                fh.write(json.dumps(record) + "\n")
    wall = time.perf_counter() - t0
    dropped = report["dropped"]
    checks = {
        "records_in == files sampled": report["records_in"] == len(paths),
        "records_in == records_out + sum(dropped)": report["records_in"] == report["records_out"] + sum(dropped.values()),
        "written clean records == records_out": out_records == report["records_out"],
        "written clean bytes == bytes_out": out_bytes == report["bytes_out"],
        "written quarantine per reason == dropped": by_reason == {k: v for k, v in dropped.items() if v},
        "kept ids unique": len(ids) == out_records,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise AssertionError(f"counts do not reconcile at fraction {fraction}: {failed}; report={report}")
    return {
        "fraction": fraction,
        "files": len(paths),
        "shards_in": len(shards),
        "mb_in": round(report["bytes_in"] / MB, 2),
        "seconds": round(wall, 2),
        "seconds_process": round(t_process, 2),
        "records_out": report["records_out"],
        "mb_out": round(report["bytes_out"] / MB, 2),
        "dropped": {k: v for k, v in dropped.items() if v},
        "counts_reconcile": True,
        "workers": config.executor.resolved_workers(),
    }


def run_datatrove(root: Path, fraction: float, workers: int) -> dict:
    """datatrove's 4-stage MinHash dedup on the same documents (JSONL input written untimed)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    from lmforge.data.ingest import SourceConfig, read_code_files

    paths = sample_paths(root, fraction)
    source = SourceConfig(name="site-packages", root=str(root), license="various")
    near = stage_config(workers).near_dedup
    with tempfile.TemporaryDirectory(prefix="bench-datatrove-stage-") as tmp:
        text_bytes = 0
        inputs = [open(Path(tmp) / f"in-{k}.jsonl", "w", encoding="utf-8") for k in range(workers)]
        for i, doc in enumerate(read_code_files(source, str(root), paths)):
            text_bytes += len(doc.text.encode("utf-8", errors="surrogatepass"))
            inputs[i % workers].write(json.dumps({"id": doc.id, "text": doc.text}, ensure_ascii=False) + "\n")
        for fh in inputs:
            fh.close()
        # sha1: datatrove 0.10.1's default xxhash path passes str, which xxhash 4 refuses (see dedup_minhash.py).
        config = MinhashConfig(n_grams=near.shingle_size, num_buckets=near.bands, hashes_per_bucket=near.rows,
                               seed=near.seed, hash_config=HashConfig(precision=64, hash_fc="sha1"))
        base = Path(tmp)
        common = {"workers": workers, "skip_completed": False}
        stage1 = LocalPipelineExecutor(pipeline=[JsonlReader(str(base), glob_pattern="in-*.jsonl"),
                                                 MinhashDedupSignature(output_folder=str(base / "sigs"), config=config)],
                                       tasks=workers, logging_dir=str(base / "logs1"), **common)
        stage2 = LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(base / "sigs"),
                                                                     output_folder=str(base / "buckets"), config=config)],
                                       tasks=config.num_buckets, logging_dir=str(base / "logs2"), depends=stage1,
                                       **common)
        stage3 = LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(base / "buckets"),
                                                                     output_folder=str(base / "remove"), config=config)],
                                       tasks=1, logging_dir=str(base / "logs3"), depends=stage2, **common)
        stage4 = LocalPipelineExecutor(pipeline=[JsonlReader(str(base), glob_pattern="in-*.jsonl"),
                                                 MinhashDedupFilter(input_folder=str(base / "remove")),
                                                 JsonlWriter(str(base / "out"))],
                                       tasks=workers, logging_dir=str(base / "logs4"), depends=stage3, **common)
        t0 = time.perf_counter()
        stage4.run()
        wall = time.perf_counter() - t0
        kept = sum(1 for f in (base / "out").glob("*.jsonl*") for _ in _open_any(f))
    return {"fraction": fraction, "files": len(paths), "mb_in": round(text_bytes / MB, 2), "seconds": round(wall, 2),
            "records_out": kept, "workers": workers}


def _open_any(path: Path):
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


def measure_child(argv: list[str], log_path: Path, script: Path | None = None) -> dict:
    """Run script (default: this one) as a child; return its JSON result plus the peak RSS sum of its process tree."""
    import psutil

    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, str((script or Path(__file__)).resolve()), *argv],
                                stdout=subprocess.PIPE, stderr=log)
        ps = psutil.Process(proc.pid)
        peak = 0
        cpu: dict[int, float] = {}  # pid -> last seen user + system seconds
        while proc.poll() is None:
            try:
                tree = [ps, *ps.children(recursive=True)]
            except psutil.Error:
                tree = []
            total = 0
            for p in tree:
                try:
                    with p.oneshot():
                        total += p.memory_info().rss
                        times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
                except psutil.Error:
                    pass
            peak = max(peak, total)
            time.sleep(0.1)
        out = proc.stdout.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed with exit code {proc.returncode}; see {log_path}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_tree_mb"] = round(peak / MB, 1)
    result["cpu_seconds"] = round(sum(cpu.values()), 1)  # sampled every 0.1 s: a lower bound
    return result


def child_main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.child == "ours":
        result = run_ours(args.root, args.fraction, args.shard_size, args.workers)
    else:
        from loguru import logger as loguru_logger

        loguru_logger.remove()
        loguru_logger.add(sys.stderr, level="WARNING")
        result = run_datatrove(args.root, args.fraction, args.workers or os.cpu_count() or 1)
    kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    result["max_single_process_rss_mb"] = round(kib * 1024 / MB, 1)  # ru_maxrss is in KiB on Linux
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def growth(rows: list[dict], key: str) -> float | None:
    """Exponent b of key ~ mb_in**b between the smallest and the largest size (1.0 = linear)."""
    lo, hi = rows[0], rows[-1]
    if lo["mb_in"] <= 0 or hi["mb_in"] <= lo["mb_in"] or lo[key] <= 0:
        return None
    return round(math.log(hi[key] / lo[key]) / math.log(hi["mb_in"] / lo["mb_in"]), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(sysconfig.get_paths()["purelib"]),
                        help="folder of .py files (default: this venv's site-packages)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--peer-fraction", type=float, default=0.1, help="size the datatrove peer runs at")
    parser.add_argument("--shard-size", type=int, default=250, help="files per shard (default 250: ~4 MB)")
    parser.add_argument("--workers", type=int, default=None, help="default: every core")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1%% and 2%%, peer at 1%%, nothing saved")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["ours", "datatrove"], help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.quick:
        args.fractions, args.peer_fraction = [0.01, 0.02], 0.01
    workers = args.workers or os.cpu_count() or 1
    log_path = Path(tempfile.mkstemp(prefix="bench-data-stage-", suffix=".log")[1])
    logger.info("root %s, fractions %s, %d worker(s); child logs in %s", args.root, args.fractions, workers, log_path)
    common = ["--root", str(args.root), "--shard-size", str(args.shard_size), "--workers", str(workers)]

    t_all = time.perf_counter()
    rows = []
    for fraction in sorted(args.fractions):
        row = measure_child(["--child", "ours", "--fraction", str(fraction), *common], log_path)
        row["mb_per_s"] = round(row["mb_in"] / row["seconds"], 3)
        row["mb_per_s_per_core"] = round(row["mb_in"] / row["cpu_seconds"], 3)
        rows.append(row)
        logger.info("ours %5.0f%%: %5d files %7.1f MB in %7.1f s = %.2f MB/s (%.2f per core), peak RSS %.0f MB",
                    fraction * 100, row["files"], row["mb_in"], row["seconds"], row["mb_per_s"],
                    row["mb_per_s_per_core"], row["peak_rss_tree_mb"])
    peer = None
    if not args.skip_peer:
        peer = measure_child(["--child", "datatrove", "--fraction", str(args.peer_fraction), *common], log_path)
        peer["mb_per_s"] = round(peer["mb_in"] / peer["seconds"], 3)
        peer["mb_per_s_per_core"] = round(peer["mb_in"] / peer["cpu_seconds"], 3)
        logger.info("datatrove %5.0f%%: %7.1f MB in %7.1f s = %.2f MB/s, peak RSS %.0f MB", args.peer_fraction * 100,
                    peer["mb_in"], peer["seconds"], peer["mb_per_s"], peer["peak_rss_tree_mb"])
    same_size = next((r for r in rows if r["fraction"] == args.peer_fraction), None)
    report = {
        "benchmark": "whole data_processing stage (ingest + clean + exact/near dedup + decontamination + write) "
                     "on site-packages .py files, 10% to 100%",
        "corpus": {"root": str(args.root), "files": rows[-1]["files"], "mb": rows[-1]["mb_in"]},
        "params": {"shard_size": args.shard_size, "workers": workers, "config": str(PARAMS.relative_to(ROOT)),
                   "executor": "local"},
        "results": rows,
        "growth_exponent": {"seconds_vs_mb": growth(rows, "seconds"), "cpu_seconds_vs_mb": growth(rows, "cpu_seconds"),
                            "peak_rss_tree_vs_mb": growth(rows, "peak_rss_tree_mb")},
        "peer": None if peer is None else {
            "name": "datatrove 0.10.1 MinHash dedup pipeline (4 stages, LocalPipelineExecutor), near dedup only",
            "peer_fraction": args.peer_fraction,
            "note": "run at the peer_fraction size only: its signature stage runs ~0.4 MB/s per core",
            **peer,
        },
        "ratios": {} if peer is None or same_size is None else {
            "ours_whole_stage_vs_datatrove_minhash_only_mb_per_s": round(same_size["mb_per_s"] / peer["mb_per_s"], 2),
            "ours_whole_stage_vs_datatrove_minhash_only_mb_per_cpu_s": round(
                same_size["mb_per_s_per_core"] / peer["mb_per_s_per_core"], 2),
            "ours_peak_rss_vs_datatrove": round(same_size["peak_rss_tree_mb"] / peer["peak_rss_tree_mb"], 2),
        },
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "note": "shared machine; other jobs ran at the same time: read ratios and growth, not absolutes"},
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
