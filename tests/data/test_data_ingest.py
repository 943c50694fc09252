"""Tests for lmforge.data.ingest: configured sources -> shards with stable ids and metadata."""

import pytest

from lmforge.data.ingest import SourceConfig
from lmforge.data.ingest_units import ingest_sources


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_ingest_shards_a_code_folder_with_metadata(tmp_path):
    for i in range(5):
        write(tmp_path, f"pkg/mod{i}.py", f"x = {i}\n")
    write(tmp_path, "pkg/tests/test_x.py", "assert True\n")
    source = {"name": "mine", "root": str(tmp_path), "exclude": ["**/tests/**"], "license": "MIT"}
    shards = ingest_sources([source], shard_size=2)
    assert sorted(shards) == ["mine-shard-00000", "mine-shard-00001", "mine-shard-00002"]
    records = [r for name in sorted(shards) for r in shards[name]]
    assert [r["metadata"]["path"] for r in records] == [f"pkg/mod{i}.py" for i in range(5)]
    assert all(r["source"] == "mine" and r["metadata"]["license"] == "MIT" for r in records)
    again = ingest_sources([source], shard_size=2)
    assert [r["id"] for s in sorted(again) for r in again[s]] == [r["id"] for r in records]


def test_max_files_caps_a_source(tmp_path):
    for i in range(5):
        write(tmp_path, f"m{i}.py", "pass\n")
    shards = ingest_sources([{"name": "s", "root": str(tmp_path), "max_files": 3}], shard_size=10)
    assert sum(len(v) for v in shards.values()) == 3


def test_default_root_is_the_stdlib_and_records_the_python_version():
    shards = ingest_sources([{"name": "stdlib", "max_files": 2, "license": "PSF-2.0"}], shard_size=10)
    records = shards["stdlib-shard-00000"]
    assert len(records) == 2 and all("python_version" in r["metadata"] for r in records)


@pytest.mark.parametrize("bad, message", [
    ({"name": "x", "colour": "red"}, "colour"),
    ({"name": "x", "format": "parquet_typo"}, "parquet_typo"),
])
def test_bad_source_config_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        SourceConfig.from_dict(bad)


def test_no_sources_is_an_error():
    with pytest.raises(ValueError, match="sources is empty"):
        ingest_sources([], shard_size=10)


def test_ingest_mixes_formats_with_their_options(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": f"j{i}", "k": i}) + "\n" for i in range(3)))
    pq.write_table(pa.table({"text": ["p0", "p1"], "doc_id": ["x", "y"]}), tmp_path / "b.parquet")
    sources = [
        {"name": "j", "format": "jsonl", "path": str(tmp_path / "*.jsonl"), "text_field": "body",
         "max_records": 2, "license": "CC0", "metadata": {"origin": "test"}},
        {"name": "p", "format": "parquet", "path": str(tmp_path / "b.parquet"), "id_field": "doc_id",
         "batch_size": 1},
    ]
    shards = ingest_sources(sources, shard_size=10)
    assert sorted(shards) == ["j-shard-00000", "p-shard-00000"]
    assert [r["text"] for r in shards["j-shard-00000"]] == ["j0", "j1"]
    assert shards["j-shard-00000"][1]["metadata"] == {"path": "a.jsonl", "line": 2, "license": "CC0",
                                                      "origin": "test", "k": 1}
    assert [(r["id"], r["source"]) for r in shards["p-shard-00000"]] == [("x", "p"), ("y", "p")]
    assert ingest_sources(sources, shard_size=10) == shards  # deterministic


@pytest.mark.parametrize("bad, message", [
    ({"name": "x", "format": "jsonl"}, "needs a `path`"),
    ({"name": "x", "format": "parquet", "path": "p", "batch_size": 0}, "batch_size"),
])
def test_record_formats_validate_their_options(bad, message):
    with pytest.raises(ValueError, match=message):
        SourceConfig.from_dict(bad)


def test_a_missing_path_names_the_source(tmp_path):
    from lmforge.data.readers import SourceError

    with pytest.raises(SourceError, match=r"source 'gone': source path does not exist"):
        ingest_sources([{"name": "gone", "format": "jsonl", "path": str(tmp_path / "x.jsonl")}], 10)
