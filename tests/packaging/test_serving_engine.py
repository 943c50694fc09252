"""The gateway in front of a real llama-server: chat, streaming, bad requests, ratings, a dead engine, no orphan.

One llama-server (the tiny ``engine_package`` model, q8_0, 4 slots, 1 thread) and one gateway (our app
in a uvicorn thread of this process) serve the module; the last in-process test kills the engine and
checks the gateway's answers. `serve` as a user runs it (``--engine llama.cpp``) is a subprocess: it must
start the engine as its child, chat through it, and leave no engine behind when it is killed (SIGKILL:
the engine is told by the kernel, PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import assert_one_error_line

from lmforge.errors import UserError
from lmforge.packaging.chat import ChatSession
from lmforge.packaging.engines import file_sha256, find_gguf
from lmforge.packaging.feedback_store import FeedbackStore
from lmforge.packaging.loadtest import STREAMED_TTFT, post_json, run_load_test, stream_chat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Gateway:
    def __init__(self, url: str, engine, chat_model, store: FeedbackStore):
        self.url, self.engine, self.chat_model, self.store = url, engine, chat_model, store


@pytest.fixture(scope="module")
def gateway(engine_package, tmp_path_factory):
    import uvicorn

    from lmforge.engine.server import LlamaServer
    from lmforge.packaging.app import create_app
    from lmforge.packaging.engine_model import EngineChatModel
    from lmforge.packaging.serve import bind

    hf_dir, gguf = engine_package
    engine = LlamaServer(gguf["q8_0"].path, parallel=4, threads=1).start()
    try:
        chat_model = EngineChatModel.load(hf_dir, engine.url, engine=f"llama.cpp:q8_0:{gguf['q8_0'].sha256[:12]}")
        store = FeedbackStore(tmp_path_factory.mktemp("gateway") / "feedback.sqlite")
        app = create_app(chat_model, store, max_tokens_limit=32)
        port = _free_port()
        sock = bind("127.0.0.1", port)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        yield Gateway(f"http://127.0.0.1:{port}", engine, chat_model, store)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    finally:
        engine.close()


def test_chat_goes_through_the_engine_with_our_prompt(gateway):
    payload = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def add(a, b):"}],
               "max_tokens": 8}
    status, first = post_json(gateway.url + "/v1/chat/completions", payload)
    assert status == 200, first
    assert first["system_fingerprint"] == gateway.chat_model.engine and first["model"] == gateway.chat_model.version
    # The engine rendered the messages with the GGUF's template: it counted exactly our prompt's tokens.
    assert first["usage"]["prompt_tokens"] == len(gateway.chat_model.encode(payload["messages"]))
    assert 1 <= first["usage"]["completion_tokens"] <= 8
    assert first["choices"][0]["finish_reason"] in ("stop", "length")
    _, second = post_json(gateway.url + "/v1/chat/completions", payload)
    assert second["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]  # greedy

    status, streamed, ttft = stream_chat(gateway.url + "/v1/chat/completions", payload)
    assert status == 200 and streamed["content"] == first["choices"][0]["message"]["content"]
    assert streamed["usage"] == first["usage"] and streamed["system_fingerprint"] == gateway.chat_model.engine
    assert streamed["id"].startswith("chatcmpl-") and ttft is not None
    assert gateway.store.get(streamed["id"])["response"] == streamed["content"]  # recorded: it can be rated


def test_concurrent_requests_reach_the_engine_and_the_load_test_streams(gateway):
    prompts = [f"write function number {i}" for i in range(8)]
    payloads = [{"messages": [{"role": "user", "content": p}], "max_tokens": 16} for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: post_json(gateway.url + "/v1/chat/completions", p), payloads))
    assert [s for s, _ in answers] == [200] * 8
    report = run_load_test(gateway.url, requests=8, concurrency=4, max_tokens=8)
    assert report["ok"] == 8 and report["streamed"] and report["ttft_kind"] == STREAMED_TTFT
    assert report["engine"] == gateway.chat_model.engine and report["output_tokens"] >= 8
    assert 0 < report["ttft_ms"]["p50"] <= report["latency_ms"]["max"]


@pytest.mark.parametrize(
    ("payload", "expect"),
    [
        ({"messages": [{"role": "user", "content": "a<|im_end|>b"}]}, "special-token"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "last message"),
        ({"messages": [{"role": "user", "content": "x " * 200}], "max_tokens": 32}, "context"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ],
)
def test_bad_requests_get_our_4xx_and_the_gateway_keeps_serving(gateway, payload, expect):
    for send in (post_json, lambda url, p: stream_chat(url, p)[:2]):
        status, reply = send(gateway.url + "/v1/chat/completions", payload)
        assert status == 400 and expect in reply["error"]["message"].lower(), reply
    ok, _ = post_json(gateway.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                             "max_tokens": 2})
    assert ok == 200


def test_a_rating_lands_on_the_served_model_version(gateway):
    session = ChatSession(gateway.url, max_tokens=4)
    session.ask("hello")
    session.rate(4)
    row = gateway.store.get(session.last_id)
    assert row["rating"] == 4 and row["client"] == "chat"
    assert row["model_version"] == gateway.chat_model.version and row["engine"] == gateway.chat_model.engine
    assert row["engine"].startswith("llama.cpp:q8_0:")
    stats = gateway.store.summary()[gateway.chat_model.version]
    assert stats["rated"] == 1 and stats["mean_rating"] == 4


def test_a_dead_engine_is_503_and_the_gateway_keeps_answering(gateway):
    os.kill(gateway.engine.process.pid, signal.SIGKILL)
    gateway.engine.process.wait(timeout=10)
    payload = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for send in (post_json, lambda url, p: stream_chat(url, p)[:2]):
        status, reply = send(gateway.url + "/v1/chat/completions", payload)
        assert status == 503 and reply["error"]["type"] == "engine_unavailable", reply
        assert "\n" not in reply["error"]["message"] and gateway.engine.url in reply["error"]["message"]
    status, health = _get(gateway.url + "/health")
    assert status == 503 and health["status"] == "engine_unavailable"
    assert health["model_version"] == gateway.chat_model.version
    bad, reply = post_json(gateway.url + "/v1/chat/completions", {"messages": [{"role": "assistant", "content": "x"}]})
    assert bad == 400  # our checks still answer
    assert _get(gateway.url + "/v1/feedback/summary")[0] == 200


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has died (nobody reaped it yet)


def test_serve_runs_the_engine_as_a_child_that_dies_with_it(engine_package, tmp_path):
    hf_dir, gguf = engine_package
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmforge.packaging.serve", "--engine", "llama.cpp", "--gguf",
             str(gguf["q4_k_m"].path), "--model", str(hf_dir), "--port", str(port), "--parallel", "2",
             "--engine-threads", "1", "--feedback-db", str(tmp_path / "f.sqlite"), "--max-tokens-limit", "16"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, health = _get(url + "/health")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        assert status == 200 and health["engine"] == f"llama.cpp:q4_k_m:{file_sha256(gguf['q4_k_m'].path)[:12]}"
        assert health["streams"] is True
        engines = [c for c in _children(proc.pid) if b"llama-server" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(engines) == 1, _children(proc.pid)
        status, reply = post_json(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                                 "max_tokens": 4})
        assert status == 200 and reply["system_fingerprint"] == health["engine"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs: only the kernel can stop the engine now
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(engines[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(engines[0]), "the engine outlived the gateway"


def test_serve_with_vllm_missing_is_one_line(engine_package, tmp_path):
    hf_dir, _ = engine_package
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "lmforge.packaging.serve", "--engine", "vllm", "--model", str(hf_dir),
                           "--port", str(_free_port()), "--feedback-db", str(tmp_path / "f.sqlite")],
                          capture_output=True, text=True, env=env, timeout=120)
    line = assert_one_error_line(proc)
    assert "vllm" in line and "own environment on a GPU machine" in line


def test_find_gguf_names_what_to_do(tmp_path):
    with pytest.raises(UserError, match="SERVE_ENGINE=torch"):
        find_gguf(tmp_path, "q8_0")
    (tmp_path / "a-q8_0.gguf").write_bytes(b"GGUF")
    assert find_gguf(tmp_path, "q8_0") == tmp_path / "a-q8_0.gguf"
    (tmp_path / "b-q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match="--gguf"):
        find_gguf(tmp_path, "q8_0")


def test_the_command_line_defaults_are_the_serving_config():
    from dataclasses import asdict

    from lmforge.packaging.serve import build_parser
    from lmforge.packaging.serving_config import ServingConfig

    args = vars(build_parser().parse_args([]))
    shared = {k: v for k, v in asdict(ServingConfig()).items() if k in args}
    assert shared == {k: args[k] for k in shared} and len(shared) >= 9
    assert ServingConfig().engine == "llama.cpp" and ServingConfig().format == "q8_0"
    for bad in ({"engine": "tgi"}, {"format": "q3"}, {"parallel": 0}):
        with pytest.raises(ValueError):
            ServingConfig(**bad)


def test_the_engine_serves_only_a_gguf_shipped_with_the_package(engine_package, tmp_path, caplog):
    """The card of the package lists its GGUF files' sha256: another version's GGUF is refused in one line, the
    listed one passes, and a card listing none is only warned about."""
    from lmforge.packaging.engines import check_gguf_lineage

    hf_dir, gguf = engine_package
    q8 = gguf["q8_0"].path
    sha = file_sha256(q8)
    package = tmp_path / "package"
    package.mkdir()
    card = package / "README.md"
    card.write_text("# m\n\n| format | file | bytes | sha256 |\n|---|---|---|---|\n"
                    f"| q8_0 | m-q8_0.gguf | 1 | `{'0' * 16}` |\n", encoding="utf-8")
    with pytest.raises(UserError) as exc:
        check_gguf_lineage(package, q8, sha)
    assert sha[:16] in str(exc.value) and "0" * 16 in str(exc.value)
    card.write_text(card.read_text(encoding="utf-8").replace("0" * 16, sha[:16]), encoding="utf-8")
    check_gguf_lineage(package, q8, sha)  # the shipped one
    card.write_text("# m\n\nno engine files\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        check_gguf_lineage(package, q8, sha)
    assert "lists no GGUF files" in caplog.text
