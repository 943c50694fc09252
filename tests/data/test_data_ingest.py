"""Tests for lmforge.data.ingest: configured sources -> shards with stable ids and metadata."""

import pytest

from lmforge.data.ingest import SourceConfig, ingest_sources


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
