"""Batched generation with a preallocated KV cache, and its speed against transformers ``generate``.

``generate_batched`` runs left-padded batches through the model's own modules (embedding, norms,
projections, MLPs, rotary embedding, output head) but with our decode loop: one preallocated K/V
buffer per layer (no concatenation per step), a boolean padding mask built once per batch, no logits
processors, and early exit: a row that emits a stop token is dropped from the batch (its cache rows
too), so the remaining rows run a smaller batch. Greedy or sampling (temperature, top-k; seeded),
``min_new_tokens`` (stop tokens suppressed until then, as transformers does), all under
``torch.inference_mode``. Greedy outputs equal ``model.generate`` token for token (tested): the
attention call mirrors transformers' SDPA path (``enable_gqa`` without a mask, ``repeat_kv`` with one
in the prefill, grouped queries per key/value head in the decode step).

The fast path covers decoder-only models laid out like Llama (``llama``, ``gemma``: ``model.layers[i]``
with ``self_attn.{q,k,v,o}_proj``, ``input_layernorm``, ``mlp``, ``post_attention_layernorm``); any
other model runs the same loop through its own ``forward`` with a ``DynamicCache`` (correct, not faster).

``measure_speed`` times one engine ("ours" or "transformers") on a prompt set: requests/s, generated
tokens/s, response time p50/p95 (a request's response time is the wall time of its batch: a batch
answers its requests together) and peak memory (CUDA: max allocated during the run; CPU: peak RSS
over the RSS before, sampled every 5 ms). ``compare_generation_speed`` runs both engines on the same
prompts and reports the ratio; it is what the evaluation stage calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

FAST_PATH_MODEL_TYPES = ("llama", "gemma")
"""``config.model_type`` values our own decode loop runs natively (others use the model's forward)."""

ENGINES = ("ours", "transformers")


# --- our generator --------------------------------------------------------------------------------


def generate_batched(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> list[list[int]]:
    """New token ids per prompt (in order), batches of ``batch_size`` in the given order.

    A completion ends with the stop token when it stopped on one (as ``generate`` returns it), else
    holds ``max_new_tokens`` ids. Sampling draws from one generator seeded with ``seed`` per batch.
    """
    _check_prompts(prompt_ids, max_new_tokens, batch_size)
    out: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        out.extend(generate_batch(model, prompt_ids[start:start + batch_size], max_new_tokens=max_new_tokens,
                                  stop_ids=stop_ids, pad_id=pad_id, min_new_tokens=min_new_tokens,
                                  do_sample=do_sample, temperature=temperature, top_k=top_k, seed=seed + start))
    return out


def generate_batch(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> list[list[int]]:
    """One left-padded batch through our decode loop; see ``generate_batched``."""
    import torch

    _check_prompts(prompt_ids, max_new_tokens, len(prompt_ids) or 1)
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    device = next(model.parameters()).device
    ids, real = _left_pad(prompt_ids, pad_id, device)  # (B, P) each
    batch, prompt_len = ids.shape
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed) if do_sample else None
    step_fn = _FastDecoder(model) if _fast_path_ok(model) else _ModelForwardDecoder(model)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
            lengths = torch.zeros(batch, dtype=torch.long, device=device)
            rows = torch.arange(batch, device=device)  # active row -> original row
            logits = step_fn.prefill(ids, real, max_len=prompt_len + max_new_tokens)  # (B, V)
            for step in range(max_new_tokens):
                if step < min_new_tokens and stop.numel():
                    logits[:, stop] = float("-inf")
                if do_sample:
                    next_ids = _sample(logits, temperature, top_k, gen)
                else:
                    next_ids = logits.argmax(dim=-1)  # (b,)
                out[rows, step] = next_ids
                lengths[rows] = step + 1
                if step + 1 == max_new_tokens:
                    break
                done = torch.isin(next_ids, stop) if stop.numel() else None
                if done is not None and bool(done.any()):
                    keep = (~done).nonzero().squeeze(1)
                    if keep.numel() == 0:
                        break
                    rows, next_ids = rows[keep], next_ids[keep]
                    step_fn.select_rows(keep)
                logits = step_fn.decode(next_ids)
    finally:
        model.train(was_training)
    return [row[:n] for row, n in zip(out.tolist(), lengths.tolist(), strict=True)]


class _FastDecoder:
    """Llama-layout forward with a preallocated K/V buffer per layer: (B, n_kv, max_len, head_dim)."""

    def __init__(self, model: Any):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rotary = apply_rotary_pos_emb
        self.base = model.model
        self.head = model.get_output_embeddings()
        self.layers = list(self.base.layers)[: model.config.num_hidden_layers]
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.groups = attn.num_key_value_groups
        self.scaling = attn.scaling

    def prefill(self, ids: Any, real: Any, *, max_len: int) -> Any:
        import torch

        batch, prompt_len = ids.shape
        n_kv = self.layers[0].self_attn.k_proj.out_features // self.head_dim
        dtype, device = self.head.weight.dtype, ids.device
        self.keys = [torch.empty(batch, n_kv, max_len, self.head_dim, dtype=dtype, device=device) for _ in self.layers]
        self.values = [torch.empty_like(k) for k in self.keys]
        # transformers drops the mask when no row is padded (SDPA is_causal); mirror that for equal numerics.
        self.padded = not bool(real.all())
        self.real = torch.zeros(batch, max_len, dtype=torch.bool, device=device)  # (B, T) which slots are tokens
        self.real[:, :prompt_len] = real
        self.length = prompt_len
        positions = (real.long().cumsum(-1) - 1).masked_fill(~real, 1)  # as generate: first real token at 0
        self.next_position = positions[:, -1] + 1  # (B,)
        mask = None
        if self.padded:  # causal and not a pad key; a pad query sees itself so no softmax row is empty
            causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
            eye = torch.eye(prompt_len, dtype=torch.bool, device=device)
            mask = (causal & (real[:, None, :] | eye))[:, None]  # (B, 1, P, P)
        return self._forward(ids, positions, mask, start=0)

    def decode(self, next_ids: Any) -> Any:
        self.real[:, self.length] = True
        self.length += 1
        mask = self.real[:, None, None, : self.length] if self.padded else None  # (b, 1, 1, T)
        positions = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self._forward(next_ids[:, None], positions, mask, start=self.length - 1)

    def select_rows(self, keep: Any) -> None:
        self.keys = [k.index_select(0, keep) for k in self.keys]
        self.values = [v.index_select(0, keep) for v in self.values]
        self.real = self.real.index_select(0, keep)
        self.next_position = self.next_position.index_select(0, keep)

    def _forward(self, ids: Any, positions: Any, mask: Any, *, start: int) -> Any:
        hidden = self.base.embed_tokens(ids)  # (b, q, d); gemma's embedding scales itself
        cos, sin = self.base.rotary_emb(hidden, positions)
        for i, layer in enumerate(self.layers):
            residual = hidden
            hidden = residual + self._attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, mask,
                                                i, start)
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = self.base.norm(hidden[:, -1:])  # only the last position's logits are needed
        return self.head(hidden)[:, -1].float()  # (b, V)

    def _attention(self, attn: Any, x: Any, cos: Any, sin: Any, mask: Any, i: int, start: int) -> Any:
        import torch.nn.functional as F  # noqa: N812

        b, q_len, _ = x.shape
        shape = (b, q_len, -1, self.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)  # (b, nh, q, hd)
        k = attn.k_proj(x).view(shape).transpose(1, 2)  # (b, n_kv, q, hd)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        q, k = self.rotary(q, k, cos, sin)
        self.keys[i][:, :, start:start + q_len] = k
        self.values[i][:, :, start:start + q_len] = v
        keys = self.keys[i][:, :, : start + q_len]  # (b, n_kv, T, hd)
        values = self.values[i][:, :, : start + q_len]
        n_heads = q.shape[1]
        if mask is None:
            out = F.scaled_dot_product_attention(q, keys, values, scale=self.scaling, is_causal=q_len > 1,
                                                 enable_gqa=self.groups > 1)
        elif q_len == 1 and self.groups > 1:  # the n_rep query heads of a kv head as n_rep "positions"
            out = F.scaled_dot_product_attention(q.reshape(b, n_heads // self.groups, self.groups, -1), keys,
                                                 values, attn_mask=mask, scale=self.scaling)
        else:
            if self.groups > 1:
                keys = keys.repeat_interleave(self.groups, dim=1)
                values = values.repeat_interleave(self.groups, dim=1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
        out = out.reshape(b, n_heads, q_len, -1).transpose(1, 2).reshape(b, q_len, -1)
        return attn.o_proj(out)


class _ModelForwardDecoder:
    """Any causal LM: the model's own forward with a ``DynamicCache`` (no preallocation, no speed-up)."""

    def __init__(self, model: Any):
        self.model = model

    def prefill(self, ids: Any, real: Any, *, max_len: int) -> Any:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.mask = real.long()
        positions = (self.mask.cumsum(-1) - 1).masked_fill(~real, 1)
        self.next_position = positions[:, -1] + 1
        return self._forward(ids, positions)

    def decode(self, next_ids: Any) -> Any:
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        positions = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self._forward(next_ids[:, None], positions)

    def select_rows(self, keep: Any) -> None:
        self.cache.batch_select_indices(keep)
        self.mask = self.mask.index_select(0, keep)
        self.next_position = self.next_position.index_select(0, keep)

    def _forward(self, ids: Any, positions: Any) -> Any:
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()


def _fast_path_ok(model: Any) -> bool:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in FAST_PATH_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return False
    rope = getattr(config, "rope_parameters", None) or {}
    return rope.get("rope_type", "default") == "default"


def _sample(logits: Any, temperature: float, top_k: int, gen: Any) -> Any:
    import torch

    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)


def _left_pad(prompt_ids: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(prompt_ids), width), dtype=torch.bool)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        real[i, width - len(p):] = True
    return ids.to(device), real.to(device)


def _check_prompts(prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    empty = [i for i, p in enumerate(prompt_ids) if len(p) == 0]
    if empty:
        raise ValueError(f"prompt(s) {empty[:5]} encode to no tokens: every prompt needs at least one token")


# --- the reference --------------------------------------------------------------------------------


def generate_reference(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    min_new_tokens: int = 0,
) -> list[list[int]]:
    """Greedy transformers ``model.generate`` on the same left-padded batches; same output layout as ours."""
    import torch

    _check_prompts(prompt_ids, max_new_tokens, batch_size)
    device = next(model.parameters()).device
    stops = set(stop_ids)
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(prompt_ids), batch_size):
                ids, real = _left_pad(prompt_ids[start:start + batch_size], pad_id, device)
                generated = model.generate(
                    input_ids=ids, attention_mask=real.long(), max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens or None, do_sample=False, eos_token_id=list(stop_ids) or None,
                    pad_token_id=pad_id,
                )
                for row in generated[:, ids.shape[1]:].tolist():
                    end = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))
                    out.append(row[:end])
    finally:
        model.train(was_training)
    return out


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
    ``requests_per_s``, ``tokens_per_s`` (generated tokens), ``latency_ms_p50``/``_p95``,
    ``peak_memory_mb`` and ``peak_memory_kind``, and the ``completions`` (new token ids per prompt).
    ``warmup`` runs the first batch once untimed (allocator, kernel selection).
    """
    from lmforge.evaluation.generation import encode_prompt, resolve_stop_token_ids

    stop_ids = resolve_stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    prompt_ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts]
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
    _check_prompts(prompt_ids, max_new_tokens, batch_size)
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
        "peak_memory_mb": memory.peak_mb,
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
    from lmforge.evaluation.generation import encode_prompt, resolve_stop_token_ids

    stop_ids = resolve_stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    prompt_ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts]
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
    keys = ("requests_per_s", "tokens_per_s", "latency_ms_p50", "latency_ms_p95", "peak_memory_mb")
    metrics = {f"{prefix}.{k}": float(ours[k]) for k in keys if ours.get(k) is not None}
    metrics.update({f"{prefix}.transformers.{k}": float(ref[k]) for k in keys if ref.get(k) is not None})
    metrics[f"{prefix}.tokens_per_s_ratio"] = float(comparison["tokens_per_s_ratio"])
    metrics[f"{prefix}.outputs_equal"] = float(comparison["outputs_equal"])
    return metrics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (numpy's default method) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of an empty list")
    rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def _engine(engine: str, model: Any, **kwargs: Any) -> Callable[[list[list[int]]], list[list[int]]]:
    if engine == "ours":
        return lambda batch: generate_batch(model, batch, **kwargs)
    return lambda batch: generate_reference(model, batch, batch_size=len(batch), **kwargs)


def _sync(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


class _PeakMemory:
    """Peak memory over a block: CUDA max allocated above the start, or peak RSS above the start (sampled)."""

    def __init__(self, device: Any, interval_s: float = 0.005):
        self.device, self.interval_s = device, interval_s
        self.peak_mb: float | None = None
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_delta"

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
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.peak_mb = (self._peak - self._base) / 2**20
