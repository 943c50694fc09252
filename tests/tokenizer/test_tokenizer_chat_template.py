"""lmforge's own chat format through the one chat path (``ChatTokenizer``): rendering, masks, refusals.

The foreign templates (Qwen2, Gemma, Llama 3, InternLM2, BLOOM + a named template) are tested in
tests/tokenizer/test_chat_tokenizer_foreign.py; here the oracle is the sentencepiece model the tokenizer
stage trained (an independent decoder) and transformers' ``return_assistant_tokens_mask``.
"""

from __future__ import annotations

import json
import shutil

import pytest
from tokenizer_samples import CONVERSATIONS

from lmforge.tokenizer.chat_template import DEFAULT_CHAT_TEMPLATE
from lmforge.tokenizer.chat_tokenizer import BUILTIN_TEMPLATES, IGNORE_INDEX, ChatTemplateError, ChatTokenizer


@pytest.fixture(scope="module")
def chat(hf_dir) -> ChatTokenizer:
    return ChatTokenizer.load(hf_dir)


def with_template(src, dst, template):
    """A copy of the tokenizer directory ``src`` whose chat_template is ``template`` (None: removed)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst


def test_default_template_renders_chatml(chat):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": "A"}]
    assert chat.render(messages) == ("<s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                                     "<|im_start|>assistant\nA<|im_end|>\n")
    assert chat.render(messages[:2], add_generation_prompt=True).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert DEFAULT_CHAT_TEMPLATE == BUILTIN_TEMPLATES["internlm2"]  # our format is InternLM2's ChatML with BOS


def test_end_of_turn_and_stop_ids_come_from_the_template(chat, tokenizer):
    assert chat.end_of_turn == "<|im_end|>" and chat.end_of_turn_id == tokenizer.token_to_id("<|im_end|>")
    assert chat.stop_ids[0] == chat.end_of_turn_id and tokenizer.eos_id in chat.stop_ids
    assert chat.pad_id == tokenizer.pad_id and chat.bos_id == tokenizer.bos_id


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_ids_equal_encoding_of_rendered_text(chat, hf_tokenizer, tokenizer, conversation):
    ids, labels = chat.encode_conversation(conversation)
    assert ids == tokenizer.encode(chat.render(conversation))  # the sentencepiece model agrees
    assert ids == hf_tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    assert ids[0] == tokenizer.bos_id and ids[1] != tokenizer.bos_id  # one BOS, written by the template
    assert len(labels) == len(ids)
    assert all(label in (token, IGNORE_INDEX) for token, label in zip(ids, labels, strict=True))


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_trained_tokens_are_exactly_the_assistant_turns(chat, tokenizer, conversation):
    ids, labels = chat.encode_conversation(conversation)
    trained = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    masked = [t for t, label in zip(ids, labels, strict=True) if label == IGNORE_INDEX]
    assistant = [m["content"] for m in conversation if m["role"] == "assistant"]
    # every assistant turn (content + closing marker), in order, and nothing else
    assert tokenizer.decode(trained) == "".join(content + "<|im_end|>" for content in assistant)
    assert trained.count(tokenizer.token_to_id("<|im_end|>")) == len(assistant)
    prompt_text = chat.render(conversation)
    for content in assistant:
        prompt_text = prompt_text.replace("assistant\n" + content + "<|im_end|>", "assistant\n", 1)
    assert tokenizer.decode(masked, skip_special_tokens=False) == prompt_text


def test_three_turn_masking_token_by_token(chat, tokenizer):
    system, user, assistant = CONVERSATIONS[0]
    ids, labels = chat.encode_conversation(CONVERSATIONS[0])
    prefix = chat.encode_prompt([system, user])
    answer = tokenizer.encode(assistant["content"] + "<|im_end|>")
    assert ids == prefix + answer + tokenizer.encode("\n")
    assert labels == [IGNORE_INDEX] * len(prefix) + answer + [IGNORE_INDEX]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_mask_matches_transformers_assistant_mask(chat, hf_tokenizer, conversation):
    ids, labels = chat.encode_conversation(conversation)
    out = hf_tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                           return_assistant_tokens_mask=True)
    assert out["input_ids"] == ids
    assert out["assistant_masks"] == [int(label != IGNORE_INDEX) for label in labels]


def test_train_on_prompt_trains_every_token(chat):
    ids, labels = chat.encode_conversation(CONVERSATIONS[1], train_on_prompt=True)
    assert labels == ids
    assert ids == chat.encode_conversation(CONVERSATIONS[1])[0]


@pytest.mark.parametrize("marker", ["<|im_end|>", "</s>", "<s>"])
def test_special_token_text_in_content_is_rejected(chat, marker):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"oops {marker} x"}]
    with pytest.raises(ValueError, match="special-token text"):
        chat.encode_conversation(messages)


def test_bad_messages_are_rejected(chat):
    with pytest.raises(ValueError, match="role must be one of"):
        chat.encode_conversation([{"role": "robot", "content": "x"}])
    with pytest.raises(TypeError, match="content must be a string"):
        chat.encode_conversation([{"role": "user", "content": None}])
    with pytest.raises(ValueError, match="at least one message"):
        chat.encode_conversation([])


def test_span_boundary_inside_a_token_is_rejected(hf_dir, tmp_path):
    # "assistant: " then the trained content: the piece "▁h" straddles the boundary after ": "
    template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    chat = ChatTokenizer.load(with_template(hf_dir, tmp_path / "t", template))
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "hello world"}]
    with pytest.raises(ChatTemplateError, match="falls inside a token"):
        chat.encode_conversation(messages)


def test_a_template_that_never_writes_an_end_of_turn_token_is_refused(hf_dir, tmp_path):
    template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n\\n' }}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="not with a special token"):
        ChatTokenizer.load(with_template(hf_dir, tmp_path / "t", template))


def test_a_generation_prompt_unlike_training_is_refused(hf_dir, tmp_path):
    template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>bot\\n' }}{% endif %}")
    with pytest.raises(ChatTemplateError, match="generation prompt"):
        ChatTokenizer.load(with_template(hf_dir, tmp_path / "t", template))


def test_a_tokenizer_without_a_template_needs_a_named_one(hf_dir, tmp_path):
    bare = with_template(hf_dir, tmp_path / "bare", None)
    with pytest.raises(ChatTemplateError, match="has no chat_template: name one of"):
        ChatTokenizer.load(bare)
    with pytest.raises(ChatTemplateError, match="unknown chat_template 'vicuna'"):
        ChatTokenizer.load(bare, chat_template="vicuna")
    with pytest.raises(ChatTemplateError, match=r"writes \['<\|start_header_id\|>'"):
        ChatTokenizer.load(bare, chat_template="llama3")  # its markers are not tokens of this vocabulary
    named = ChatTokenizer.load(bare, chat_template="chatml")
    assert named.template_name == "chatml" and named.end_of_turn == "<|im_end|>"
    messages = CONVERSATIONS[0]
    assert named.render(messages) == ChatTokenizer.load(hf_dir).render(messages).removeprefix("<s>")
    # a tokenizer with its own template keeps it: naming another is refused
    with pytest.raises(ChatTemplateError, match="has its own chat_template"):
        ChatTokenizer.load(hf_dir, chat_template="chatml")
    assert ChatTokenizer.load(hf_dir, chat_template="internlm2").template == DEFAULT_CHAT_TEMPLATE  # the same one


def test_save_writes_the_template_next_to_a_checkpoint(hf_dir, tmp_path):
    ChatTokenizer.load(with_template(hf_dir, tmp_path / "bare", None), chat_template="chatml").save(tmp_path / "ckpt")
    reloaded = ChatTokenizer.load(tmp_path / "ckpt")
    assert reloaded.template == BUILTIN_TEMPLATES["chatml"] and reloaded.template_name is None
