"""Our batched generator against transformers ``generate`` on tiny random models, and the speed metrics."""

from __future__ import annotations

import pytest
import torch

from lmforge.evaluation.speed import (
    compare_generation_speed,
    measure_speed,
    percentile,
    speed_metrics,
)
from lmforge.generation import generate_batched, generate_reference

CHAT_PROMPTS = ["def add(a, b):", "print('hello')", "for i in range(10):", "class Point:", "x"]


def random_prompts(n: int, vocab: int, seed: int = 1) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 20, (n,), generator=gen).tolist()  # unequal: batches are left-padded
    return [torch.randint(5, vocab, (k,), generator=gen).tolist() for k in lengths]


def small_model(family: str = "llama", kv_heads: int = 2):
    from transformers import GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                  intermediate_size=64, vocab_size=300, max_position_embeddings=128, head_dim=8)
    if family == "gemma":
        return GemmaForCausalLM(GemmaConfig(**common)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


@pytest.mark.parametrize(("family", "kv_heads", "batch_size"),
                         [("llama", 2, 1), ("llama", 2, 4), ("llama", 4, 3), ("gemma", 1, 8)])
def test_greedy_equals_generate_token_for_token(family, kv_heads, batch_size):
    model = small_model(family, kv_heads)
    prompts = random_prompts(7, 300)
    ours = generate_batched(model, prompts, max_new_tokens=12, batch_size=batch_size, pad_id=0)
    ref = generate_reference(model, prompts, max_new_tokens=12, batch_size=batch_size, pad_id=0)
    assert ours == ref
    assert all(len(c) == 12 for c in ours)


def test_early_exit_on_stop_tokens_matches_generate():
    model = small_model()
    prompts = random_prompts(7, 300)
    free = generate_reference(model, prompts, max_new_tokens=12, batch_size=4, pad_id=0)
    stop = [free[0][3], free[2][5]]  # tokens the model does emit, so some rows stop early
    ours = generate_batched(model, prompts, max_new_tokens=12, batch_size=4, pad_id=0, stop_ids=stop)
    ref = generate_reference(model, prompts, max_new_tokens=12, batch_size=4, pad_id=0, stop_ids=stop)
    assert ours == ref
    assert len(ours[0]) <= 4 and ours[0][-1] in stop
    assert any(len(c) == 12 for c in ours)  # the rows that did not stop ran on after the others left

    forced = generate_batched(model, prompts, max_new_tokens=12, batch_size=4, pad_id=0, stop_ids=stop,
                              min_new_tokens=12)
    assert forced == generate_reference(model, prompts, max_new_tokens=12, batch_size=4, pad_id=0,
                                        stop_ids=stop, min_new_tokens=12)
    assert all(len(c) == 12 for c in forced)


def test_model_without_fast_path_uses_its_forward_and_still_matches(monkeypatch):
    import lmforge.generation as speed

    model = small_model()
    prompts = random_prompts(5, 300, seed=3)
    monkeypatch.setattr(speed, "FAST_PATH_MODEL_TYPES", ())
    ours = generate_batched(model, prompts, max_new_tokens=8, batch_size=3, pad_id=0, stop_ids=[7])
    assert ours == generate_reference(model, prompts, max_new_tokens=8, batch_size=3, pad_id=0, stop_ids=[7])


def test_sampling_is_seeded_and_changes_with_the_seed():
    model = small_model()
    prompts = random_prompts(4, 300)
    kwargs = dict(max_new_tokens=10, batch_size=4, pad_id=0, do_sample=True, temperature=2.0, top_k=50)
    first = generate_batched(model, prompts, seed=5, **kwargs)
    assert first == generate_batched(model, prompts, seed=5, **kwargs)
    assert first != generate_batched(model, prompts, seed=6, **kwargs)
    assert all(len(c) == 10 and all(0 <= t < 300 for t in c) for c in first)
    with pytest.raises(ValueError, match="temperature"):
        generate_batched(model, prompts, seed=5, **{**kwargs, "temperature": 0.0})


def test_bad_arguments_say_what_is_wrong():
    model = small_model()
    with pytest.raises(ValueError, match=r"prompt\(s\) \[1\]"):
        generate_batched(model, [[5, 6], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_batched(model, [[5]], max_new_tokens=0)


def test_measure_speed_metrics(tiny_model, tiny_tokenizer):
    result = measure_speed(tiny_model, tiny_tokenizer, CHAT_PROMPTS, max_new_tokens=6, batch_size=2,
                           min_new_tokens=6)
    assert result["requests"] == 5 and result["batches"] == 3
    assert result["new_tokens"] == 30 == sum(len(c) for c in result["completions"])
    assert result["tokens_per_s"] == pytest.approx(30 / result["seconds"])
    assert result["requests_per_s"] == pytest.approx(5 / result["seconds"])
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p95"] <= result["seconds"] * 1000
    # The peak is the process's peak RSS (weights included), not its growth over the run: the growth of a
    # warmed-up CPU run is ~0 and was once reported as "peak memory" (sft.speed.peak_memory_mb = 0.0039).
    assert result["peak_memory_kind"] == "rss_peak"
    assert result["peak_memory_mb"] > 10 and 0 <= result["memory_growth_mb"] < result["peak_memory_mb"]
    assert result["latency_timings"] == 3  # one timing per batch: the percentiles come from 3 numbers
    with pytest.raises(ValueError, match="engine"):
        measure_speed(tiny_model, tiny_tokenizer, CHAT_PROMPTS, 4, 2, engine="vllm")


def test_one_batch_gives_one_timing_so_p50_equals_p95(tiny_model, tiny_tokenizer):
    """A request's response time is its batch's wall time: all prompts in one batch share one timing."""
    from lmforge.evaluation.speed import speed_metrics

    result = measure_speed(tiny_model, tiny_tokenizer, CHAT_PROMPTS, max_new_tokens=3, batch_size=8)
    assert result["latency_timings"] == 1 and result["latency_ms_p50"] == result["latency_ms_p95"]
    comparison = compare_generation_speed(tiny_model, tiny_tokenizer, CHAT_PROMPTS, max_new_tokens=3, batch_size=8)
    metrics = speed_metrics(comparison)
    assert metrics["speed.latency_timings"] == 1.0 and metrics["speed.peak_memory_mb"] > 10
    assert "speed.memory_growth_mb" in metrics


def test_compare_generation_speed_reports_ratio_and_equality(tiny_model, tiny_tokenizer):
    comparison = compare_generation_speed(tiny_model, tiny_tokenizer, CHAT_PROMPTS, max_new_tokens=5, batch_size=4)
    assert comparison["outputs_equal"] and comparison["rows_equal"] == 5
    ours, ref = comparison["ours"], comparison["transformers"]
    assert ours["new_tokens"] == ref["new_tokens"] == 25  # min_new_tokens: equal work for both
    assert comparison["tokens_per_s_ratio"] == pytest.approx(ours["tokens_per_s"] / ref["tokens_per_s"])
    metrics = speed_metrics(comparison)
    assert metrics["speed.tokens_per_s"] == ours["tokens_per_s"]
    assert metrics["speed.transformers.tokens_per_s"] == ref["tokens_per_s"]
    assert metrics["speed.outputs_equal"] == 1.0
    assert all(isinstance(v, float) for v in metrics.values())


def test_percentile_interpolates_like_numpy():
    assert percentile([10.0], 95) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    with pytest.raises(ValueError):
        percentile([], 50)
