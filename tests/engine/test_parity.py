"""Template parity on real llama-server processes: every GGUF format of the tiny engine package prompts like our
chat path, f32 generates our greedy tokens, the engine stops where we stop; an altered template and a GGUF whose
end-of-turn is not end-of-generation fail with the first differing token named."""

from __future__ import annotations

import shutil

import pytest

from lmforge.engine.parity import TemplateParityError, check_parity, reference_completions
from lmforge.packaging.gguf_release import FULL_PRECISION_ARGS
from lmforge.tokenizer.template_audit import AUDIT_CONVERSATION

CONVERSATIONS = [
    [dict(m) for m in AUDIT_CONVERSATION[:-1]],  # system + en and zh exchanges, a generation prompt after zh
    [{"role": "user", "content": "日本語で短く答えてください。"}],
    [{"role": "user", "content": "def add(a, b):"}],
]
N_TOKENS = 8


@pytest.fixture(scope="module")
def package_model(engine_package):
    """The packaged HF model and tokenizer of the engine package, and our side of every conversation."""
    from lmforge.generation import load_model_and_tokenizer

    hf_dir, gguf = engine_package
    model, tokenizer = load_model_and_tokenizer(hf_dir)
    return model, tokenizer, reference_completions(tokenizer, model, CONVERSATIONS, n_tokens=N_TOKENS), gguf


def _server(path, **kwargs):
    from lmforge.engine.server import LlamaServer

    return LlamaServer(path, parallel=1, threads=2, **kwargs).start()


@pytest.mark.parametrize("fmt", ["f32", "f16", "q8_0", "q4_k_m"])
def test_every_format_prompts_generates_and_stops_as_our_chat_path(fmt, package_model):
    model, tokenizer, reference, gguf = package_model
    with _server(gguf[fmt].path, extra_args=FULL_PRECISION_ARGS if fmt == "f32" else ()) as server:
        result = check_parity(server.url, tokenizer, model, CONVERSATIONS, n_tokens=N_TOKENS, greedy=fmt == "f32",
                              label=fmt, reference=reference)
    assert result["prompt_ids_equal"] and result["stop_ok"] and result["conversations"] == len(CONVERSATIONS)
    ours = [r["token_ids"] for r in reference]
    engine = [c["engine"] for c in result["per_conversation"]]
    assert all(len(e) >= 1 for e in engine)
    if fmt == "f32":  # full precision: our greedy tokens exactly, conversation by conversation
        assert engine == ours and result["greedy_exact"] == len(CONVERSATIONS)
        assert result["greedy_agreeing_prefix"] == [len(o) for o in ours]
    else:  # quantized: the agreeing prefix is measured, each <= our length and consistent with the tokens
        for prefix, o, e in zip(result["greedy_agreeing_prefix"], ours, engine, strict=True):
            assert o[:prefix] == e[:prefix] and (prefix == len(o) or o[prefix] != (e[prefix:] or [None])[0])


ALTERED = {
    "role marker": lambda t: t.replace("'<|im_start|>assistant\\n'", "'<|im_start|>model\\n'"),
    "doubled BOS": lambda t: t.replace("{{ bos_token }}", "{{ bos_token }}{{ bos_token }}"),
    "dropped BOS": lambda t: t.replace("{{ bos_token }}", ""),  # the GGUF's add_bos_token is false: none added
}
FIRST_DIFFERENCE = {"doubled BOS": 1, "dropped BOS": 0}


@pytest.mark.parametrize("change", sorted(ALTERED))
def test_an_altered_template_fails_with_the_first_differing_token(change, package_model):
    """The engine given another template: parity fails at the first token where that template's prompt (rendered
    and encoded by transformers, which agrees with llama.cpp on the real template) leaves ours, naming both."""
    from lmforge.engine.parity import first_difference

    model, tokenizer, reference, gguf = package_model
    altered = ALTERED[change](tokenizer.chat_template)
    assert altered != tokenizer.chat_template
    text = tokenizer.apply_chat_template(CONVERSATIONS[0], chat_template=altered, add_generation_prompt=True,
                                         tokenize=False)
    theirs = tokenizer(text, add_special_tokens=False)["input_ids"]
    ours = reference[0]["prompt_ids"]
    at = first_difference(ours, theirs)
    assert at is not None and at == FIRST_DIFFERENCE.get(change, at)
    with _server(gguf["f32"].path, chat_template=altered) as server:
        with pytest.raises(TemplateParityError) as err:
            check_parity(server.url, tokenizer, model, CONVERSATIONS, n_tokens=N_TOKENS, greedy=True, label="f32",
                         reference=reference)
    message = str(err.value)
    assert "\n" not in message
    piece = tokenizer.convert_ids_to_tokens
    assert message.startswith(f"f32, conversation 0: prompt ids (the engine's /apply-template + /tokenize against "
                              f"encode_chat) differ at position {at} of {len(ours)}/{len(theirs)}: "
                              f"ours {piece([ours[at]])[0]!r} (id {ours[at]}), "
                              f"engine {piece([theirs[at]])[0]!r} (id {theirs[at]})"), message


