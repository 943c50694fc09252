"""The foreign test models of tests/foreign_models.py load offline and carry their family's conventions.

Other tests (continued pretraining, SFT, the template audit, packaging) rely on these directories looking
like the real checkpoints they mimic; these tests pin the ids, strings and files that make each family a
trap worth testing against: end-of-turn tokens, BOS handling, pad, vocab padding, remote code.
"""

from __future__ import annotations

import json
import sys

import pytest
from foreign_models import (
    END_OF_TURN,
    FAMILIES,
    build_foreign_model,
    build_foreign_tokenizer,
    build_remote_code_model,
)

ARCHITECTURE = {
    "qwen2": "Qwen2ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "bloom": "BloomForCausalLM",
    "internlm2": "LlamaForCausalLM",
    "llama3": "LlamaForCausalLM",
}
STOP_TOKENS = {
    "qwen2": ["<|im_end|>", "<|endoftext|>"],
    "gemma": ["<eos>", "<end_of_turn>"],
    "bloom": ["</s>"],
    "internlm2": ["</s>", "<|im_end|>"],
    "llama3": ["<|end_of_text|>", "<|eot_id|>"],
}
BOS = {"qwen2": None, "gemma": "<bos>", "bloom": "<s>", "internlm2": "<s>", "llama3": "<|begin_of_text|>"}
BOS_ADDED_ON_ENCODE = {"qwen2": False, "gemma": True, "bloom": False, "internlm2": True, "llama3": True}
PAD = {"qwen2": "<|endoftext|>", "gemma": "<pad>", "bloom": "<pad>", "internlm2": "</s>", "llama3": None}

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "请用中文回答：东京は日本の首都ですか？"},
    {"role": "assistant", "content": "def capital():\n    return '东京'"},
]
# BLOOM has no template of its own: the user names one. This is ChatML, as lmforge's built-in "chatml".
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The whole of each family's rendering of CONVERSATION: any change to a template shows up here.
RENDERED = {
    "qwen2": (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 3 = 5.<|im_end|>\n<|im_start|>user\n请用中文回答：东京は日本の首都ですか？<|im_end|>\n"
        "<|im_start|>assistant\ndef capital():\n    return '东京'<|im_end|>\n"
    ),
    "gemma": (
        "<bos><start_of_turn>user\nAnswer briefly.\n\nWhat is 2 + 3?<end_of_turn>\n"
        "<start_of_turn>model\n2 + 3 = 5.<end_of_turn>\n<start_of_turn>user\n请用中文回答：东京は日本の首都ですか？<end_of_turn>\n"
        "<start_of_turn>model\ndef capital():\n    return '东京'<end_of_turn>\n"
    ),
    "bloom": (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 3 = 5.<|im_end|>\n<|im_start|>user\n请用中文回答：东京は日本の首都ですか？<|im_end|>\n"
        "<|im_start|>assistant\ndef capital():\n    return '东京'<|im_end|>\n"
    ),
    "internlm2": (
        "<s><|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 3 = 5.<|im_end|>\n<|im_start|>user\n请用中文回答：东京は日本の首都ですか？<|im_end|>\n"
        "<|im_start|>assistant\ndef capital():\n    return '东京'<|im_end|>\n"
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nAnswer briefly.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n2 + 3 = 5.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n请用中文回答：东京は日本の首都ですか？<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\ndef capital():\n    return '东京'<|eot_id|>"
    ),
}
GENERATION_PROMPT = {
    "qwen2": "<|im_start|>assistant\n",
    "gemma": "<start_of_turn>model\n",
    "internlm2": "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
}
SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n\n\tx  =  [1, 2, 3]  # trailing spaces   ",
    "机器学习是人工智能的一个重要分支。",
    "東京は日本の首都です。ありがとうございます。",
    "Emoji and rare bytes: 🙂 ½ ß",
]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """One saved model directory per family, built once for the module."""
    root = tmp_path_factory.mktemp("foreign")
    return {family: build_foreign_model(family, root / family) for family in FAMILIES}


def _load(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)


def _template(family, tokenizer):
    return CHATML if family == "bloom" else tokenizer.chat_template


