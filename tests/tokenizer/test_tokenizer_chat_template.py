"""Tests for lmforge.tokenizer.chat_template: rendering, transformers parity, SFT label masking."""

from __future__ import annotations

import pytest
from tokenizer_samples import CONVERSATIONS

from lmforge.tokenizer.chat_template import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE_INDEX,
    render_chat,
    tokenize_conversation,
)

SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}


def test_default_template_renders_chatml():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    expected = (
        "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n"
    )
    assert render_chat(messages, DEFAULT_CHAT_TEMPLATE, **SPECIALS) == expected
    prompt = render_chat(messages[:2], DEFAULT_CHAT_TEMPLATE, **SPECIALS, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")


def test_render_uses_transformers_jinja_settings():
    # trim_blocks/lstrip_blocks, loopcontrols and the non-escaping tojson of apply_chat_template
    template = (
        "{% for m in messages %}\n"
        "    {% if loop.index > 1 %}{% break %}{% endif %}\n"
        "{{ m | tojson }}\n"
        "{% endfor %}"
    )
    text = render_chat([{"role": "user", "content": "<a> & é"}, {"role": "user", "content": "x"}], template, **SPECIALS)
    assert text == '{"role": "user", "content": "<a> & é"}\n'


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_render_matches_transformers_apply_chat_template(hf_tokenizer, conversation, add_generation_prompt):
    ours = render_chat(conversation, DEFAULT_CHAT_TEMPLATE, **SPECIALS, add_generation_prompt=add_generation_prompt)
    theirs = hf_tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours == theirs


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_ids_equal_encoding_of_rendered_text(tokenizer, conversation):
    ids, labels = tokenize_conversation(conversation, tokenizer, DEFAULT_CHAT_TEMPLATE)
    assert ids == tokenizer.encode(render_chat(conversation, DEFAULT_CHAT_TEMPLATE, **SPECIALS))
    assert ids[0] == tokenizer.bos_id
    assert len(labels) == len(ids)
    assert all(label in (token, IGNORE_INDEX) for token, label in zip(ids, labels, strict=True))


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_trained_tokens_are_exactly_the_assistant_turns(tokenizer, conversation):
    ids, labels = tokenize_conversation(conversation, tokenizer, DEFAULT_CHAT_TEMPLATE)
    trained = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    masked = [t for t, label in zip(ids, labels, strict=True) if label == IGNORE_INDEX]
    assistant = [m["content"] for m in conversation if m["role"] == "assistant"]
    # every assistant turn (content + closing marker), in order, and nothing else
    assert tokenizer.decode(trained) == "".join(content + "<|im_end|>" for content in assistant)
    end_id = tokenizer.token_to_id("<|im_end|>")
    assert trained.count(end_id) == len(assistant)
    # the masked tokens are everything else: BOS, headers, system/user turns, newlines after turns
    rendered = render_chat(conversation, DEFAULT_CHAT_TEMPLATE, **SPECIALS)
    prompt_text = rendered
    for content in assistant:
        prompt_text = prompt_text.replace("assistant\n" + content + "<|im_end|>", "assistant\n", 1)
    assert tokenizer.decode(masked, skip_special_tokens=False) == prompt_text


def test_three_turn_masking_token_by_token(tokenizer):
    system, user, assistant = CONVERSATIONS[0]
    ids, labels = tokenize_conversation(CONVERSATIONS[0], tokenizer, DEFAULT_CHAT_TEMPLATE)
    prefix = tokenizer.encode(
        render_chat([system, user], DEFAULT_CHAT_TEMPLATE, **SPECIALS, add_generation_prompt=True)
    )
    answer = tokenizer.encode(assistant["content"] + "<|im_end|>")
    assert ids == prefix + answer + tokenizer.encode("\n")
    assert labels == [IGNORE_INDEX] * len(prefix) + answer + [IGNORE_INDEX]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_mask_matches_transformers_assistant_mask(hf_tokenizer, tokenizer, conversation):
    ids, labels = tokenize_conversation(conversation, tokenizer, DEFAULT_CHAT_TEMPLATE)
    out = hf_tokenizer.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert out["input_ids"] == ids
    assert out["assistant_masks"] == [int(label != IGNORE_INDEX) for label in labels]


def test_train_on_prompt_trains_every_token(tokenizer):
    ids, labels = tokenize_conversation(CONVERSATIONS[1], tokenizer, DEFAULT_CHAT_TEMPLATE, train_on_prompt=True)
    assert labels == ids
    assert ids == tokenize_conversation(CONVERSATIONS[1], tokenizer, DEFAULT_CHAT_TEMPLATE)[0]


@pytest.mark.parametrize("marker", ["<|im_end|>", "</s>", "<s>"])
def test_special_token_text_in_content_is_rejected(tokenizer, marker):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"oops {marker} x"}]
    with pytest.raises(ValueError, match="special-token text"):
        tokenize_conversation(messages, tokenizer, DEFAULT_CHAT_TEMPLATE)


def test_bad_messages_are_rejected(tokenizer):
    with pytest.raises(ValueError, match="role must be one of"):
        tokenize_conversation([{"role": "robot", "content": "x"}], tokenizer, DEFAULT_CHAT_TEMPLATE)
    with pytest.raises(TypeError, match="content must be a string"):
        tokenize_conversation([{"role": "user", "content": None}], tokenizer, DEFAULT_CHAT_TEMPLATE)
    with pytest.raises(ValueError, match="at least one message"):
        tokenize_conversation([], tokenizer, DEFAULT_CHAT_TEMPLATE)


def test_template_with_unsafe_span_boundary_is_rejected(tokenizer):
    # "assistant: " then the trained content: a token could merge across " |def"
    template = (
        "{% for m in messages %}{{ m['role'] + ': ' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
        "{% else %}{{ m['content'] }}{% endif %}{{ '\\n' }}{% endfor %}"
    )
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "def f(): pass"}]
    with pytest.raises(ValueError, match="not next to a newline or a special marker"):
        tokenize_conversation(messages, tokenizer, template)
