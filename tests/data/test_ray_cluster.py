"""The data stage on a real two-node Ray cluster (loopback): byte-identical to the local process pool, both nodes
working, a worker node SIGKILLed mid-run, and nothing of the cluster left after it.

One cluster for the module (``ray start --block`` head + one worker node, each 1 CPU, its own temp dir; see
ray_cluster.py) and one small project (the repository's files, the stdlib corpus cut to ~70 files in ~14 shards,
in a fresh git + DVC repository): `dvc repro data_processing` with the local executor is the reference (run while
the cluster starts); then
`kedro run --pipelines data_processing` with ``executor: {kind: ray, ray_address: auto}`` (conf/local/globals.yml,
the way a user switches) and RAY_ADDRESS naming the cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml
from ray_cluster import RayCluster
from test_data_scale import config as scale_config
from test_data_scale import mixed_shards, outcome  # noqa: F401 - mixed_shards is a fixture

from lmforge.data.executor import ExecutorConfig, map_in_order
from lmforge.errors import UserError

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STDLIB = sysconfig.get_paths()["stdlib"]
OUTPUTS = ["data/01_raw/corpus", "data/03_primary/documents", "data/02_intermediate/quarantine.jsonl",
           "data/08_reporting/dedup_manifest.jsonl"]
METRICS = "data/08_reporting/data_processing.json"
PARAMS = {
    "sources": [{"name": "stdlib-sample", "format": "code_folder", "root": STDLIB,
                 "patterns": ["email/**/*.py", "xml/**/*.py", "json/*.py", "http/*.py", "logging/*.py", "urllib/*.py"],
                 "exclude": ["**/__pycache__/**"], "license": "PSF-2.0", "language_group": "code", "kind": "code"}],
    "shard_size": 5,
    "cleaning": {"identify_language": False},  # lingua is tested in test_data_langid; here it would only cost time
    "decontamination": {"enabled": False},
    # code only: no language share to check (null: no check)
    "validation": {"min_records": 10, "min_median_chars": 100, "min_language_share": 0,
                   "language_share_bounds": None, "language_char_share_bounds": None},
}
RAY_GLOBALS = {"executor": {"kind": "ray", "ray_address": "auto"}}


def make_project(root: Path) -> tuple[Path, dict]:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file() and not rel.startswith(("tests/", "data/", "notebooks/", "bench/")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    path = root / "conf/base/parameters_data_processing.yml"
    params = yaml.safe_load(path.read_text())["data_processing"]
    params.update(PARAMS)
    params["validation"] = {**params["validation"], **PARAMS["validation"]}
    path.write_text(yaml.safe_dump({"data_processing": params}, sort_keys=False))
    (root / "data/00_sources").mkdir(parents=True)
    (root / "data/00_sources/manifest.json").write_text("{}\n")  # no package source: nothing fetched
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root / "src"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "KEDRO_DISABLE_TELEMETRY": "1",
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", "t"], ["git", "config", "user.email", "t@t"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "ray project"]):
        subprocess.run(cmd, cwd=root, check=True)
    return root, env


def snapshot(root: Path) -> dict[str, bytes]:
    """Every output file's bytes, by path."""
    out = {}
    for rel in OUTPUTS:
        path = root / rel
        for file in sorted([path] if path.is_file() else path.rglob("*")):
            if file.is_file():
                out[str(file.relative_to(root))] = file.read_bytes()
    return out


def counts(root: Path) -> dict:
    """The stage's metrics without its timings and where it ran."""
    metrics = json.loads((root / METRICS).read_text())
    return {k: v for k, v in metrics.items() if not re.search(r"seconds|time|duration|worker|executor|_per_s", k)}


