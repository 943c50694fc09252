"""No partial output taken as complete: every catalog output is saved atomically, a save killed halfway leaves the
old output whole, and the next run removes what it left (``OutputLockHooks``) under the output's lock.

The kills are real: a forked child saving the dataset SIGKILLs itself halfway through the save.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline

from lmforge.hooks import OutputLockHooks
from lmforge.pipelines import datasets as lmforge_datasets
from lmforge.pipelines.datasets import (
    AtomicJSONDataset,
    AtomicPartitionedDataset,
    AtomicTextDataset,
    JSONLinesDataset,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READ_ONLY = {"deepspeed_templates"}  # inputs no stage writes (conf/base/deepspeed)


def shards(path: Path) -> AtomicPartitionedDataset:
    return AtomicPartitionedDataset(path=str(path), dataset="lmforge.pipelines.datasets.JSONLinesDataset",
                                    filename_suffix=".jsonl", overwrite=True)


def kill_self(*_args):
    os.kill(os.getpid(), signal.SIGKILL)


def killed_while(save) -> None:
    """Run ``save()`` in a forked child that SIGKILLs itself halfway through; assert it died by the signal."""
    child = multiprocessing.get_context("fork").Process(target=save)
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL


def hook_run(root: Path, pipeline: Pipeline, catalog: DataCatalog, hooks: OutputLockHooks | None = None):
    hooks = hooks or OutputLockHooks()
    hooks.before_pipeline_run(run_params={"project_path": str(root)}, pipeline=pipeline, catalog=catalog)
    return hooks


def test_every_catalog_output_is_saved_atomically():
    """Every dataset of conf/base/catalog.yml (the one inside an MlflowArtifactDataset too) is one of ours."""
    import yaml
    from kedro.utils import load_obj

    atomic = (lmforge_datasets.JSONLinesDataset, lmforge_datasets.ArtifactDirectory, lmforge_datasets.LossCurveDataset,
              lmforge_datasets.MetricsDataset, AtomicPartitionedDataset, AtomicJSONDataset, AtomicTextDataset)
    entries = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text())
    checked = []
    for name, entry in entries.items():
        if name.startswith("_") or name in READ_ONLY or entry["type"] == "kedro.io.MemoryDataset":
            continue
        if entry["type"].endswith("MlflowArtifactDataset"):
            entry = entry["dataset"]
        assert issubclass(load_obj(entry["type"]), atomic), f"{name}: {entry['type']} saves in place"
        checked.append(name)
    assert {"clean_documents", "seed_metrics", "evaluation_report", "template_audit_sft"} <= set(checked)


def test_partitioned_save_killed_halfway_keeps_the_old_folder_and_the_next_run_removes_the_leftover(tmp_path, caplog):
    out = tmp_path / "data/03_primary/documents"
    old = {"shard-00000": [{"id": "a"}], "shard-00001": [{"id": "b"}]}
    shards(out).save(old)

    # the new output's first shard is written, the second one's creation kills the writer
    killed_while(lambda: shards(out).save({"shard-00000": [{"id": "new"}], "shard-00001": kill_self,
                                          "shard-00002": [{"id": "c"}]}))

    assert {k: v() for k, v in shards(out).load().items()} == old  # whole, and the old one
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(".documents.")]
    assert len(leftovers) == 1 and (leftovers[0] / "documents/shard-00000.jsonl").is_file()  # a half folder, aside

    pipeline = Pipeline([Node(lambda: None, None, "clean_documents", name="write")])
    with caplog.at_level("WARNING", logger="lmforge.hooks"):
        hooks = hook_run(tmp_path, pipeline, DataCatalog({"clean_documents": shards(out)}))
    hooks.after_pipeline_run(run_params={}, run_result={}, pipeline=pipeline, catalog=None)
    assert not leftovers[0].exists()
    assert "removed 1 leftover(s) of a killed run: data/03_primary/.documents." in caplog.text
    assert sorted(shards(out).load()) == ["shard-00000", "shard-00001"]


def test_partitioned_save_that_raises_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "docs"
    shards(out).save({"shard-00000": [{"id": "a"}]})

    def broken():
        raise RuntimeError("source unreadable")

    with pytest.raises(Exception, match="source unreadable"):
        shards(out).save({"shard-00000": [{"id": "new"}], "shard-00001": broken})

    assert [r for v in shards(out).load().values() for r in v()] == [{"id": "a"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_json_and_text_saves_killed_halfway_keep_the_old_file(tmp_path):
    report = tmp_path / "seed_metrics.json"
    AtomicJSONDataset(filepath=str(report), save_args={"indent": 2}).save({"rows": [1, 2]})
    # json.dump has written part of the list when it meets the object it calls `default` on: the writer dies there
    killed_while(lambda: AtomicJSONDataset(filepath=str(report), save_args={"default": kill_self})
                 .save({"rows": [1, 2, 3, object()]}))
    assert json.loads(report.read_text()) == {"rows": [1, 2]}
    leftover = [p for p in tmp_path.iterdir() if p.name.startswith(".seed_metrics.json.")]
    assert len(leftover) == 1 and leftover[0].name.endswith(".tmp")  # the half file, aside (removed by the next run)

    html = tmp_path / "report.html"
    AtomicTextDataset(filepath=str(html)).save("<p>old</p>")
    with pytest.raises(Exception):  # noqa: B017 - a str is required: TypeError wrapped by Kedro
        AtomicTextDataset(filepath=str(html)).save(b"not text")
    assert html.read_text() == "<p>old</p>" and AtomicTextDataset(filepath=str(html)).load() == "<p>old</p>"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.html.")]


def test_temp_names_are_unique_per_writer(tmp_path, monkeypatch):
    seen = []
    import lmforge.atomic

    real = lmforge.atomic.os.replace
    monkeypatch.setattr(lmforge.atomic.os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    JSONLinesDataset(str(tmp_path / "q.jsonl")).save([{"a": 1}])
    JSONLinesDataset(str(tmp_path / "q.jsonl")).save([{"a": 2}])
    assert len(set(seen)) == 2 and all(n.startswith(f".q.jsonl.{os.getpid()}-") for n in seen)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_in_puts_the_new_folder_in_place_and_the_old_one_aside(tmp_path, monkeypatch, exchange):
    import ctypes

    if not exchange:  # a libc without renameat2 (macOS) or a filesystem without RENAME_EXCHANGE
        monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: (_ for _ in ()).throw(OSError("no libc")))
    (tmp_path / "out").mkdir()
    (tmp_path / "out/old.txt").write_text("old")
    (tmp_path / ".out.1-x").mkdir()
    (tmp_path / ".out.1-x/new.txt").write_text("new")

    lmforge_datasets.swap_in(tmp_path / ".out.1-x", tmp_path / "out")

    assert [p.name for p in (tmp_path / "out").iterdir()] == ["new.txt"]
    assert [p.name for p in (tmp_path / ".out.1-x").iterdir()] == ["old.txt"]
