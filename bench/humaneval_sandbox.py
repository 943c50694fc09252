"""Benchmark: HumanEval's 164 canonical solutions (and 164 empty bodies) through the code sandbox.

Measures what a HumanEval run costs besides generation: one sandboxed interpreter per program
(lmforge.evaluation.sandbox: own session, rlimits, network namespace and uid drop when permitted),
``workers`` at a time. Reported: wall seconds per pass, programs per second, mean per-program
duration, the isolation actually used, and the pass@1 of each pass (must be 1.0 and 0.0).

    python bench/humaneval_sandbox.py            # writes bench/results/humaneval_sandbox.json
    python bench/humaneval_sandbox.py --workers 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

from lmforge.evaluation.humaneval import load_problems, score_completions

logger = logging.getLogger("bench.humaneval_sandbox")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "humaneval_sandbox.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    problems = load_problems()
    result = {"problems": len(problems), "workers": args.workers, "cpus": os.cpu_count(),
              "load_average_at_start": os.getloadavg()[0], "python": platform.python_version()}
    for name, completion in (("canonical", None), ("empty_body", "    pass\n")):
        completions = [[p["canonical_solution"] if completion is None else completion] for p in problems]
        start = time.perf_counter()
        metrics = score_completions(problems, completions, k=[1], workers=args.workers)
        wall = time.perf_counter() - start
        result[name] = {"pass_at_1": metrics["pass_at_1"], "wall_s": round(wall, 2),
                        "programs_per_s": round(len(problems) / wall, 2), "isolation": metrics["isolation"],
                        "timeouts": metrics["timeouts"]}
        logger.info("%s: %s", name, result[name])
    if result["canonical"]["pass_at_1"] != 1.0 or result["empty_body"]["pass_at_1"] != 0.0:
        raise SystemExit(f"unexpected scores: {result}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
