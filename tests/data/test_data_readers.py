"""Tests of lmforge.data.readers: JSONL (.gz, .zst), Parquet and save_to_disk datasets."""

import gzip
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data.readers import (
    SourceError,
    make_record_id,
    read_hf_disk,
    read_jsonl,
    read_parquet,
    resolve_files,
    to_jsonable,
)

ROWS = [
    {"uid": "r1", "content": "first text", "lang": "en"},
    {"uid": "r2", "content": "second text", "lang": "fr", "stars": 3},
]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- JSONL --------------------------------------------------------------------------


def test_jsonl_reads_any_text_field_with_ids_and_metadata(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    docs = list(read_jsonl(str(path), source="s", text_field="content", id_field="uid",
                           metadata={"license": "MIT"}))
    assert [d.text for d in docs] == ["first text", "second text"]
    assert [d.id for d in docs] == ["r1", "r2"]
    assert docs[1].metadata == {"path": "a.jsonl", "line": 2, "license": "MIT", "lang": "fr", "stars": 3}
    assert all(d.source == "s" for d in docs)


def test_jsonl_ids_without_id_field_hash_source_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    docs = list(read_jsonl(str(path), source="s", text_field="content"))
    assert [d.id for d in docs] == [make_record_id("s", "a.jsonl", 1), make_record_id("s", "a.jsonl", 2)]
    assert docs[0].metadata["uid"] == "r1"  # a field not used as id stays in metadata
    other = list(read_jsonl(str(path), source="other", text_field="content"))
    assert docs[0].id != other[0].id and len(docs[0].id) == 16


def test_jsonl_reads_a_folder_a_glob_and_gzip_in_sorted_order(tmp_path):
    write_jsonl(tmp_path / "d" / "b.jsonl", [{"text": "b"}])
    write_jsonl(tmp_path / "d" / "sub" / "c.jsonl", [{"text": "c"}])
    with gzip.open(tmp_path / "d" / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "a"}) + "\n")
    (tmp_path / "d" / "notes.txt").write_text("not a record\n")
    folder = list(read_jsonl(str(tmp_path / "d"), source="s"))
    assert [(d.text, d.metadata["path"]) for d in folder] == [
        ("a", "a.jsonl.gz"), ("b", "b.jsonl"), ("c", "sub/c.jsonl")]
    globbed = list(read_jsonl(str(tmp_path / "d" / "**" / "*.jsonl"), source="s"))
    assert [(d.text, d.metadata["path"]) for d in globbed] == [("b", "b.jsonl"), ("c", "sub/c.jsonl")]
    assert globbed[0].id == folder[1].id  # same file, same relative name, same id


def test_zst_without_zstandard_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails as if not installed
    (tmp_path / "a.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(SourceError, match=r"a\.jsonl\.zst.*zstandard"):
        list(read_jsonl(str(tmp_path / "a.jsonl.zst"), source="s"))


def test_zst_round_trip(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    payload = "".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(3)).encode()
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    assert [d.text for d in read_jsonl(str(tmp_path / "a.jsonl.zst"), source="s")] == ["t0", "t1", "t2"]


def test_missing_path_and_empty_glob_are_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list(read_jsonl(str(tmp_path / "nope.jsonl"), source="s"))
    with pytest.raises(SourceError, match="no files match"):
        list(read_jsonl(str(tmp_path / "*.jsonl"), source="s"))


def test_resolve_files_single_file_is_named_by_its_file_name(tmp_path):
    path = write_jsonl(tmp_path / "x" / "a.jsonl", [{"text": "a"}])
    assert resolve_files(str(path), ("*.jsonl",)) == [(path, "a.jsonl")]


# --- Parquet ------------------------------------------------------------------------


def test_parquet_reads_in_batches_with_options(tmp_path):
    table = pa.table({"uid": [f"id{i}" for i in range(5)], "body": [f"text {i}" for i in range(5)],
                      "score": [0.5 * i for i in range(5)]})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=2)
    docs = list(read_parquet(str(tmp_path / "a.parquet"), source="p", text_field="body", id_field="uid",
                             batch_size=2))
    assert [d.text for d in docs] == [f"text {i}" for i in range(5)]
    assert [d.id for d in docs] == [f"id{i}" for i in range(5)]
    assert docs[4].metadata == {"path": "a.parquet", "row": 4, "score": 2.0}


