"""The GGUF release's file lookup (the evaluation stage's manifest) and its choice of conversations: no engine."""

from __future__ import annotations

import json

import pytest

from lmforge.errors import UserError
from lmforge.packaging.gguf_release import MANIFEST, find_gguf_files, select_conversations


def test_files_come_from_the_manifest_and_a_missing_one_is_named(tmp_path):
    for fmt in ("f32", "q8_0"):
        (tmp_path / f"model-{fmt}.gguf").write_bytes(b"GGUF" + fmt.encode())
    (tmp_path / MANIFEST).write_text(json.dumps({"enabled": True, "formats": {
        "f32": {"file": "model-f32.gguf", "bytes": 7, "sha256": "x"}, "q8_0": {"file": "model-q8_0.gguf"}}}))
    assert find_gguf_files(tmp_path, ["f32", "q8_0"]) == {"f32": tmp_path / "model-f32.gguf",
                                                          "q8_0": tmp_path / "model-q8_0.gguf"}
    with pytest.raises(UserError, match=r"no q4_k_m GGUF file in .*evaluation\.quantization\.formats"):
        find_gguf_files(tmp_path, ["q4_k_m"])


def test_quantization_switched_off_or_no_folder_says_what_to_set(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"enabled": False, "formats": {}}))
    with pytest.raises(UserError, match=r"enabled was false.*packaging\.engine\.enabled: false"):
        find_gguf_files(tmp_path, ["f32"])
    with pytest.raises(UserError, match=r"no GGUF folder at .*run the evaluation stage first"):
        find_gguf_files(tmp_path / "absent", ["f32"])


def test_conversations_are_the_audit_then_zh_and_ja_first_then_the_rest(tiny_tokenizer):
    held_out = [{"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": "ok"}]}
                for c in ("x " * 400, "first in English", "こんにちは、元気ですか", "你好，请介绍一下",
                          "second in English")]  # the first one is too long for the context
    chosen = select_conversations(held_out, 3, tiny_tokenizer, max_prompt_tokens=300)
    assert chosen[0][-1] == {"role": "user", "content": "请用中文再说一遍。"}  # the template audit's prompt
    assert [c[-1]["content"] for c in chosen[1:]] == ["你好，请介绍一下", "こんにちは、元気ですか", "first in English"]
    assert all(c[-1]["role"] == "user" for c in chosen)
