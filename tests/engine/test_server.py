"""``LlamaServer``: a real llama-server on loopback that tokenizes like our tokenizer and never outlives us."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lmforge.engine.server import LlamaServer, free_port
from lmforge.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def f32_server(engine_package):
    with LlamaServer(engine_package[1]["f32"].path, parallel=2, threads=2) as server:
        yield server


def test_server_is_healthy_with_a_whole_context_per_slot(f32_server):
    assert get(f"{f32_server.url}/health") == {"status": "ok"}
    props = get(f"{f32_server.url}/props")
    assert props["total_slots"] == 2
    assert props["default_generation_settings"]["n_ctx"] == 128  # ctx 256 over 2 slots: the model's whole context
    assert "--cont-batching" in f32_server.command() and "--jinja" in f32_server.command()


def test_engine_tokenizes_exactly_like_our_tokenizer(f32_server, engine_package, chain_split_texts,
                                                      chain_split_labels, chat_template):
    """Held-out documents of every language group (en/zh/ja/code), and rendered chat prompts with BOS and the
    ChatML markers: llama.cpp's ids (the GGUF's sentencepiece vocabulary) equal the HF tokenizer's."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(engine_package[0])
    texts = list(chain_split_texts["validation"])
    languages = [doc["language"] for doc in chain_split_labels["validation"]]
    prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in (
        [{"role": "user", "content": "def add(a, b):\n    return a + b"}],
        [{"role": "system", "content": "你是 Forge。"}, {"role": "user", "content": "こんにちは、 世界  !"},
         {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "<s> and </s> in text\t\n"}],
    )]
    checked = {}
    for text, language in [*zip(texts, languages, strict=True), *((p, "chat") for p in prompts)]:
        ours = tok(text, add_special_tokens=False)["input_ids"]
        theirs = post(f"{f32_server.url}/tokenize", {"content": text, "add_special": True})["tokens"]
        assert theirs == ours, f"{language}: ids differ from position {first_difference(theirs, ours)}"
        checked[language] = checked.get(language, 0) + len(ours)
    assert set(checked) == {"en", "zh", "ja", "code", "chat"} and sum(checked.values()) > 5000, checked
    assert prompts[0].startswith("<s>") and ours[:1] == [tok.bos_token_id] and ours[1] != tok.bos_token_id


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_a_chat_template_override_replaces_the_ggufs_own(engine_package, chat_template):
    messages = [{"role": "user", "content": "hi"}]
    altered = chat_template.replace("<|im_start|>", "<|im_start|> ")  # what a template drift looks like
    with LlamaServer(engine_package[1]["q4_k_m"].path, parallel=1, threads=1, chat_template=altered) as server:
        prompt = post(f"{server.url}/apply-template", {"messages": messages})["prompt"]
        template_file = server._template_file
        assert template_file.is_file()
    assert prompt == "<s><|im_start|> user\nhi<|im_end|>\n<|im_start|> assistant\n"
    assert not template_file.exists()  # close() removes it


CHILD = """
import sys
from lmforge.engine.server import LlamaServer
server = LlamaServer(sys.argv[1], parallel=1, threads=1, log_path=sys.argv[2]).start()
print(server.process.pid, flush=True)
sys.stdin.read()  # until killed
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie no reaper has collected yet is dead


def test_a_killed_parent_leaves_no_server_behind(engine_package, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", CHILD, str(engine_package[1]["q4_k_m"].path),
                               str(tmp_path / "server.log")], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs: only the kernel's PDEATHSIG can stop the child
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"llama-server {pid} survived its parent"
    finally:
        parent.kill()


def test_close_stops_the_server(engine_package):
    server = LlamaServer(engine_package[1]["q4_k_m"].path, parallel=1, threads=1).start()
    pid = server.process.pid
    server.close()
    assert not _alive(pid) and server.process is None
    server.close()  # twice is harmless


def test_start_failures_are_one_line_user_errors(tmp_path, engine_package):
    with pytest.raises(UserError, match="GGUF model not found") as missing:
        LlamaServer(tmp_path / "missing.gguf").start()
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 100)
    with pytest.raises(UserError, match="not a readable GGUF") as unreadable:
        LlamaServer(garbage).start()
    with pytest.raises(UserError, match="exited with") as exited:  # the engine itself refuses it
        LlamaServer(garbage, ctx_size=128, threads=1, log_path=tmp_path / "garbage.log").start(timeout=30)
    assert f"full log: {tmp_path / 'garbage.log'}" in str(exited.value)  # a failed start keeps its log
    for error in (missing, unreadable, exited):
        assert "\n" not in str(error.value)
    with LlamaServer(engine_package[1]["q4_k_m"].path, parallel=1, threads=1) as running:
        with pytest.raises(UserError, match=f"port {running.port} .* busy"):
            LlamaServer(engine_package[1]["q4_k_m"].path, port=running.port).start()
    assert free_port() > 0
