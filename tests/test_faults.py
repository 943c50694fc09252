"""Faults injected into real parts: a SIGKILLed run's MLflow run, a tracking store that goes away, a full disk
under a checkpoint or a token shard, a corrupted newest checkpoint, an input file that turns unreadable.

Each test checks what the user sees (one line naming the file and what to do) and that nothing is lost.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from lmforge import processes, step_logging, tracking


@pytest.fixture
def store(tmp_path_factory, mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_tracking_uri)
    return client, client.create_experiment(f"faults-{uuid.uuid4().hex[:8]}")


def test_a_sigkilled_run_is_closed_as_killed_and_counted_as_a_crash(store, mlflow_tracking_uri, caplog):
    from lmforge.evaluation.operations import gather_operations

    client, exp_id = store
    # the owner of a run as a `kedro run` tags it (tracking.tag_owner): a real process, then SIGKILLed
    owner = subprocess.Popen(["sleep", "60"])
    token = processes.owner_token(owner.pid)
    killed_run = client.create_run(exp_id, tags={tracking.OWNER_TAG: token, "lmforge.pipelines": "pretrain"}).info.run_id
    client.log_metric(killed_run, "pretrain.loss", 3.5, step=7)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    assert client.get_run(killed_run).info.status == "RUNNING"  # what a SIGKILL leaves behind
    other_host = client.create_run(exp_id, tags={tracking.OWNER_TAG: "elsewhere:1:1",
                                                 "lmforge.pipelines": "pretrain"}).info.run_id
    finished = client.create_run(exp_id, tags={"lmforge.pipelines": "pretrain"}).info.run_id
    client.set_terminated(finished, "FINISHED")

    with caplog.at_level(logging.WARNING, logger="lmforge.tracking"):
        closed = tracking.close_dead_runs(client, exp_id, closed_by="run-now")

    assert closed == [killed_run]
    run = client.get_run(killed_run)
    assert run.info.status == "KILLED"
    assert run.info.end_time == client.get_metric_history(killed_run, "pretrain.loss")[0].timestamp
    assert run.data.tags[tracking.ENDED_BY_TAG] == f"owner {token} gone; closed by run run-now"
    assert f"MLflow run {killed_run} was left RUNNING by {token}, which is gone (killed): marked KILLED" in caplog.text
    assert client.get_run(other_host).info.status == "RUNNING"  # its owner cannot be checked from here
    assert tracking.close_dead_runs(client, exp_id) == []  # closed once

    name = client.get_experiment(exp_id).name
    ops = gather_operations(tracking_uri=mlflow_tracking_uri, experiment=name, stages=["pretrain"],
                            exclude_active=False)["metrics"]
    # 3 runs, 2 crashed: the killed one (KILLED) and the other host's (owner unknown: open although a newer run
    # of the stage started, the rule for untagged runs), not the finished one
    assert ops["ops.pretrain.runs"] == 3.0
    assert ops["ops.pretrain.crashed_runs"] == 2.0
    assert ops["ops.pretrain.crash_rate"] == pytest.approx(2 / 3)
    assert ops["ops.chain.crash_rate"] == pytest.approx(2 / 3)


def test_a_live_owners_open_run_is_not_a_crash(store, mlflow_tracking_uri):
    from lmforge.evaluation.operations import gather_operations

    client, exp_id = store
    client.create_run(exp_id, tags={tracking.OWNER_TAG: processes.owner_token(), "lmforge.pipelines": "sft"})
    done = client.create_run(exp_id, tags={"lmforge.pipelines": "sft"}).info.run_id
    client.set_terminated(done, "FINISHED")

    assert tracking.close_dead_runs(client, exp_id) == []  # its owner (this process) is alive
    ops = gather_operations(tracking_uri=mlflow_tracking_uri, experiment=client.get_experiment(exp_id).name,
                            stages=["sft"], exclude_active=False)["metrics"]
    assert ops["ops.sft.crashed_runs"] == 0.0


def test_the_run_owner_hook_tags_the_run_and_closes_dead_owners_runs(mlflow_tracking_uri):
    from mlflow_helpers import isolated_run

    from lmforge.hooks import RunOwnerHooks

    with isolated_run(mlflow_tracking_uri, "faults-hook") as run:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_tracking_uri)
        exp_id = run.info.experiment_id
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = client.create_run(exp_id, tags={tracking.OWNER_TAG: f"{processes.owner_token().rsplit(':', 2)[0]}:"
                                                                    f"{dead.pid}:1"}).info.run_id
        RunOwnerHooks().before_pipeline_run(run_params={}, pipeline=None, catalog=None)

        assert client.get_run(run.info.run_id).data.tags[tracking.OWNER_TAG] == processes.owner_token()
        assert client.get_run(stale).info.status == "KILLED"
        assert client.get_run(stale).data.tags[tracking.ENDED_BY_TAG].endswith(f"closed by run {run.info.run_id}")


@pytest.fixture
def own_store(mlflow_tracking_uri, tmp_path):
    """A sqlite store of this test alone: a copy of the session's (already migrated: no 5-20 s schema build)."""
    import shutil

    from mlflow.tracking import MlflowClient

    db = tmp_path / "store.db"
    MlflowClient(mlflow_tracking_uri).search_experiments(max_results=1)  # the session's store exists
    shutil.copy(mlflow_tracking_uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment(f"faults-{uuid.uuid4().hex[:8]}")).info.run_id
    return uri, db, client, run_id


