"""Benchmark: the data stage on a real Ray cluster (1 and 2 nodes on this machine) beside the local process pool.

Same input, same run: a deterministic sample of this venv's site-packages .py files (bench/data_stage.py's
`sample_paths`, default 3%), the whole stage as bench/data_stage.py runs it (`run_ours`: lazy code_folder
shards read by the workers, `process_corpus` with conf/base/parameters_data_processing.yml, outputs written,
counts reconciled) on three executors:

- `local`: the process pool, 2 workers (this machine's cores);
- `ray, 1 node`: a Ray cluster of one node with 1 CPU (`ray start --head --block`, tests/data/ray_cluster.py);
- `ray, 2 nodes`: the same head plus a worker node with 1 CPU (its own `ray start --block` and temp dir).

Each Ray run is a new job, as a `kedro run` is: it joins the cluster, ships the lmforge package
(runtime_env py_modules), starts its workers and leaves; that cost is part of what is measured. "Overhead of Ray
on one machine" = ray 2 nodes (2 CPUs) / local (2 workers), wall time, on the same 2 cores; "scaling" = ray 1
node / ray 2 nodes. The cores are shared with other jobs, so each round runs the three back to back and the
JSON keeps every round; read the ratios, not the absolutes. The results (counts, dropped by reason, MB out)
must be identical on the three executors or the run fails.

    python bench/data_stage_ray.py            # 3%, 2 rounds; writes bench/results/data_stage_ray.json
    python bench/data_stage_ray.py --quick    # 1%, 1 round, printed, not saved
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests" / "data"), str(ROOT / "tests")]

from data_stage import PARAMS, run_ours  # noqa: E402
from ray_cluster import RayCluster  # noqa: E402

logger = logging.getLogger("bench.data_stage_ray")
RESULTS = ROOT / "bench" / "results" / "data_stage_ray.json"
SAME = ("files", "shards_in", "mb_in", "records_out", "mb_out", "dropped")


def timed(name: str, root: Path, fraction: float, shard_size: int, workers: int | None, **executor) -> dict:
    row = run_ours(root, fraction, shard_size, workers, **executor)
    row["mb_per_s"] = round(row["mb_in"] / row["seconds"], 3)
    logger.info("%-12s %5d files %6.1f MB in %6.1f s = %.2f MB/s", name, row["files"], row["mb_in"], row["seconds"],
                row["mb_per_s"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(sysconfig.get_paths()["purelib"]),
                        help="folder of .py files (default: this venv's site-packages)")
    parser.add_argument("--fraction", type=float, default=0.03)
    parser.add_argument("--shard-size", type=int, default=50, help="files per shard (default 50: ~0.7 MB)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1%%, 1 round, nothing saved")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("lmforge").setLevel(logging.WARNING)
    if args.quick:
        args.fraction, args.rounds = 0.01, 1
    os.environ.pop("RAY_ADDRESS", None)
    t_all = time.perf_counter()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp, RayCluster(Path(tmp)) as cluster:
        os.environ.update(cluster.driver_env)
        ray = {"kind": "ray", "ray_address": "auto"}
        for i in range(args.rounds):
            local = timed("local x2", args.root, args.fraction, args.shard_size, 2)
            one = timed("ray 1 node", args.root, args.fraction, args.shard_size, None, **ray)
            cluster.add_node("worker1")
            two = timed("ray 2 nodes", args.root, args.fraction, args.shard_size, None, **ray)
            cluster.remove_node("worker1")
            for name, row in (("ray 1 node", one), ("ray 2 nodes", two)):
                diff = {k: (row[k], local[k]) for k in SAME if row[k] != local[k]}
                if diff:
                    raise AssertionError(f"round {i}: {name} differs from local: {diff}")
            rounds.append({"local_2_workers": local, "ray_1_node_1_cpu": one, "ray_2_nodes_1_cpu_each": two})
        left = cluster.stop()
        if left:
            raise AssertionError(f"Ray processes outlived their node's `ray start`: {left}")

    def median(key: str) -> float:
        return round(statistics.median(r[key]["seconds"] for r in rounds), 2)

    local_s, one_s, two_s = median("local_2_workers"), median("ray_1_node_1_cpu"), median("ray_2_nodes_1_cpu_each")
    first = rounds[0]["local_2_workers"]
    report = {
        "benchmark": "whole data_processing stage (bench/data_stage.py run_ours) on a 2-node Ray cluster on this machine "
                     "vs the local process pool, and Ray from 1 to 2 nodes; same input, same run",
        "corpus": {"root": str(args.root), "fraction": args.fraction, "files": first["files"], "mb": first["mb_in"],
                   "shards": first["shards_in"]},
        "params": {"shard_size": args.shard_size, "config": str(PARAMS.relative_to(ROOT)), "rounds": args.rounds,
                   "cluster": "ray start --block per node, 1 CPU each, loopback; runtime_env py_modules = lmforge"},
        "rounds": rounds,
        "median_seconds": {"local_2_workers": local_s, "ray_1_node": one_s, "ray_2_nodes": two_s},
        "ratios": {
            "ray_2_nodes_over_local_2_workers_seconds": round(two_s / local_s, 2),
            "ray_overhead_seconds_per_run": round(two_s - local_s, 1),
            "speedup_ray_1_to_2_nodes": round(one_s / two_s, 2),
        },
        "identical_results": True,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "note": "2 shared cores: both Ray nodes and the driver share them; other jobs ran at the same time"},
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
