"""Generation speed: the two engines of ``lmforge.generation`` timed on the same prompts.

This module only measures; generating is ``lmforge.generation``'s job. ``measure_speed`` times one
engine ("ours": ``lmforge.generation.generate_batched``, the batched KV-cache loop; "transformers":
``generate_reference``, transformers ``model.generate``) on a prompt set: requests/s, generated
tokens/s, response time p50/p95 (a request's response time is the wall time of its batch: a batch
answers its requests together, so ``latency_timings`` says how many distinct timings the percentiles
come from: with one batch p50 = p95), peak memory (CUDA: max allocated during the run; CPU: the
process's peak RSS, sampled every 5 ms; both include the weights) and ``memory_growth_mb`` (that peak
minus the memory in use before the run: the generation's own working memory, near 0 on a CPU whose
allocator reuses the warm-up's buffers). ``compare_generation_speed`` runs both engines on the same
prompts and reports the ratio and whether their outputs are equal; it is what the evaluation stage
and bench/generation_speed.py call. ``percentile`` is the project's one percentile (the load test
uses it too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from lmforge.generation import check_prompts

logger = logging.getLogger(__name__)

ENGINES = ("ours", "transformers")
"""Names in the measurements: "ours" is lmforge.generation's batched engine, "transformers" its reference."""


# --- measuring ------------------------------------------------------------------------------------


def measure_speed(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    *,
    engine: str = "ours",
    min_new_tokens: int = 0,
    chat: bool = True,
    warmup: bool = True,
) -> dict[str, Any]:
    """Time one engine on ``prompts`` (encoded as generation does: chat template, stop ids, pad id).

    Returns ``requests``, ``batches``, ``prompt_tokens``, ``new_tokens``, ``seconds``,
    ``requests_per_s``, ``tokens_per_s`` (generated tokens), ``latency_ms_p50``/``_p95`` and
    ``latency_timings`` (the distinct batch timings behind them), ``peak_memory_mb``, ``memory_growth_mb``
    and ``peak_memory_kind``, and the ``completions`` (new token ids per prompt).
    ``warmup`` runs the first batch once untimed (allocator, kernel selection).
    """
    prompt_ids, stop_ids, pad_id = _encode(model, tokenizer, prompts, chat=chat)
    return measure_speed_ids(model, prompt_ids, max_new_tokens, batch_size, stop_ids=stop_ids, pad_id=pad_id,
                             engine=engine, min_new_tokens=min_new_tokens, warmup=warmup)