def _store_goes_away(db: Path) -> Path:
    """The store's file replaced by a directory (an unmounted or removed volume): every write fails."""
    away = db.with_name(db.name + ".away")
    os.replace(db, away)
    db.mkdir()
    return away


def _store_comes_back(db: Path, away: Path) -> None:
    db.rmdir()
    os.replace(away, db)


def _losses(client, run_id):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, "pretrain.loss"), key=lambda m: m.step)]


def test_a_tracking_store_that_goes_away_costs_no_metric(own_store, tmp_path, caplog):
    uri, db, client, run_id = own_store
    unsent = tmp_path / "run" / step_logging.UNSENT_METRICS
    step_logger = step_logging.StepLogger(run_id=run_id, tracking_uri=uri, flush_every=2, unsent_path=unsent,
                                      retry_every_s=0.0)
    with caplog.at_level(logging.WARNING, logger="lmforge.step_logging"):
        step_logger.log_params({"pretrain.world_size": 2})
        for step in range(4):
            step_logger.log({"pretrain.loss": 4.0 - step}, step)
        away = _store_goes_away(db)
        for step in range(4, 10):  # never raises: training goes on
            step_logger.log({"pretrain.loss": 4.0 - step}, step)
        assert not step_logger.healthy
        _store_comes_back(db, away)
        step_logger.log({"pretrain.loss": -6.0}, 10)  # the next flush sends the backlog
        assert step_logger.healthy
        step_logger.log({"pretrain.loss": -7.0}, 11)
        away = _store_goes_away(db)
        step_logger.log({"pretrain.loss": -8.0}, 12)
        step_logger.log_params({"pretrain.restart_count": 0})
        assert step_logger.close() == unsent  # still gone at the end: the rest is in the file

    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1, failures  # one warning, not one per step
    assert failures[0].startswith(f"MLflow tracking at {uri} failed (MlflowException: ")
    assert "training continues; per-step metrics stay in memory (up to 100000)" in failures[0]
    assert f"written to {unsent}" in failures[0]
    assert (f"2 metric(s) and 1 param(s) of MLflow run {run_id} could not be sent to {uri} and are saved in {unsent}: once the "
            f"store is back, run `python -m lmforge.step_logging replay {unsent}`") in caplog.text
    _store_comes_back(db, away)
    assert _losses(client, run_id) == [(s, 4.0 - s) for s in range(11)]  # steps 11 and 12 were in the buffer

    assert step_logging.main(["replay", str(unsent)]) == 0  # `python -m lmforge.step_logging replay <file>`, in process
    assert _losses(client, run_id) == [(s, 4.0 - s) for s in range(13)]  # nothing lost
    assert client.get_run(run_id).data.params == {"pretrain.world_size": "2", "pretrain.restart_count": "0"}
    assert not unsent.exists() and unsent.with_name(unsent.name + ".sent").exists()