@pytest.mark.parametrize("family", FAMILIES)
def test_directory_loads_offline_and_forward_gives_logits_over_the_vocabulary(family, model_dirs):
    import torch

    directory = model_dirs[family]
    expected_files = {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"}
    assert expected_files | {"tokenizer_config.json"} <= {path.name for path in directory.iterdir()}
    model, tokenizer = _load(directory)
    assert type(model).__name__ == ARCHITECTURE[family]
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert len(tokenizer) <= model.config.vocab_size <= 2048
    ids = tokenizer("Hello, 世界", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_qwen2_and_bloom_pad_the_vocabulary_past_the_tokenizer_as_real_checkpoints_do(model_dirs):
    for family in ("qwen2", "bloom"):
        config = json.loads((model_dirs[family] / "config.json").read_text())
        _, tokenizer = _load(model_dirs[family])
        assert config["vocab_size"] > len(tokenizer) and config["vocab_size"] % 64 == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_config_and_generation_config_ids_match_the_tokenizer(family, model_dirs):
    directory = model_dirs[family]
    _, tokenizer = _load(directory)
    config = json.loads((directory / "config.json").read_text())
    generation = json.loads((directory / "generation_config.json").read_text())
    assert tokenizer.bos_token == BOS[family] and tokenizer.pad_token == PAD[family]
    for key, token_id in (
        ("bos_token_id", tokenizer.bos_token_id),
        ("eos_token_id", tokenizer.eos_token_id),
        ("pad_token_id", tokenizer.pad_token_id),
    ):
        assert config.get(key) == token_id, key
    stop_ids = tokenizer.convert_tokens_to_ids(STOP_TOKENS[family])
    assert generation["eos_token_id"] == (stop_ids if len(stop_ids) > 1 else stop_ids[0])
    assert generation.get("pad_token_id") == tokenizer.pad_token_id
    assert generation.get("bos_token_id") == tokenizer.bos_token_id


def test_traps_the_families_set(model_dirs):
    tokenizers = {family: _load(model_dirs[family])[1] for family in FAMILIES}
    # Llama 3 has no pad token at all; InternLM2 pads with its eos (masking pads would mask the eos).
    assert tokenizers["llama3"].pad_token_id is None
    assert tokenizers["internlm2"].pad_token_id == tokenizers["internlm2"].eos_token_id
    # Only Qwen2's eos ends a chat turn; for the others stopping at eos alone never stops a chat.
    for family, tokenizer in tokenizers.items():
        assert (tokenizer.eos_token == END_OF_TURN[family]) == (family == "qwen2")
    # Gemma and BLOOM keep their named specials at the front of the vocabulary, as the real ones do.
    assert tokenizers["gemma"].convert_tokens_to_ids(["<pad>", "<eos>", "<bos>", "<unk>"]) == [0, 1, 2, 3]
    assert tokenizers["bloom"].convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<pad>"]) == [0, 1, 2, 3]
    # BLOOM reserves the ChatML markers as special tokens of its base vocabulary.
    assert {"<|im_start|>", "<|im_end|>"} <= set(tokenizers["bloom"].all_special_tokens)


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_added_on_encode_and_the_doubled_bos_of_encoding_a_rendered_prompt(family, model_dirs):
    _, tokenizer = _load(model_dirs[family])
    plain = tokenizer("hello").input_ids
    bare = tokenizer("hello", add_special_tokens=False).input_ids
    if BOS_ADDED_ON_ENCODE[family]:
        assert plain == [tokenizer.bos_token_id, *bare]
    else:
        assert plain == bare
    template = _template(family, tokenizer)
    rendered = tokenizer.apply_chat_template(CONVERSATION, chat_template=template, tokenize=False)
    ids = tokenizer(rendered).input_ids  # the classic mistake: encoding a rendered prompt with specials
    if family in ("gemma", "internlm2", "llama3"):  # the template writes BOS and the tokenizer adds one
        assert ids[:2] == [tokenizer.bos_token_id, tokenizer.bos_token_id]
    else:
        assert tokenizer.bos_token_id is None or tokenizer.bos_token_id not in ids


@pytest.mark.parametrize("family", FAMILIES)
def test_three_turn_conversation_renders_the_family_markers(family, model_dirs):
    _, tokenizer = _load(model_dirs[family])
    if family == "bloom":
        assert tokenizer.chat_template is None  # BLOOM has none: the user must name one
        with pytest.raises(ValueError):
            tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    rendered = tokenizer.apply_chat_template(CONVERSATION, chat_template=_template(family, tokenizer), tokenize=False)
    assert rendered == RENDERED[family]
    end = END_OF_TURN[family]
    for message in CONVERSATION:
        if message["role"] == "assistant":
            assert message["content"] + end in rendered
    assert rendered.count(end) == len(CONVERSATION) - (family == "gemma")  # Gemma folds the system turn
    ids = tokenizer.apply_chat_template(
        CONVERSATION, chat_template=_template(family, tokenizer), tokenize=True, return_dict=True
    )["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids(end)) == rendered.count(end)
    assert tokenizer.decode(ids) == rendered


@pytest.mark.parametrize("family", sorted(GENERATION_PROMPT))
def test_generation_prompt_opens_an_assistant_turn(family, model_dirs):
    _, tokenizer = _load(model_dirs[family])
    prompt = tokenizer.apply_chat_template(CONVERSATION[:4], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith(END_OF_TURN[family] + ("" if family == "llama3" else "\n") + GENERATION_PROMPT[family])


def test_qwen2_writes_its_default_system_message_and_gemma_has_no_system_role(model_dirs):
    _, qwen = _load(model_dirs["qwen2"])
    rendered = qwen.apply_chat_template(CONVERSATION[1:3], tokenize=False)
    assert rendered.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    _, gemma = _load(model_dirs["gemma"])
    assert "system" not in gemma.apply_chat_template(CONVERSATION, tokenize=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_end_of_turn_is_one_special_token_and_a_stop_token(family, model_dirs):
    directory = model_dirs[family]
    _, tokenizer = _load(directory)
    end = END_OF_TURN[family]
    end_id = tokenizer.convert_tokens_to_ids(end)
    assert end_id != tokenizer.unk_token_id and end_id is not None
    assert tokenizer(end, add_special_tokens=False).input_ids == [end_id]
    assert end in tokenizer.all_special_tokens
    assert tokenizer.decode([end_id]) == end
    if family != "bloom":  # BLOOM's own stop token is </s>; <|im_end|> only ends turns of a template the user names
        stops = json.loads((directory / "generation_config.json").read_text())["eos_token_id"]
        assert end_id in stops


@pytest.mark.parametrize("family", FAMILIES)
def test_byte_level_bpe_round_trips_prose_code_and_cjk(family, model_dirs):
    _, tokenizer = _load(model_dirs[family])
    assert 1000 <= len(tokenizer) <= 1500
    for text in SAMPLES:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
    # CJK got merges of its own: fewer tokens than UTF-8 bytes.
    for text in SAMPLES[2:4]:
        assert len(tokenizer(text, add_special_tokens=False).input_ids) < len(text.encode("utf-8")) / 2


@pytest.mark.parametrize("family", FAMILIES)
def test_the_returned_tokenizer_encodes_as_the_saved_one_loads(family, tmp_path, model_dirs):
    """AutoTokenizer may pick another class (Qwen2Tokenizer for qwen2): the ids must not change."""
    built = build_foreign_tokenizer(family, tmp_path)
    _, loaded = _load(model_dirs[family])
    rendered = RENDERED[family]
    for text in [*SAMPLES, rendered, "e\u0301 combining accent"]:
        assert built(text).input_ids == loaded(text).input_ids
    assert built.all_special_tokens == loaded.all_special_tokens


def test_chat_template_false_leaves_the_template_out(tmp_path):
    for family in FAMILIES:
        tokenizer = build_foreign_tokenizer(family, tmp_path / family, chat_template=False)
        assert tokenizer.chat_template is None
        saved = json.loads((tmp_path / family / "tokenizer_config.json").read_text())
        assert "chat_template" not in saved and not (tmp_path / family / "chat_template.jinja").exists()
    build_foreign_tokenizer("gemma", tmp_path / "with")
    saved = json.loads((tmp_path / "with" / "tokenizer_config.json").read_text())
    assert saved["chat_template"].startswith("{{ bos_token }}")  # kept in tokenizer_config.json, as on the Hub


def test_builds_are_deterministic(tmp_path):
    first = build_foreign_model("llama3", tmp_path / "a", seed=3)
    second = build_foreign_model("llama3", tmp_path / "b", seed=3)
    other = build_foreign_model("llama3", tmp_path / "c", seed=4)
    for name in ("tokenizer.json", "model.safetensors", "config.json", "generation_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


def test_sizes_are_configurable(tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(build_foreign_model("gemma", tmp_path, hidden_size=32, num_layers=1))
    assert (config.hidden_size, config.num_hidden_layers, config.head_dim) == (32, 1, 8)


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown foreign family 'mistral'"):
        build_foreign_tokenizer("mistral", tmp_path)


def test_remote_code_model_names_auto_map_and_transformers_refuses_it(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = build_remote_code_model(tmp_path / "remote")
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "internlm2"
    assert config["architectures"] == ["InternLM2ForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_internlm2.InternLM2ForCausalLM"
    assert config["auto_map"]["AutoConfig"] == "configuration_internlm2.InternLM2Config"
    for name in ("configuration_internlm2.py", "modeling_internlm2.py"):
        assert "raise ImportError" in (directory / name).read_text()
    assert (directory / "model.safetensors").exists() and (directory / "tokenizer.json").exists()
    before = {module for module in sys.modules if "internlm2" in module.lower()}  # other tests may opt in
    for load in (AutoConfig.from_pretrained, AutoModelForCausalLM.from_pretrained):
        with pytest.raises(ValueError, match="trust_remote_code"):
            load(directory, trust_remote_code=False)
    assert {module for module in sys.modules if "internlm2" in module.lower()} == before