def measure_speed_ids(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int,
    *,
    stop_ids: Sequence[int],
    pad_id: int,
    engine: str = "ours",
    min_new_tokens: int = 0,
    warmup: bool = True,
) -> dict[str, Any]:
    """``measure_speed`` on prompts that are already token ids (no tokenizer needed)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not prompt_ids:
        raise ValueError("measuring speed needs at least one prompt")
    check_prompts(prompt_ids, max_new_tokens, batch_size)
    run = _engine(engine, model, max_new_tokens=max_new_tokens, stop_ids=list(stop_ids), pad_id=pad_id,
                  min_new_tokens=min_new_tokens)
    batches = [list(prompt_ids[i:i + batch_size]) for i in range(0, len(prompt_ids), batch_size)]
    if warmup:
        run(batches[0])
    device = next(model.parameters()).device
    completions: list[list[int]] = []
    latencies_ms: list[float] = []
    with _PeakMemory(device) as memory:
        start = time.perf_counter()
        for batch in batches:
            t0 = time.perf_counter()
            completions.extend(run(batch))
            _sync(device)
            latencies_ms.extend([(time.perf_counter() - t0) * 1000] * len(batch))
        seconds = time.perf_counter() - start
    new_tokens = sum(len(c) for c in completions)
    return {
        "engine": engine,
        "requests": len(prompt_ids),
        "batches": len(batches),
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "prompt_tokens": sum(len(p) for p in prompt_ids),
        "new_tokens": new_tokens,
        "seconds": seconds,
        "requests_per_s": len(prompt_ids) / seconds,
        "tokens_per_s": new_tokens / seconds,
        "latency_ms_p50": percentile(latencies_ms, 50),
        "latency_ms_p95": percentile(latencies_ms, 95),
        "latency_timings": len(batches),
        "peak_memory_mb": memory.peak_mb,
        "memory_growth_mb": memory.growth_mb,
        "peak_memory_kind": memory.kind,
        "completions": completions,
    }


def compare_generation_speed(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    rounds: int = 1,
    chat: bool = True,
) -> dict[str, Any]:
    """Ours vs transformers ``generate`` on the same prompts, equal lengths (``min_new_tokens = max``).

    Each engine keeps its best of ``rounds`` alternating rounds. Returns ``{"ours": {...},
    "transformers": {...}, "tokens_per_s_ratio": ours / transformers, "outputs_equal": bool,
    "rows_equal": n}`` (the per-engine dicts without their completions).
    """
    prompt_ids, stop_ids, pad_id = _encode(model, tokenizer, prompts, chat=chat)
    return compare_generation_speed_ids(model, prompt_ids, stop_ids=stop_ids, pad_id=pad_id,
                                        max_new_tokens=max_new_tokens, batch_size=batch_size, rounds=rounds)


def compare_generation_speed_ids(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    stop_ids: Sequence[int],
    pad_id: int,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    rounds: int = 1,
    equal_lengths: bool = True,
) -> dict[str, Any]:
    """``compare_generation_speed`` on prompts that are already token ids; also holds ``rounds_tokens_per_s``.

    ``equal_lengths=False`` lets rows stop on their stop tokens (ours then drops finished rows from
    the batch; ``generate`` keeps computing them): the serving case rather than equal work.
    """
    best: dict[str, dict[str, Any]] = {}
    per_round: dict[str, list[float]] = {"transformers": [], "ours": []}
    # Untimed warm-up of both engines on one batch: the first call pays one-time costs (thread pools,
    # kernel choice, allocator growth), measured at ~20x a timed round of a small model on a CPU.
    warmup = [list(p) for p in prompt_ids[:batch_size]]
    for engine in ("transformers", "ours"):
        _engine(engine, model, max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id)(warmup)
    for _ in range(rounds):
        for engine in ("transformers", "ours"):
            result = measure_speed_ids(model, prompt_ids, max_new_tokens, batch_size, stop_ids=stop_ids,
                                       pad_id=pad_id, engine=engine,
                                       min_new_tokens=max_new_tokens if equal_lengths else 0)
            per_round[engine].append(result["tokens_per_s"])
            if engine not in best or result["tokens_per_s"] > best[engine]["tokens_per_s"]:
                best[engine] = result
    rows_equal = sum(a == b for a, b in zip(best["ours"]["completions"], best["transformers"]["completions"],
                                            strict=True))
    summary = {name: {k: v for k, v in r.items() if k != "completions"} for name, r in best.items()}
    summary["tokens_per_s_ratio"] = best["ours"]["tokens_per_s"] / best["transformers"]["tokens_per_s"]
    summary["rows_equal"] = rows_equal
    summary["outputs_equal"] = rows_equal == len(prompt_ids)
    summary["rounds_tokens_per_s"] = per_round
    summary["equal_lengths"] = equal_lengths
    logger.info("generation speed: ours %.1f tokens/s, transformers %.1f tokens/s (%.2fx); %d/%d outputs equal",
                best["ours"]["tokens_per_s"], best["transformers"]["tokens_per_s"], summary["tokens_per_s_ratio"],
                rows_equal, len(prompt_ids))
    return summary


def speed_metrics(comparison: dict[str, Any], prefix: str = "speed") -> dict[str, float]:
    """Flat metrics of ``compare_generation_speed`` for MLflow: ``<prefix>.tokens_per_s`` ..."""
    ours, ref = comparison["ours"], comparison["transformers"]
    keys = ("requests_per_s", "tokens_per_s", "latency_ms_p50", "latency_ms_p95", "latency_timings", "peak_memory_mb",
            "memory_growth_mb")
    metrics = {f"{prefix}.{k}": float(ours[k]) for k in keys if ours.get(k) is not None}
    metrics.update({f"{prefix}.transformers.{k}": float(ref[k]) for k in keys if ref.get(k) is not None})
    metrics[f"{prefix}.tokens_per_s_ratio"] = float(comparison["tokens_per_s_ratio"])
    metrics[f"{prefix}.outputs_equal"] = float(comparison["outputs_equal"])
    return metrics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def _encode(model: Any, tokenizer: Any, prompts: Sequence[str], *,
            chat: bool) -> tuple[list[list[int]], list[int], int]:
    """Prompt ids, stop ids and pad id exactly as ``lmforge.generation.generate`` makes them."""
    from lmforge.generation import encode_prompt, resolve_pad_token_id, resolve_stop_token_ids

    stop_ids = resolve_stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    prompt_ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts]
    return prompt_ids, stop_ids, resolve_pad_token_id(tokenizer, stop_ids)


def _engine(engine: str, model: Any, **kwargs: Any) -> Callable[[list[list[int]]], list[list[int]]]:
    """One batch through an engine of lmforge.generation, greedy (speed is measured on equal work)."""
    from lmforge.generation import generate_batch, generate_reference

    if engine == "ours":
        return lambda batch: generate_batch(model, batch, **kwargs)
    return lambda batch: generate_reference(model, batch, batch_size=len(batch), **kwargs)


def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


class _PeakMemory:
    """Peak memory over a block, weights included: CUDA max allocated, or the process's peak RSS (sampled).

    ``peak_mb`` is the peak itself; ``growth_mb`` the peak minus the memory in use on entry. The CPU
    figure used to be that growth, reported as the peak: after the model is loaded and a warm-up ran,
    generating a few tokens allocates almost nothing new (the allocator reuses the warm-up's buffers),
    so "peak memory" read 0.004 MB.
    """

    def __init__(self, device: Any, interval_s: float = 0.005):
        self.device, self.interval_s = device, interval_s
        self.peak_mb: float | None = None
        self.growth_mb: float | None = None
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_peak"

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            import psutil
        except ImportError:  # psutil is optional: no memory figure rather than a wrong one
            self.kind = "unavailable (pip install psutil)"
            return self
        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            peak = self._peak = max(self._peak, self._proc.memory_info().rss)
        else:
            return
        self.peak_mb = peak / 2**20
        self.growth_mb = (peak - self._base) / 2**20