def test_a_dead_tracking_server_costs_a_step_seconds_not_minutes(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused, as from a stopped server
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    for key, value in tracking.HTTP_LIMITS.items():
        monkeypatch.setenv(key, value)
    step_logger = step_logging.StepLogger(run_id="0" * 32, tracking_uri=uri, flush_every=1,
                                      unsent_path=tmp_path / step_logging.UNSENT_METRICS)
    t0 = time.perf_counter()
    step_logger.log({"pretrain.loss": 1.0}, 0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for step in range(1, 50):  # within retry_every_s of the failure: buffered, no request at all
        step_logger.log({"pretrain.loss": 1.0}, step)
    later = time.perf_counter() - t0

    assert not step_logger.healthy
    assert first < 15, f"one failed send took {first:.1f} s"
    assert later < 0.5
    assert step_logger.close() is not None
    assert sum(len(json.loads(line)["metrics"]) for line in step_logger.unsent_path.read_text().splitlines()) == 50


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB disk (tmpfs; needs root, as in CI's container), or None where mounting is refused: the
    tests then inject the OSError(ENOSPC) a full disk raises at the same write call."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _disk_full(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_mid_checkpoint_keeps_the_previous_one_for_resume(small_disk, tmp_path, caplog):
    import torch

    from lmforge.errors import UserError
    from lmforge.training import checkpoints as ck

    root = (small_disk or tmp_path) / "checkpoints"
    previous = root / ck.tag_for_step(40)
    previous.mkdir(parents=True)
    torch.save({"w": torch.arange(1000.0)}, previous / "mp_rank_00_model_states.pt")  # ~5 KiB
    ck.write_manifest(root, previous.name, step=40, fingerprint="f" * 64, world_size=1, global_batch=8)

    newest = root / ck.tag_for_step(80)
    with pytest.raises(UserError) as failed, caplog.at_level(logging.ERROR, logger="lmforge.training"):
        with ck.saving(root, newest.name) as tag_dir:  # what loop.save_checkpoint wraps DeepSpeed's save in
            tag_dir.mkdir()
            if small_disk is None:
                raise _disk_full(tag_dir / "mp_rank_00_model_states.pt")
            torch.save({"w": torch.zeros(100_000)}, tag_dir / "mp_rank_00_model_states.pt")  # 400 KB > the disk

    message = str(failed.value)
    assert message.startswith(f"disk full while writing checkpoint {newest} (")
    assert "free disk space there, or point the stage's run_dir at a larger disk" in message
    assert f"resume will use {previous}" in caplog.text
    assert not newest.exists()  # the partial checkpoint is gone (and its space with it)
    assert (root / ck.LATEST).read_text() == previous.name
    assert ck.find_resume_checkpoint(root, "f" * 64, 8) == (previous.name, [])
    assert sorted(p.name for p in root.iterdir()) == [ck.LATEST, previous.name]  # no temp file left


def test_a_full_disk_mid_token_shard_names_the_shard_and_leaves_no_partial_file(small_disk, tmp_path, monkeypatch):
    import numpy as np

    from lmforge.errors import UserError
    from lmforge.tokenizer.shards import ShardWriter

    out = (small_disk or tmp_path) / "token_shards"
    out.mkdir()
    writer = ShardWriter(out, "train", seq_len=64, blocks_per_shard=256, dtype="uint16")  # 32 KiB per shard
    if small_disk is None:
        real_save = np.save
        calls = []

        def save(path, array):  # the third shard hits a full disk, after part of it was written
            calls.append(path)
            if len(calls) == 3:
                Path(path).write_bytes(b"\x93NUMPY partial")
                raise _disk_full(path)
            real_save(path, array)

        monkeypatch.setattr(np, "save", save)
    with pytest.raises(UserError) as failed:
        writer.write(np.arange(64 * 256 * 20, dtype=np.uint16) % 1000)  # 20 shards, 640 KiB > the disk

    failing = out / f"train-{len(writer.shards):05d}.npy"
    assert str(failed.value).startswith(f"disk full while writing token shard {failing} (")
    assert "point the catalog's token_shards entry at a larger disk; then rerun the tokenizer stage" in str(failed.value)
    assert not failing.exists()
    assert sorted(p.name for p in out.iterdir()) == writer.shards  # the complete shards only
    assert all(np.load(out / name).shape == (256, 64) for name in writer.shards)


@pytest.mark.slow  # the session's killed 2-process run (shared with tests/training/test_training_resume*.py)
def test_a_corrupted_newest_checkpoint_resumes_from_the_previous_verified_one(killed_pretrain_run, tmp_path, caplog):
    """The real resume decision (``loop.find_resume_source``, rank 0 of the killed 2-process job) on the real
    DeepSpeed checkpoints of the session's killed run, its newest one corrupted in place (same size)."""
    import shutil

    import torch.distributed as dist

    from lmforge.training import checkpoints as ck
    from lmforge.training.config import JobSpec
    from lmforge.training.loop import find_resume_source

    run_dir = tmp_path / "run"
    shutil.copytree(killed_pretrain_run / "run", run_dir)
    spec = JobSpec.load(run_dir / "job.json")
    root = run_dir / "checkpoints"
    newest, previous = ck.list_tags(root)[:2]
    model_file = next(p for p in sorted((root / newest).rglob("*model_states.pt")))
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, only the hash can tell
    model_file.write_bytes(bytes(data))

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with caplog.at_level(logging.WARNING, logger="lmforge.training"):
            source = find_resume_source(spec, root, rank=0, world_size=2)
    finally:
        dist.destroy_process_group()

    assert source["tag"] == previous
    assert (f"checkpoint {root / newest} skipped: file {model_file.relative_to(root / newest).as_posix()} is "
            f"corrupted (SHA-256 differs from the manifest)") in caplog.text
    assert f"resuming from {root / previous}, the newest verified checkpoint (newer unusable: {newest})" in caplog.text
    assert not (root / newest).exists()  # deleted: never tried again
    assert ck.verify_checkpoint(root / previous)[1] is None


def _jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


def test_a_jsonl_file_that_disappears_mid_run_stops_the_stage_naming_it(tmp_path):
    from lmforge.data.readers import SourceError, read_jsonl

    _jsonl(tmp_path / "a.jsonl", ["first document " * 3])
    _jsonl(tmp_path / "b.jsonl", ["second document " * 3])
    docs = read_jsonl(str(tmp_path), source="web")  # lists a.jsonl and b.jsonl, then reads them in turn
    assert next(docs).metadata["path"] == "a.jsonl"
    (tmp_path / "b.jsonl").unlink()
    (tmp_path / "b.jsonl").mkdir()  # replaced by a directory while a.jsonl was being read

    with pytest.raises(SourceError) as failed:
        next(docs)
    assert str(failed.value) == (f"{tmp_path / 'b.jsonl'}: cannot be read (Is a directory): it was there when the "
                                 "source was listed; restore it, or take it out of the source, and rerun")


def test_a_code_file_gone_before_its_shard_is_read_is_quarantined_with_the_reason(tmp_path):
    """data_processing's lazy ingest lists a folder's files first and reads each shard later (in the workers):
    a file deleted in between is a quarantine record saying why, and the counts still reconcile."""
    from lmforge.data.cleaning import CleaningConfig
    from lmforge.data.dedup_minhash import NearDedupConfig
    from lmforge.data.ingest_units import ingest_sources
    from lmforge.data.process import DataProcessingConfig, process_corpus

    config = DataProcessingConfig(cleaning=CleaningConfig(min_chars=20, max_chars=10_000),
                                  near_dedup=NearDedupConfig(enabled=False))
    for i in range(3):
        (tmp_path / f"m{i}.py").write_text(f"def total{i}(values):\n    s = {i}\n    for v in values:\n        s += v\n"
                                           "    return s\n", encoding="utf-8")
    shards = ingest_sources([{"name": "c", "root": str(tmp_path)}], shard_size=1, lazy=True)
    (tmp_path / "m1.py").unlink()  # gone after the listing, before its shard is read

    result = process_corpus(shards, config, shard_size=10)

    dropped = [q for q in result.quarantine if q["reason"] == "read_error"]
    assert [q["metadata"]["path"] for q in dropped] == ["m1.py"]
    assert dropped[0]["metadata"]["read_error"] == "FileNotFoundError: No such file or directory"
    report = result.report
    assert (report["records_in"], report["records_out"], report["dropped"]["read_error"]) == (3, 2, 1)
    assert report["records_in"] == report["records_out"] + sum(report["dropped"].values())