def _stop_model(hf_dir, out_dir):
    """The package's model rewired so its greedy first token is <|im_end|> whatever the prompt: attention and MLP
    outputs zeroed (the residual stream stays the token embedding), every embedding one vector v, and the lm_head
    row of <|im_end|> 4 v while the others are small noise. Tokenizer and template are the package's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        v = torch.randn(model.config.hidden_size, generator=generator)
        model.model.embed_tokens.weight[:] = v
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.randn(model.lm_head.weight.shape, generator=generator) * 0.01
        head[eot] = 4 * v
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(out_dir)
    for f in hf_dir.iterdir():  # tokenizer, template, generation config (stop ids) of the package
        if f.is_file() and not f.name.startswith(("model", "config")):
            shutil.copy(f, out_dir / f.name)
    return out_dir, eot


@pytest.fixture(scope="module")
def stop_package(engine_package, chain_tokenizer_dir, tmp_path_factory):
    from lmforge.engine.gguf import export_gguf
    from lmforge.generation import load_model_and_tokenizer

    hf_dir, _ = engine_package
    root = tmp_path_factory.mktemp("stop")
    package, eot = _stop_model(hf_dir, root / "package")
    gguf = export_gguf(package, root / "gguf", name="stop", formats=("f32",),
                       tokenizer_model=f"{chain_tokenizer_dir}/tokenizer.model")["f32"]
    model, tokenizer = load_model_and_tokenizer(package)
    return model, tokenizer, gguf.path, eot


def test_the_engine_stops_at_end_of_turn_exactly_where_we_do(stop_package):
    model, tokenizer, gguf, eot = stop_package
    reference = reference_completions(tokenizer, model, CONVERSATIONS, n_tokens=N_TOKENS)
    assert all(r["token_ids"] == [eot] and r["stopped"] for r in reference)  # ours: <|im_end|> first, then stop
    with _server(gguf) as server:
        result = check_parity(server.url, tokenizer, model, CONVERSATIONS, n_tokens=N_TOKENS, greedy=True,
                              label="f32", reference=reference)
    for conversation in result["per_conversation"]:
        assert conversation["engine"] == [eot] and conversation["engine_stop_type"] == "eos"
        assert conversation["chat_finish_reason"] == "stop" and conversation["chat_content"] == ""


def test_a_gguf_whose_end_of_turn_is_not_end_of_generation_is_caught(stop_package, tmp_path):
    """The same file as a stock conversion of a tokenizer whose end of turn llama.cpp does not know by name would
    be: no ``eot_token_id`` of its own (it points at EOS, as when unset) and ``<|im_end|>`` renamed ``<|im_eot|>``
    in the vocabulary and the template alike (same byte length, in place). Prompt ids still equal ours; the
    engine emits the end-of-turn token and runs on, and parity names it."""
    from gguf import GGUFReader

    model, tokenizer, gguf, eot = stop_package
    renamed = tmp_path / "renamed.gguf"
    shutil.copy(gguf, renamed)
    reader = GGUFReader(renamed, "r+")
    field = reader.get_field("tokenizer.ggml.eot_token_id")
    assert int(field.parts[field.data[0]][0]) == eot  # export_gguf pins our end of turn as EOT
    field.parts[field.data[0]][0] = tokenizer.eos_token_id
    metadata_end = reader.data_offset
    del reader, field  # flush the memory map
    with open(renamed, "r+b") as fh:
        head = fh.read(metadata_end)
        assert head.count(b"<|im_end|>") >= 2  # the vocabulary entry and the chat template
        fh.seek(0)
        fh.write(head.replace(b"<|im_end|>", b"<|im_eot|>"))
    reference = reference_completions(tokenizer, model, CONVERSATIONS[:1], n_tokens=N_TOKENS)
    with _server(renamed) as server:
        with pytest.raises(TemplateParityError, match=r"^f32, conversation 0: the engine generated stop token "
                                                      rf"'<\|im_end\|>' \(id {eot}\) at position 0 and went on"):
            check_parity(server.url, tokenizer, model, CONVERSATIONS[:1], n_tokens=N_TOKENS, greedy=True,
                         label="f32", reference=reference)
