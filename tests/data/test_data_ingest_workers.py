"""Record sources read by the executor's workers (lmforge.data.ingest_units): the same shard names,
records, ids and bytes as the sequential reader, with malformed input, on every executor, and the
reading provably done by a worker process, not the parent."""

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data import ingest_units
from lmforge.data.executor import ExecutorConfig
from lmforge.data.ingest_units import ingest_sources
from lmforge.data.readers import SourceError

GOOD = "def total(values):\n    s = 0\n    for v in values:\n        s += v\n    return s\n"


def _line(i: int, **extra) -> bytes:
    return (json.dumps({"text": f"{GOOD}# {i}\n", "n": i, **extra}) + "\n").encode()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """jsonl (plain + .gz + plain, malformed lines), parquet (row groups of 2) and hf_disk (two splits) sources."""
    root = tmp_path_factory.mktemp("sources")
    jsonl = root / "jsonl"
    (jsonl / "sub").mkdir(parents=True)
    (jsonl / "a.jsonl").write_bytes(
        _line(0) + b"\n  \n" + b'{"text": "unterminated\n' + _line(1, uid="u1") + b"[1, 2]\n"
        + b'{"text": "caf\xe9"}\n' + _line(2) + b'{"content": "no text"}\n' + _line(3) + b"\r\n" + _line(4))
    (jsonl / "b.jsonl.gz").write_bytes(gzip.compress(_line(10) + b"{bad\n" + _line(11) + b"\n" + _line(12)))
    (jsonl / "sub" / "c.jsonl").write_bytes(b"".join(_line(20 + i) for i in range(5)) + b'{"text": 7}')
    (jsonl / "z.jsonl").write_bytes(b"")  # empty: no records, no shard

    parquet = root / "parquet"
    parquet.mkdir()
    texts = [f"{GOOD}# row {i}\n" for i in range(7)]
    texts[3] = None
    pq.write_table(pa.table({"text": texts, "n": list(range(7))}), parquet / "a.parquet", row_group_size=2)
    pq.write_table(pa.table({"text": ["last one"], "n": [99]}), parquet / "b.parquet")

    hf = root / "hf"
    (hf / "train").mkdir(parents=True)
    (hf / "test").mkdir()
    (hf / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    files = {"train/data-00000-of-00002.arrow": 5, "train/data-00001-of-00002.arrow": 3, "test/data-00000-of-00001.arrow": 4}
    for k, (name, rows) in enumerate(files.items()):
        table = pa.table({"text": [f"{GOOD}# {name} {i}\n" for i in range(rows)], "uid": [f"{k}-{i}" for i in range(rows)]})
        with pa.ipc.new_stream(str(hf / name), table.schema) as writer:
            for batch in table.to_batches(max_chunksize=2):
                writer.write_batch(batch)
    (hf / "train" / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": "data-00000-of-00002.arrow"}, {"filename": "data-00001-of-00002.arrow"}]}))
    return {
        "jsonl": {"name": "j", "format": "jsonl", "path": str(jsonl), "id_field": "uid", "metadata": {"tag": "x"}},
        "jsonl-plain": {"name": "jp", "format": "jsonl", "path": str(jsonl / "**" / "*.jsonl")},
        "parquet": {"name": "p", "format": "parquet", "path": str(parquet), "batch_size": 3},
        "hf": {"name": "h", "format": "hf_disk", "path": str(hf), "id_field": "uid"},
    }


def loaded(shards):
    return {name: shard() if callable(shard) else shard for name, shard in shards.items()}


@pytest.mark.parametrize("shard_size", [1, 3, 4, 100])
@pytest.mark.parametrize("max_records", [None, 5])
def test_planned_units_give_the_sequential_records(sources, shard_size, max_records):
    gz_first = {"name": "g", "format": "jsonl", "path": sources["jsonl"]["path"] + "/**/[bc]*.jsonl*"}
    configs = [{**s, "max_records": max_records} for s in [*sources.values(), gz_first]]
    expected = ingest_sources(configs, shard_size)
    assert sum(len(r) for r in expected.values()) == (5 * 5 if max_records else 19 + 15 + 8 + 12 + 10)
    assert loaded(ingest_sources(configs, shard_size, lazy=True)) == expected
    assert loaded(ingest_sources(configs, shard_size, executor=ExecutorConfig("sequential"))) == expected


def test_raw_shards_are_byte_identical_on_two_local_workers(sources, tmp_path, monkeypatch):
    from lmforge.pipelines.datasets import AtomicPartitionedDataset

    code = tmp_path / "code"
    code.mkdir()
    for i in range(5):
        (code / f"m{i}.py").write_text(f"{GOOD}# file {i}\n")
    configs = [*sources.values(), {"name": "c", "root": str(code)}]

    def save(shards, name):
        dataset = AtomicPartitionedDataset(path=str(tmp_path / name), dataset="lmforge.pipelines.datasets.JSONLinesDataset",
                                           filename_suffix=".jsonl", overwrite=True)
        dataset.save(shards)
        return {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())}

    expected = save(ingest_sources(configs, 3), "eager")
    local = save(ingest_sources(configs, 3, executor=ExecutorConfig("local", workers=2)), "local")
    assert local == expected
    monkeypatch.setattr(ingest_units, "FILES_PER_UNIT", 2)  # a shard of 3 files read as units of 2 and 1
    assert save(ingest_sources(configs, 3, executor=ExecutorConfig("local", workers=2)), "split") == expected
    assert len(expected) == 7 + 5 + 3 + 4 + 2 and b'"malformed_json": "a.jsonl:4: ' in expected["j-shard-00000.jsonl"]


def test_records_are_read_by_the_workers_not_the_parent(sources, tmp_path, monkeypatch):
    """Every reader call is logged with its process id (fork carries the spy into the pool's workers)."""
    log = tmp_path / "readers.log"
    for name in ("read_jsonl_file", "read_parquet_file", "read_arrow_file", "read_source_files"):
        real = getattr(ingest_units, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()} {_name}\n")
            yield from _real(*args, **kwargs)

        monkeypatch.setattr(ingest_units, name, spy)
    code = tmp_path / "code"
    code.mkdir()
    (code / "m.py").write_text(GOOD)

    shards = ingest_sources([*sources.values(), {"name": "c", "root": str(code)}], 4,
                            executor=ExecutorConfig("local", workers=2, start_method="fork"))
    records = loaded(shards)  # what the catalog's save does in the parent

    calls = [line.split() for line in log.read_text().splitlines()]
    assert {name for _, name in calls} == {"read_jsonl_file", "read_parquet_file", "read_arrow_file",
                                           "read_source_files"}
    pids = {int(pid) for pid, _ in calls}
    assert os.getpid() not in pids, "a source was read in the parent"
    assert len(records) == 5 + 4 + 2 + 3 + 1
    assert sum(len(r) for r in records.values()) == 19 + 15 + 8 + 12 + 1


def test_bad_input_gives_the_sequential_reader_error(sources, tmp_path):
    data = gzip.compress(b"".join(_line(i) for i in range(300)))
    (tmp_path / "t.jsonl.gz").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    cases = [{"name": "t", "format": "jsonl", "path": str(tmp_path / "t.jsonl.gz")},
             {"name": "p", "format": "parquet", "path": str(tmp_path / "bad.parquet")},
             {"name": "g", "format": "jsonl", "path": str(tmp_path / "gone.jsonl")},
             {**sources["hf"], "text_field": "body"}]
    for case in cases:
        with pytest.raises(SourceError) as eager:
            ingest_sources([case], 10)
        with pytest.raises(SourceError) as on_workers:
            loaded(ingest_sources([case], 10, executor=ExecutorConfig("local", workers=2)))
        assert str(on_workers.value) == str(eager.value)
        assert str(eager.value).startswith(f"source {case['name']!r}: ")


def test_the_spool_is_removed_with_the_shards(sources, tmp_path):
    shards = ingest_sources([sources["jsonl"]], 3, executor=ExecutorConfig("sequential", spool_dir=str(tmp_path)))
    (spool,) = tmp_path.iterdir()
    assert len(list(spool.iterdir())) == 3 + 1 + 2  # a.jsonl's units, b.jsonl.gz, c.jsonl's
    del shards
    assert not spool.exists()