def dvc_status(root: Path, env: dict) -> str:
    proc = subprocess.run([str(BIN / "dvc"), "status", "data_processing"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The project and its reference `dvc repro data_processing` (local executor), started, not awaited: the
    cluster starts meanwhile."""
    root, env = make_project(tmp_path_factory.mktemp("ray-project"))
    log = open(root / "reference.log", "w")
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "data_processing"], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    yield root, env, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, reference_run):
    with RayCluster(tmp_path_factory.mktemp("ray")) as ray_cluster:
        ray_cluster.add_node("worker1")
        yield ray_cluster
        left = ray_cluster.stop()  # the nodes' `ray start` SIGKILLed: the rest must follow by itself
        assert not left, f"Ray processes outlived their node's `ray start`: {left}"


@pytest.fixture(scope="module")
def project(reference_run):
    """The local executor's reference: outputs, counts, dvc.lock."""
    root, env, proc = reference_run
    assert proc.wait(timeout=300) == 0, (root / "reference.log").read_text()[-4000:]
    reference = snapshot(root)
    assert len([p for p in reference if p.startswith("data/03_primary/documents/")]) >= 2
    return root, env, reference, counts(root)


def kedro_on_ray(root: Path, env: dict, cluster: RayCluster) -> subprocess.Popen:
    (root / "conf/local").mkdir(exist_ok=True)
    (root / "conf/local/globals.yml").write_text(yaml.safe_dump(RAY_GLOBALS))
    log = open(root / "ray-run.log", "w")
    return subprocess.Popen([str(BIN / "kedro"), "run", "--pipelines", "data_processing"],
                            cwd=root, env={**env, **cluster.driver_env}, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_node_cluster_gives_the_local_executors_bytes(cluster, project):
    root, env, reference, reference_counts = project
    proc = kedro_on_ray(root, env, cluster)
    rc = finish(proc)
    log = (root / "ray-run.log").read_text()
    assert rc == 0, log[-4000:]
    ran = re.search(r"Ray: (\d+) task\(s\) on (\d+) node\(s\)", log)
    assert ran, log[-3000:]
    assert int(ran[2]) == 2, f"the shards did not run on both nodes: {ran[0]}"  # a node that never joined: 1
    got = snapshot(root)
    assert got.keys() == reference.keys()
    assert [p for p in got if got[p] != reference[p]] == []
    assert counts(root) == reference_counts  # so dvc.lock's hashes of these outputs hold for the Ray run's


def test_a_changed_shard_is_detected(project, tmp_path):
    """The comparison above can fail: one byte changed in one cleaned shard is found."""
    root, env, reference, _ = project
    shard = sorted(p for p in reference if p.startswith("data/03_primary/documents/"))[0]
    backup = tmp_path / "shard"
    shutil.copy2(root / shard, backup)
    try:
        data = bytearray((root / shard).read_bytes())
        data[len(data) // 2] ^= 1
        (root / shard).write_bytes(bytes(data))
        got = snapshot(root)
        assert [p for p in got if got[p] != reference[p]] == [shard]
    finally:
        shutil.copy2(backup, root / shard)


def test_every_shard_form_gives_the_sequential_result_on_the_cluster(cluster, monkeypatch, mixed_shards):  # noqa: F811
    """Lists, picklable loaders and closures (Ray's cloudpickle sends them), with every kind of drop."""
    from lmforge.data.process import process_corpus

    for name, value in cluster.driver_env.items():
        monkeypatch.setenv(name, value)
    expected = outcome(process_corpus(mixed_shards, scale_config("sequential"), shard_size=3))
    assert outcome(process_corpus(mixed_shards, scale_config("ray", None), shard_size=3)) == expected


def test_tokenization_is_identical_on_the_cluster(cluster, monkeypatch):
    """Token shards' batches run on the same executor (the tokenizer put in the object store once): same ids, same
    batches, in order, as in one process (the shard writer only concatenates them)."""
    import numpy as np

    from lmforge.tokenizer.encode import encode_documents
    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer
    from lmforge.tokenizer.train import TokenizerTrainArgs, train_tokenizer

    texts = [p.read_text(errors="replace") for p in sorted(Path(STDLIB, "json").glob("*.py"))] * 4
    tokenizer = SentencePieceTokenizer.from_bytes(train_tokenizer(texts[:5], TokenizerTrainArgs(vocab_size=512)))
    for name, value in cluster.driver_env.items():
        monkeypatch.setenv(name, value)
    one = list(encode_documents(texts, tokenizer, batch_bytes=20_000))
    ray = list(encode_documents(texts, tokenizer, executor=ExecutorConfig(kind="ray", ray_address="auto"),
                                batch_bytes=20_000))
    assert len(one) > 4 and [n for n, _ in ray] == [n for n, _ in one]
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for (_, a), (_, b) in zip(ray, one, strict=True))


def test_worker_node_killed_mid_run_is_retried_or_fails_cleanly(cluster, project):
    """SIGKILL the worker node's raylet once it has started a worker for a shard: Ray re-runs its tasks on the head and the outputs are
    the reference's; or the stage stops with one line and leaves no output `dvc status` would take as complete."""
    root, env, reference, _ = project
    for rel in OUTPUTS:  # no earlier complete output to fall back on
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    proc = kedro_on_ray(root, env, cluster)
    deadline = time.monotonic() + 180
    raylet = cluster.raylet_pid("worker1")
    while not cluster.workers("worker1"):  # the node got a lease of this run: a worker started for its task
        assert proc.poll() is None, "the run ended before the worker node ran a task"
        assert time.monotonic() < deadline, "the worker node never ran a task"
        time.sleep(0.05)
    os.kill(raylet, signal.SIGKILL)
    rc = finish(proc)
    log = (root / "ray-run.log").read_text()
    node_gone = time.monotonic() + 30
    while cluster.node_processes("worker1"):  # `ray start --block` ends the rest of a node that lost its raylet
        assert time.monotonic() < node_gone, f"the worker node outlived its raylet: {cluster.node_processes('worker1')}"
        time.sleep(0.2)
    if rc == 0:
        assert re.search(r"Ray: \d+ task\(s\) on 1 node\(s\)|Ray: \d+ task\(s\) on 2 node\(s\)", log), log[-3000:]
        assert snapshot(root) == reference
    else:
        errors = [line for line in log.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Ray lost" in errors[0] and "Traceback" not in log, log[-3000:]
        assert not any((root / rel).exists() for rel in OUTPUTS)
        status = dvc_status(root, env)
        assert all(f"deleted:            {rel}" in status for rel in OUTPUTS), status  # dvc repro reruns the stage


def test_lost_worker_beyond_retries_is_one_line(cluster, monkeypatch):
    for name, value in cluster.driver_env.items():
        monkeypatch.setenv(name, value)
    executor = ExecutorConfig(kind="ray", ray_address="auto", ray_max_retries=0)
    with pytest.raises(UserError, match=r"Ray lost task 0 on the cluster at 127\.0\.0\.1:\d+ after 0 retries") as err:
        list(map_in_order(os._exit, [1] * 3, executor))  # the worker dies, as it would with its node
    assert "\n" not in str(err.value)


def test_unreachable_cluster_is_one_line(monkeypatch):
    from ray_cluster import free_port

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(UserError, match=rf"no Ray cluster answers at {address}.*ray start --head"):
        list(map_in_order(os._exit, [1], ExecutorConfig(kind="ray", ray_address=address)))
    assert time.monotonic() - start < 5
