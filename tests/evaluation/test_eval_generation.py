"""Sample generation and loading on a tiny random Llama with a ChatML-style tokenizer."""

from __future__ import annotations

import pytest
import torch

from lmforge.generation import (
    encode_prompt,
    generate_samples,
    load_model_and_tokenizer,
    resolve_stop_token_ids,
)

PROMPTS = ["def add(a, b):", "print('hello')"]


def force_token(model, token_id):
    """Make ``token_id`` the greedy choice at every step (hook on the output projection)."""

    def boost(module, inputs, logits):
        logits = logits.clone()
        logits[..., token_id] += 1e4
        return logits

    return model.lm_head.register_forward_hook(boost)


def test_greedy_generation_is_deterministic(tiny_model, tiny_tokenizer):
    first = generate_samples(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=6)
    second = generate_samples(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=6)
    assert first == second
    assert [s["prompt"] for s in first] == PROMPTS
    assert all(set(s) == {"prompt", "completion", "new_tokens"} for s in first)
    assert all(1 <= s["new_tokens"] <= 6 for s in first)


def test_chat_prompt_has_one_bos_and_ends_with_generation_prompt(tiny_tokenizer):
    ids = encode_prompt(tiny_tokenizer, "def add(a, b):", chat=True)
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    assert tiny_tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    assert encode_prompt(tiny_tokenizer, "x = 1", chat=False) == tiny_tokenizer("x = 1")["input_ids"]


def test_stop_ids_are_eos_then_end_of_turn(tiny_tokenizer):
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert resolve_stop_token_ids(tiny_tokenizer) == [tiny_tokenizer.eos_token_id, im_end]


@pytest.mark.parametrize("stop_token", ["<|im_end|>", "</s>"])
def test_generation_stops_at_end_of_turn_and_eos(tiny_model, tiny_tokenizer, stop_token):
    handle = force_token(tiny_model, tiny_tokenizer.convert_tokens_to_ids(stop_token))
    try:
        [sample] = generate_samples(tiny_model, tiny_tokenizer, PROMPTS[:1], max_new_tokens=10)
    finally:
        handle.remove()
    assert sample["new_tokens"] == 1
    assert sample["completion"] == ""  # special tokens are skipped


def test_generation_runs_to_max_new_tokens_without_stop(tiny_model, tiny_tokenizer):
    word = tiny_tokenizer.convert_tokens_to_ids("def")
    handle = force_token(tiny_model, word)
    try:
        [sample] = generate_samples(tiny_model, tiny_tokenizer, PROMPTS[:1], max_new_tokens=5)
    finally:
        handle.remove()
    assert sample["new_tokens"] == 5
    assert sample["completion"] == "def" * 5


def test_sampling_is_seeded_per_prompt_and_leaves_global_rng_alone(tiny_model, tiny_tokenizer):
    kwargs = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5}
    rng_before = torch.get_rng_state()
    both = generate_samples(tiny_model, tiny_tokenizer, PROMPTS, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), rng_before)

    again = generate_samples(tiny_model, tiny_tokenizer, PROMPTS, seed=7, **kwargs)
    second_alone = generate_samples(tiny_model, tiny_tokenizer, PROMPTS[1:], seed=8, **kwargs)
    assert again == both
    assert second_alone == both[1:]


def test_chat_requires_a_chat_template(tiny_model, tiny_tokenizer):
    tiny_tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        generate_samples(tiny_model, tiny_tokenizer, PROMPTS)
    [sample] = generate_samples(tiny_model, tiny_tokenizer, PROMPTS[:1], chat=False, max_new_tokens=2)
    assert sample["new_tokens"] >= 1


def test_load_model_and_tokenizer(tiny_model_dir, tiny_tokenizer_dir):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, tiny_tokenizer_dir)
    assert not model.training
    assert model.dtype == torch.float32
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 4


def test_load_names_the_missing_directory(tmp_path, tiny_model_dir):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_model_and_tokenizer(missing)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
        load_model_and_tokenizer(tiny_model_dir, tmp_path / "no_such_tokenizer")
