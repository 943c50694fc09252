"""lmforge.generation: its two engines agree with transformers ``generate``, and every caller goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import lmforge.generation as generation
from lmforge.generation import (
    encode_prompt,
    generate,
    generate_reference,
    resolve_pad_token_id,
    resolve_stop_token_ids,
)

PROMPTS = ["def add(a, b):", "print('hello')", "Who are you?", "x"]
SRC = Path(generation.__file__).resolve().parent


def force_token_after(model, token_id, after_calls):
    """From the ``after_calls``-th forward on, make ``token_id`` the greedy choice (a stop mid-answer)."""
    calls = {"n": 0}

    def boost(module, inputs, logits):
        calls["n"] += 1
        if calls["n"] <= after_calls:
            return logits
        logits = logits.clone()
        logits[..., token_id] += 1e4
        return logits

    return model.lm_head.register_forward_hook(boost)


def hf_generate(model, tokenizer, prompt, max_new_tokens):
    """transformers ``generate`` as the callers used it before lmforge.generation: one prompt, greedy."""
    ids = torch.tensor([encode_prompt(tokenizer, prompt, chat=True)])
    stop_ids = resolve_stop_token_ids(tokenizer, model.generation_config)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             eos_token_id=stop_ids, pad_token_id=resolve_pad_token_id(tokenizer, stop_ids),
                             do_sample=False)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("engine", ["auto", "batched", "transformers"])
def test_engines_give_transformers_greedy_outputs(tiny_model, tiny_tokenizer, engine):
    expected = [hf_generate(tiny_model, tiny_tokenizer, p, 12) for p in PROMPTS]
    got = generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=12, engine=engine)
    assert [c.token_ids for c in got] == expected
    batched = generate(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=12, engine=engine, batch_size=3)
    assert [c.token_ids for c in batched] == [c.token_ids for c in got]  # padding did not change a token


@pytest.mark.parametrize("stop_token", ["<|im_end|>", "</s>"])
@pytest.mark.parametrize("engine", ["batched", "transformers"])
def test_engines_stop_like_transformers(tiny_model, tiny_tokenizer, stop_token, engine):
    stop_id = tiny_tokenizer.convert_tokens_to_ids(stop_token)
    handle = force_token_after(tiny_model, stop_id, after_calls=3)
    try:
        expected = hf_generate(tiny_model, tiny_tokenizer, PROMPTS[0], 10)
    finally:
        handle.remove()
    handle = force_token_after(tiny_model, stop_id, after_calls=3)
    try:
        [completion] = generate(tiny_model, tiny_tokenizer, PROMPTS[:1], max_new_tokens=10, engine=engine)
    finally:
        handle.remove()
    assert completion.token_ids == expected and expected[-1] == stop_id and len(expected) <= 4
    assert completion.stopped and completion.finish_reason == "stop"
    assert stop_token not in completion.text  # the stop token counts in new_tokens, never in the text
    assert completion.text == tiny_tokenizer.decode(expected[:-1], skip_special_tokens=True)


def test_message_lists_and_raw_prompts(tiny_model, tiny_tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    [conversation] = generate(tiny_model, tiny_tokenizer, [messages], max_new_tokens=3)
    rendered = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert conversation.prompt_tokens == len(tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"])
    [raw] = generate(tiny_model, tiny_tokenizer, ["x = 1"], chat=False, max_new_tokens=3)
    assert raw.prompt_tokens == len(tiny_tokenizer("x = 1")["input_ids"])
    with pytest.raises(ValueError, match="engine"):
        generate(tiny_model, tiny_tokenizer, ["x"], engine="vllm")


def test_sampling_through_auto_is_transformers_with_per_prompt_seeds(tiny_model, tiny_tokenizer):
    kwargs = {"max_new_tokens": 6, "do_sample": True, "temperature": 1.5, "seed": 3}
    auto = generate(tiny_model, tiny_tokenizer, PROMPTS, **kwargs)
    assert auto == generate(tiny_model, tiny_tokenizer, PROMPTS, engine="transformers", **kwargs)
    ids = [encode_prompt(tiny_tokenizer, p, chat=True) for p in PROMPTS]
    stop_ids = resolve_stop_token_ids(tiny_tokenizer)
    one_by_one = generate_reference(tiny_model, ids, max_new_tokens=6, batch_size=1, stop_ids=stop_ids,
                                    pad_id=resolve_pad_token_id(tiny_tokenizer), do_sample=True, temperature=1.5,
                                    seed=3)
    assert [c.token_ids for c in auto] == one_by_one


def test_server_pyfunc_and_evaluation_call_lmforge_generation(tiny_model, tiny_tokenizer, monkeypatch):
    """Spy on lmforge.generation: the server's reply, the pyfunc's predict and the evaluation steps call it."""
    import pandas as pd

    from lmforge.evaluation.suite import _run_identity_probe
    from lmforge.packaging.chat_model import ChatModel
    from lmforge.packaging.registry import _chat_model

    calls = []
    real_from_ids = generation.generate_from_ids

    def spy(*args, **kwargs):
        calls.append(kwargs.get("max_new_tokens"))
        return real_from_ids(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_from_ids", spy)

    chat = ChatModel(model=tiny_model, tokenizer=tiny_tokenizer, version="t", max_context=128,
                     stop_ids=resolve_stop_token_ids(tiny_tokenizer), forbidden_text=())
    chat.reply([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0.0)
    assert calls == [2]

    pyfunc = _chat_model(3)
    pyfunc.model, pyfunc.tokenizer = tiny_model, tiny_tokenizer
    pyfunc.predict(None, pd.DataFrame({"prompt": ["hi"]}))
    assert calls == [2, 3]

    _run_identity_probe(tiny_model, tiny_tokenizer, {"name": "Forge", "developer": "lmforge"}, 4)
    assert len(calls) > 2 and set(calls[2:]) == {4}


def test_no_other_module_generates_or_renders_chat():
    """Only lmforge.generation calls ``model.generate(`` or renders chat prompts; the callers import it."""
    allowed = {
        "tokenizer/chat_template.py": "writes the one template (jinja's compiled.generate renders it)",
        "tokenizer/chat_tokenizer.py": "renders training examples (the template audit holds its prompts equal to ours)",
        "packaging/card_sections.py": "a usage snippet for the model card's readers, as text",
        "packaging/export.py": "checks the packaged tokenizer renders the template as the source one does",
    }
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        name = str(path.relative_to(SRC))
        if name == "generation.py" or name in allowed:
            continue
        if re.search(r"(?<!self)\.generate\(|apply_chat_template\(", path.read_text()):
            offenders.append(name)
    assert offenders == []
    for caller in ("evaluation/suite.py", "evaluation/speed.py", "packaging/chat_model.py", "packaging/registry.py",
                   "../../bench/generation_speed.py"):
        assert "lmforge.generation import" in (SRC / caller).read_text(), caller


def rig_chain(model, chain):
    """Make greedy decoding follow ``chain`` (token a -> the next token; no token twice), whatever the position.

    Every attention and MLP output projection is zeroed, so the final hidden state at a position is
    a function of its token alone (embedding -> final norm); the output head is untied and its row
    of token ``b`` set to the direction of ``h(a)`` for each pair ``a -> b`` (all other rows zero),
    so ``b`` has the largest logit after ``a``.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "o_proj.bias", "down_proj.bias")):
                param.zero_()
        hidden = model.model(input_ids=torch.tensor([chain[:-1]])).last_hidden_state[0]  # (n, d)
        head = torch.nn.Linear(hidden.shape[1], model.get_output_embeddings().weight.shape[0], bias=False)
        head.weight.zero_()
        for h, b in zip(hidden, chain[1:], strict=True):
            head.weight[b] = 10 * h / h.norm()
    model.config.tie_word_embeddings = False
    model.set_output_embeddings(head)
    return model


