"""The one chat path on foreign tokenizers and templates (Qwen2, Gemma, BLOOM + ChatML, InternLM2, Llama 3).

Per template, on a 3-turn conversation: every assistant token and its end-of-turn token carry labels,
nothing else; the ids are transformers' own ``apply_chat_template`` ids; the end-of-turn token is the
family's; the doubled-BOS trap (a tokenizer that adds BOS under a template that writes it) is caught.
The oracle for the masks is independent of the masking code: the decoded trained runs, and the
prompt encodings of each prefix.
"""

from __future__ import annotations

import pytest
from foreign_models import END_OF_TURN, FAMILIES, build_foreign_model, build_remote_code_model

from lmforge.model.base_model import check_base_model
from lmforge.tokenizer.chat_tokenizer import IGNORE_INDEX, ChatTemplateError, ChatTokenizer
from lmforge.tokenizer.template_audit import (
    AUDIT_CONVERSATION,
    TemplateMismatchError,
    check_audits,
    prompt_audit,
    training_audit,
)

THREE_TURNS = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "Seven."},
    {"role": "user", "content": "用中文说。"},
    {"role": "assistant", "content": "七。"},
    {"role": "user", "content": "def f(x): return ?"},
    {"role": "assistant", "content": "def f(x):\n    return x * 2"},
]
AUDIT_PROMPT = AUDIT_CONVERSATION[:-1]
NAMED = {"bloom": "chatml"}  # BLOOM has no template of its own: the user names a built-in one


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("foreign")
    return {family: build_foreign_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def chats(models) -> dict[str, ChatTokenizer]:
    return {family: ChatTokenizer.load(path, chat_template=NAMED.get(family)) for family, path in models.items()}


def trained_runs(ids, labels):
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return [*runs, current] if current else runs


@pytest.mark.parametrize("family", FAMILIES)
def test_end_of_turn_and_stop_ids_are_the_models_own(chats, family):
    chat = chats[family]
    assert chat.end_of_turn == END_OF_TURN[family]
    assert chat.stop_ids[0] == chat.end_of_turn_id == chat.tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    assert chat.tokenizer.eos_token_id in chat.stop_ids
    assert set(chat.model_stop_ids) <= set(chat.stop_ids)  # generation_config.json's eos ids too


@pytest.mark.parametrize("family", FAMILIES)
def test_three_turn_mask_is_every_assistant_token_and_its_end_of_turn(chats, family):
    chat = chats[family]
    ids, labels = chat.encode_conversation(THREE_TURNS)
    assert ids == chat.tokenizer.apply_chat_template(THREE_TURNS, tokenize=True, return_dict=True)["input_ids"]
    runs = trained_runs(ids, labels)
    answers = [m["content"] for m in THREE_TURNS if m["role"] == "assistant"]
    decoded = [chat.tokenizer.decode(run, skip_special_tokens=False) for run in runs]
    assert decoded == [answer + END_OF_TURN[family] for answer in answers]
    # nothing else: the expected labels, built from each prefix's prompt encoding and each answer's ids
    expected = [IGNORE_INDEX] * len(ids)
    for k in (2, 4, 6):
        prompt = chat.encode_prompt(THREE_TURNS[:k])
        answer = chat.encode_text(THREE_TURNS[k]["content"] + END_OF_TURN[family])
        assert ids[: len(prompt)] == prompt and ids[len(prompt): len(prompt) + len(answer)] == answer
        expected[len(prompt): len(prompt) + len(answer)] = answer
    assert labels == expected


@pytest.mark.parametrize("family", ["gemma", "internlm2", "llama3"])
def test_doubled_bos_is_detected(chats, family):
    chat = chats[family]
    text = chat.render(THREE_TURNS[:2], add_generation_prompt=True)
    naive = chat.tokenizer(text)["input_ids"]  # what lm-eval does: special tokens added to rendered chat
    assert naive[:2] == [chat.bos_id, chat.bos_id]
    with pytest.raises(ChatTemplateError, match="starts with BOS twice"):
        chat.check_single_bos(naive)
    ids = chat.encode_prompt(THREE_TURNS[:2])
    assert ids[0] == chat.bos_id and ids[1] != chat.bos_id


def test_qwen2_default_system_message_is_rendered_and_never_trained(chats):
    chat = chats["qwen2"]
    ids, labels = chat.encode_conversation(THREE_TURNS[1:3])  # no system message: Qwen's template adds one
    assert chat.render(THREE_TURNS[1:3]).startswith("<|im_start|>system\n")
    trained = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert chat.tokenizer.decode(trained, skip_special_tokens=False) == "Seven.<|im_end|>"


def test_bloom_needs_a_named_template(models):
    with pytest.raises(ChatTemplateError, match="has no chat_template"):
        ChatTokenizer.load(models["bloom"])
    with pytest.raises(ChatTemplateError, match="not tokens of"):
        ChatTokenizer.load(models["bloom"], chat_template="gemma")
    with pytest.raises(ChatTemplateError, match="has its own chat_template"):
        ChatTokenizer.load(models["qwen2"], chat_template="llama3")


@pytest.mark.parametrize("family", FAMILIES)
def test_template_audit_passes_for_the_same_path_and_names_the_first_difference(chats, family, tmp_path):
    chat = chats[family]
    audit = training_audit(chat)
    trained = [audit["training"]["tokens"][i] for i in audit["training"]["trained_positions"]]
    assert trained.count(END_OF_TURN[family]) == 2  # the audit conversation has two answers
    same = prompt_audit("serving", chat.tokenizer, chat.encode_prompt(AUDIT_PROMPT), chat.stop_ids, source="x")
    check_audits(audit, same)
    # a serving side rendering another family's template (same base vocabulary: the BPE is shared)
    other = next(f for f in FAMILIES if f != family and END_OF_TURN[f] != END_OF_TURN[family])
    foreign_template = ChatTokenizer.load(build_foreign_model(other, tmp_path / other), chat_template=NAMED.get(other))
    mismatched = prompt_audit("serving", chat.tokenizer, foreign_template.encode_prompt(AUDIT_PROMPT),
                              chat.stop_ids, source="x")
    mismatched["template_sha256"] = audit["template_sha256"]  # same hash claimed: the ids still differ
    with pytest.raises(TemplateMismatchError, match=r"first difference at token \d+: sft has"):
        check_audits(audit, mismatched)


def test_remote_code_model_is_refused_in_one_line_unless_opted_in(tmp_path):
    path = build_remote_code_model(tmp_path / "internlm2")
    with pytest.raises(PermissionError) as err:
        check_base_model(path, trust_remote_code=False, where="sft.base_model")
    message = str(err.value)
    assert "\n" not in message and "sft.trust_remote_code: true" in message and "convert it to Llama" in message
    assert check_base_model(path, trust_remote_code=True, where="sft.base_model") == "internlm2"

