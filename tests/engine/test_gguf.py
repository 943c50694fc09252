"""GGUF export of a packaged model: every format, its metadata (our template and special ids), the Ollama Modelfile.

The exported files are the session fixture ``engine_package`` (tests/conftest.py): a tiny random Llama with the
chain's sentencepiece tokenizer, converted by llama.cpp's own converter and quantized by ``llama-quantize``.
"""

from __future__ import annotations

import hashlib

import pytest

from lmforge.engine.gguf import (
    GGUF_FORMATS,
    chat_template_to_go,
    export_gguf,
    gguf_metadata,
    ollama_modelfile,
    render_go_template,
)

# llama.cpp's llama_ftype values (include/llama.h): what general.file_type must say for each format
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}

CONVERSATIONS = [
    [{"role": "user", "content": "def add(a, b):"}],
    [{"role": "system", "content": "You are Forge."}, {"role": "user", "content": "你好，请介绍一下你自己。"},
     {"role": "assistant", "content": "我是 Forge。"}, {"role": "user", "content": "日本語で答えてください。\n改行も。"}],
    [{"role": "user", "content": "  leading spaces\tand a tab "}, {"role": "assistant", "content": ""},
     {"role": "user", "content": "<|im_start|> inside text"}],
]


def test_every_format_is_written_and_each_is_smaller(engine_package):
    _, gguf = engine_package
    assert tuple(gguf) == GGUF_FORMATS
    sizes = [gguf[fmt].bytes for fmt in GGUF_FORMATS]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes), sizes
    # f16 halves the 2-D weights; q8_0 is 8.5 bits and q4_k_m ~4.5-6 bits per weight (+ the f32 norms)
    assert 0.45 < sizes[1] / sizes[0] < 0.55 and 0.25 < sizes[2] / sizes[0] < 0.3 and sizes[3] / sizes[0] < 0.2
    for fmt, file in gguf.items():
        assert file.path.name == f"engine-tiny-{fmt}.gguf" and file.path.stat().st_size == file.bytes
        assert hashlib.sha256(file.path.read_bytes()).hexdigest() == file.sha256
        assert gguf_metadata(file.path)["file_type"] == FILE_TYPES[fmt]


def test_metadata_carries_our_template_and_special_ids(engine_package, chat_template):
    from transformers import AutoTokenizer

    hf_dir, gguf = engine_package
    tok = AutoTokenizer.from_pretrained(hf_dir)
    for fmt, file in gguf.items():
        meta = gguf_metadata(file.path)
        assert meta["chat_template"] == chat_template, fmt
        assert (meta["bos_token_id"], meta["eos_token_id"]) == (tok.bos_token_id, tok.eos_token_id), fmt
        assert meta["eot_token_id"] == tok.convert_tokens_to_ids("<|im_end|>"), fmt
        # our template writes BOS; no dummy-prefix space (the sentencepiece model has none)
        assert meta["add_bos_token"] is False and meta["add_space_prefix"] is False, fmt
        assert (meta["vocab_size"], meta["context_length"]) == (len(tok), 128), fmt


def test_export_refuses_bad_inputs(engine_package, tmp_path):
    hf_dir, _ = engine_package
    with pytest.raises(ValueError, match="unknown GGUF format"):
        export_gguf(hf_dir, tmp_path, name="x", formats=("q3_k",))
    with pytest.raises(FileNotFoundError, match="sentencepiece model not found"):
        export_gguf(hf_dir, tmp_path, name="x", tokenizer_model=tmp_path / "tokenizer.model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_gguf(tmp_path, tmp_path, name="x")


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_ollama_template_renders_like_our_jinja_template(chat_template, messages):
    from transformers.utils.chat_template_utils import render_jinja_template

    go = chat_template_to_go(chat_template)
    [jinja], _ = render_jinja_template(conversations=[messages], chat_template=chat_template,
                                       add_generation_prompt=True, bos_token="<s>")
    assert render_go_template(go, messages) == jinja


def test_modelfile_names_the_file_the_stop_and_the_context(chat_template):
    text = ollama_modelfile("tiny-q4_k_m.gguf", chat_template, ["<|im_end|>"], num_ctx=512)
    lines = text.splitlines()
    assert lines[0] == "FROM ./tiny-q4_k_m.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in lines and lines[-1] == "PARAMETER num_ctx 512"
    assert f'TEMPLATE """{chat_template_to_go(chat_template)}"""' in text


def test_a_role_dependent_template_is_refused():
    llama2 = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
              "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
    with pytest.raises(ValueError, match="differently by role|cannot express"):
        chat_template_to_go(llama2)