@pytest.mark.parametrize("family", ["gemma", "llama3", "qwen2", "internlm2"])  # BLOOM: no o_proj to rig
@pytest.mark.parametrize("engine", ["batched", "transformers"])
def test_generation_stops_on_the_models_own_end_of_turn(family, engine, tmp_path):
    """A foreign model rigged to answer two words and then its family's end-of-turn token (Gemma's
    ``<end_of_turn>``, Llama 3's ``<|eot_id|>``, neither its tokenizer's EOS; Qwen2's and InternLM2's
    ``<|im_end|>``) stops ON that token, and the text leaves it out; Gemma's and Llama 3's stop id comes
    from the model's generation_config (``<|im_end|>`` is a stop id whenever the vocabulary has it)."""
    from foreign_models import END_OF_TURN, build_foreign_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = build_foreign_model(family, tmp_path / family)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    chatml = END_OF_TURN[family] == "<|im_end|>"
    assert eot in resolve_stop_token_ids(tokenizer, model.generation_config)
    if not chatml:
        assert eot != tokenizer.eos_token_id
        assert eot not in resolve_stop_token_ids(tokenizer)  # the tokenizer alone does not know it

    messages = [{"role": "user", "content": "Say hello."}]
    prompt = encode_prompt(tokenizer, messages, chat=True)
    words = list(dict.fromkeys(i for i in tokenizer("Hello world, go on", add_special_tokens=False)["input_ids"]
                               if i not in prompt))
    answer, more = words[:2], words[2]
    rig_chain(model, [prompt[-1], *answer, eot, more])  # after eot it would go on, were eot not a stop id
    [completion] = generate(model, tokenizer, [messages], max_new_tokens=10, engine=engine)
    assert completion.token_ids == [*answer, eot]
    assert completion.stopped and completion.finish_reason == "stop"
    assert completion.text == tokenizer.decode(answer) and END_OF_TURN[family] not in completion.text

    if chatml:
        return
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # without the model's stop ids: no stop
    [runaway] = generate(model, tokenizer, [messages], max_new_tokens=6, engine=engine)
    assert not runaway.stopped and runaway.token_ids[:4] == [*answer, eot, more]
