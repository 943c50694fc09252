"""The chat server as a real subprocess on a free loopback port: load, bad requests, ratings, clean stop.

One server (tiny random Llama + the tiny byte-level tokenizer, saved into one package directory) is
started in its own process group for the whole module; the last test stops it and checks that no
process of the group is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from lmforge.packaging.chat import ChatSession, parse_rating, run_chat
from lmforge.packaging.chat_model import resolve_model
from lmforge.packaging.feedback_store import FeedbackStore, parse_registry_version
from lmforge.packaging.loadtest import percentile, post_json, record_load_report, require_loopback, run_load_test
from lmforge.packaging.serve import main as serve_main

STARTUP_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _raw_post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, db: str, log_path):
        self.proc, self.url, self.db, self.log_path = proc, url, db, log_path

    def stop(self) -> None:
        if _group_alive(self.proc.pid):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, tiny_tokenizer_dir):
    package = tmp_path_factory.mktemp("serve") / "lmforge-chat"
    shutil.copytree(tiny_model_dir, package)
    shutil.copytree(tiny_tokenizer_dir, package, dirs_exist_ok=True)
    db = str(package.parent / "feedback.sqlite")
    port = _free_port()
    log_path = package.parent / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmforge.packaging.serve", "--model", str(package), "--port", str(port),
             "--feedback-db", db, "--max-tokens-limit", "32"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    srv = Server(proc, f"http://127.0.0.1:{port}", db, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(srv.url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            srv.stop()
            pytest.fail(f"server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    yield srv
    srv.stop()


def test_health_names_the_model_version(server):
    with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "ok"
    assert body["model_version"].startswith("lmforge-chat@") and len(body["model_version"]) == len("lmforge-chat@") + 12


def test_chat_completion_is_openai_shaped_and_deterministic(server, tiny_tokenizer):
    payload = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def add(a, b):"}],
               "max_tokens": 8}
    status, first = post_json(server.url + "/v1/chat/completions", payload)
    assert status == 200, first
    _, second = post_json(server.url + "/v1/chat/completions", payload)
    assert first["id"].startswith("chatcmpl-") and first["id"] != second["id"]
    choice = first["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert 1 <= first["usage"]["completion_tokens"] <= 8
    # The prompt is the package tokenizer's own chat template with the generation prompt.
    prompt = tiny_tokenizer.apply_chat_template(payload["messages"], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert first["usage"]["prompt_tokens"] == len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert second["choices"][0]["message"]["content"] == choice["message"]["content"]  # greedy


def test_load_test_100_requests_records_percentiles(server, tmp_path, mlflow_tracking_uri):
    report = run_load_test(server.url, requests=100, concurrency=4, max_tokens=4)
    assert report["ok"] == 100 and report["errors"] == 0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["rps"] > 0 and report["rps"] == pytest.approx(100 / report["duration_s"], rel=0.01)

    out = tmp_path / "serving_load.json"
    run_id = record_load_report(report, out, tracking_uri=mlflow_tracking_uri)
    assert json.loads(out.read_text())["latency_ms"]["p95"] == lat["p95"]
    import mlflow

    run = mlflow.MlflowClient(mlflow_tracking_uri).get_run(run_id)
    assert run.data.metrics["serving.latency_p50_ms"] == pytest.approx(lat["p50"])
    assert run.data.metrics["serving.latency_p95_ms"] == pytest.approx(lat["p95"])
    assert run.data.metrics["serving.rps"] == pytest.approx(report["rps"])
    assert run.data.tags["model_version"] == report["model_version"]


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (b"{not json", "not valid json"),
        (b'{"max_tokens": 4}', "messages"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"role": "robot", "content": "hi"}]}', "role"),
        (b'{"messages": [{"role": "user", "content": 3}]}', "content"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "a<|im_end|>b"}]}', "special-token"),
        (b'{"messages": [{"role": "assistant", "content": "hi"}]}', "last message"),
        (b'{"messages": [{"role": "user", "content": "' + b"x " * 200 + b'"}], "max_tokens": 32}', "context"),
    ],
)
def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(server, body, expect):
    status, reply = _raw_post(server.url + "/v1/chat/completions", body)
    assert status == 400, reply
    assert expect in reply["error"]["message"].lower()
    ok, _ = post_json(server.url + "/v1/chat/completions",
                      {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok == 200


def test_unknown_route_is_404_json(server):
    status, reply = _raw_post(server.url + "/v1/nothing", b"{}")
    assert status == 404 and reply["error"]["message"]


def test_feedback_is_stored_with_the_exchange_and_aggregated(server):
    session = ChatSession(server.url, max_tokens=4)
    lines = ["/rate 3", "hello", "/rate 4", "what is a list?", "/down", "/rate 9", "/bogus", "/quit", "never sent"]
    said: list[str] = []
    counts = run_chat(session, lines, said.append)
    assert counts == {"turns": 2, "ratings": 2, "errors": 2}  # /rate before any answer, /rate 9
    assert any("nothing to rate" in s for s in said) and any("unknown command" in s for s in said)

    status, reply = post_json(server.url + "/v1/feedback", {"id": "chatcmpl-nope", "rating": 3})
    assert status == 404 and "no response" in reply["error"]["message"]
    status, reply = post_json(server.url + "/v1/feedback", {"id": session.last_id, "rating": 0})
    assert status == 400 and "rating" in reply["error"]["message"]

    row = FeedbackStore(server.db).get(session.last_id)
    assert row["rating"] == 1 and json.loads(row["request"])["messages"][-1]["content"] == "what is a list?"
    assert row["response"] == session.messages[-1]["content"]

    with urllib.request.urlopen(server.url + "/v1/feedback/summary", timeout=5) as resp:
        summary = json.loads(resp.read())
    stats = summary["versions"][summary["model_version"]]
    assert stats["rated"] == 2 and stats["mean_rating"] == pytest.approx(2.5)  # (4 + 1) / 2
    assert stats["responses"] >= 100 + 2  # the load test's requests are recorded too


def test_stop_leaves_no_process_behind(server):
    pid = server.proc.pid
    server.stop()
    assert server.proc.returncode is not None
    assert not _group_alive(pid), "a process of the server's group survived the stop"
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "/health", timeout=2)


# --- pure functions, no server ---


def test_percentile_interpolates_like_numpy():
    values = [float(v) for v in (5, 1, 4, 2, 3, 10, 7, 6, 9, 8)]
    assert percentile(values, 50) == 5.5
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10
    with pytest.raises(ValueError):
        percentile([], 50)


def test_load_test_refuses_other_hosts():
    require_loopback("http://localhost:8000")
    with pytest.raises(ValueError, match="loopback"):
        run_load_test("http://example.com:8000", requests=1)


def test_chat_help_explains_rating(capsys):
    from lmforge.packaging.chat import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--url" in out and "/rate 1-5" in out and "make serve" in out


def test_parse_rating():
    assert parse_rating("/rate 5") == 5 and parse_rating("/up") == 5 and parse_rating("/down") == 1
    for bad in ("/rate", "/rate 6", "/rate x", "/up 3"):
        with pytest.raises(ValueError, match="/rate 1..5"):
            parse_rating(bad)


def test_feedback_store_summary_per_version(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    for i, version in enumerate(["a", "a", "b"]):
        store.record(f"id{i}", version, {"messages": []}, "reply", 1.0)
    assert store.rate("id0", 5) and store.rate("id1", 2) and not store.rate("missing", 3)
    with pytest.raises(ValueError):
        store.rate("id2", 6)
    summary = store.summary()
    assert summary["a"] == {"responses": 2, "rated": 2, "mean_rating": 3.5, "rating_rate": 1.0}
    assert summary["b"]["rated"] == 0 and summary["b"]["mean_rating"] is None


def test_resolve_model_from_a_registry_alias(tmp_path, tiny_model_dir, tiny_tokenizer_dir, mlflow_tracking_uri,
                                             monkeypatch):
    """``models:/<name>@champion`` of a pyfunc holding the package (as the registry logs it) -> the HF folder."""
    import mlflow

    package = tmp_path / "pkg"
    shutil.copytree(tiny_model_dir, package)
    shutil.copytree(tiny_tokenizer_dir, package, dirs_exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking_uri)
    mlflow.set_tracking_uri(mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("h9-serve-resolve", artifact_location=(tmp_path / "artifacts").as_uri())

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, model_input: list[str], params=None) -> list[str]:
            return model_input

    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), artifacts={"package": str(package)},
                                       pip_requirements=["mlflow"])
    version = mlflow.register_model(info.model_uri, "h9-serve-tiny").version
    client.set_registered_model_alias("h9-serve-tiny", "champion", version)

    local, registry_version = resolve_model("models:/h9-serve-tiny@champion", download_dir=tmp_path / "dl")
    assert registry_version == f"h9-serve-tiny/{version}"
    assert (local / "config.json").is_file() and (local / "tokenizer_config.json").is_file()
    assert (local / "model.safetensors").read_bytes() == (package / "model.safetensors").read_bytes()

    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "nowhere"))


def test_parse_registry_version():
    assert parse_registry_version("lmforge-chat/3") == ("lmforge-chat", "3")
    assert parse_registry_version("team/lmforge-chat/12") == ("team/lmforge-chat", "12")
    for not_registry in ("lmforge-chat@0123456789ab", "lmforge-chat/champion", "/3", "3"):
        assert parse_registry_version(not_registry) is None


def test_summary_tags_the_registered_model_version(tmp_path, monkeypatch, caplog):
    """``serve --summary`` logs the mean rating per version and puts it on the registry version it was served as."""
    import logging

    import mlflow

    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    client.create_registered_model("h3-sat")
    source = tmp_path / "artifacts" / "model"
    source.mkdir(parents=True)
    number = client.create_model_version("h3-sat", source=source.as_uri()).version

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    rows = [(f"h3-sat/{number}", 4), (f"h3-sat/{number}", 1), (f"h3-sat/{number}", None),
            ("pkg@0123456789ab", 5), ("h3-sat/99", 3)]  # a directory version; a version the registry lacks
    for i, (version, rating) in enumerate(rows):
        store.record(f"id{i}", version, {"messages": []}, "reply", 1.0)
        if rating is not None:
            store.rate(f"id{i}", rating)

    with caplog.at_level(logging.WARNING, logger="lmforge.packaging.feedback_store"):
        serve_main(["--summary", "--feedback-db", str(store.path)])

    tags = client.get_model_version("h3-sat", number).tags
    assert float(tags["user_satisfaction.mean_rating"]) == pytest.approx((4 + 1) / 2)
    assert tags["user_satisfaction.ratings"] == "2" and tags["user_satisfaction.responses"] == "3"
    assert float(tags["user_satisfaction.rating_rate"]) == pytest.approx(2 / 3)
    run = client.get_run(tags["user_satisfaction.run_id"])  # the same numbers as metrics of a serving run
    assert run.data.tags["model_version"] == f"h3-sat/{number}"
    assert run.data.metrics["serving.user_satisfaction.mean_rating"] == pytest.approx(2.5)
    assert client.get_experiment(run.info.experiment_id).name == "lmforge-serving"

    versions = {r.data.tags["model_version"] for r in client.search_runs([run.info.experiment_id])}
    assert versions == {f"h3-sat/{number}", "pkg@0123456789ab", "h3-sat/99"}  # every version still gets its run
    assert any("h3-sat/99 is not in the registry" in r.getMessage() for r in caplog.records)
    assert [v.version for v in client.search_model_versions("name = 'h3-sat'")] == [number]