def test_parquet_ids_without_id_field_use_the_row_number(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "a.parquet")
    docs = list(read_parquet(str(tmp_path), source="p"))
    assert [d.id for d in docs] == [make_record_id("p", "a.parquet", 0), make_record_id("p", "a.parquet", 1)]


def test_parquet_metadata_is_json_serialisable(tmp_path):
    import datetime

    table = pa.table({"text": ["a"], "when": [datetime.date(2024, 1, 2)], "blob": [b"\x00\x01"]})
    pq.write_table(table, tmp_path / "a.parquet")
    (doc,) = read_parquet(str(tmp_path / "a.parquet"), source="p")
    assert doc.metadata["when"] == "2024-01-02" and doc.metadata["blob"] == "AAE="
    json.dumps(doc.to_dict())


def test_to_jsonable_nested():
    assert to_jsonable({"a": [1, (2, b"\xff")], 3: None}) == {"a": [1, [2, "/w=="]], "3": None}


# --- save_to_disk datasets ----------------------------------------------------------


def save_to_disk_layout(folder, columns, n_files=1):
    """Write what datasets.Dataset.save_to_disk writes: Arrow IPC stream files + state.json."""
    folder.mkdir(parents=True)
    table = pa.table(columns)
    names = []
    per_file = -(-table.num_rows // n_files)
    for i in range(n_files):
        name = f"data-{i:05d}-of-{n_files:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.slice(i * per_file, per_file).to_batches(max_chunksize=2):
                writer.write_batch(batch)
        names.append(name)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                   "_split": None}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))


def test_hf_disk_dataset_reads_every_arrow_file_in_state_order(tmp_path):
    save_to_disk_layout(tmp_path / "ds", {"text": [f"t{i}" for i in range(5)], "n": list(range(5))}, n_files=2)
    docs = list(read_hf_disk(str(tmp_path / "ds"), source="hf"))
    assert [d.text for d in docs] == [f"t{i}" for i in range(5)]
    assert docs[3].metadata == {"path": "data-00001-of-00002.arrow", "row": 0, "n": 3}
    assert len({d.id for d in docs}) == 5


def test_hf_disk_dataset_dict_reads_splits(tmp_path):
    save_to_disk_layout(tmp_path / "dd" / "train", {"content": ["a", "b"]})
    save_to_disk_layout(tmp_path / "dd" / "test", {"content": ["c"]})
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    docs = list(read_hf_disk(str(tmp_path / "dd"), source="hf", text_field="content"))
    assert [(d.text, d.metadata["split"]) for d in docs] == [("a", "train"), ("b", "train"), ("c", "test")]
    only = list(read_hf_disk(str(tmp_path / "dd"), source="hf", text_field="content", split="test"))
    assert [d.text for d in only] == ["c"]
    with pytest.raises(SourceError, match="split 'valid' not found"):
        list(read_hf_disk(str(tmp_path / "dd"), source="hf", split="valid"))


def test_hf_disk_wrong_layout_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no data-"):
        list(read_hf_disk(str(tmp_path / "empty"), source="hf"))
    save_to_disk_layout(tmp_path / "ds", {"body": ["x"]})
    with pytest.raises(SourceError, match=r"data-00000-of-00001\.arrow.*'text' not found.*\['body'\]"):
        list(read_hf_disk(str(tmp_path / "ds"), source="hf"))


def test_hf_disk_file_that_is_not_arrow_is_an_error(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "data-00000-of-00001.arrow").write_bytes(b"garbage")
    with pytest.raises(SourceError, match=r"data-00000-of-00001\.arrow: not a readable Arrow stream"):
        list(read_hf_disk(str(tmp_path / "ds"), source="hf"))
