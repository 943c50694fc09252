"""Bad input, end to end (ingest_sources -> process_corpus): a clear error naming the file, or a
quarantined record with a reason; never a raw traceback, never a record lost without a count."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.data.cleaning import CleaningConfig
from lmforge.data.dedup_minhash import NearDedupConfig
from lmforge.data.ingest_units import ingest_sources
from lmforge.data.process import DataProcessingConfig, process_corpus
from lmforge.data.readers import SourceError

GOOD = "def total(values):\n    s = 0\n    for v in values:\n        s += v\n    return s\n"
# Near dedup off: the inputs here are variants of GOOD (near-copies by design); this file tests bad input.
CONFIG = DataProcessingConfig(
    cleaning=CleaningConfig(min_chars=20, max_chars=10_000), near_dedup=NearDedupConfig(enabled=False)
)


def run(sources):
    """Ingest then process; return (report, quarantine by reason, kept records)."""
    result = process_corpus(ingest_sources(sources, shard_size=3), CONFIG, shard_size=10)
    report = result.report
    assert report["records_in"] == report["records_out"] + sum(report["dropped"].values())
    by_reason: dict[str, list[dict]] = {}
    for q in result.quarantine:
        by_reason.setdefault(q["reason"], []).append(q)
    assert {r: len(v) for r, v in by_reason.items()} == {r: n for r, n in report["dropped"].items() if n}
    kept = [r for shard in result.clean_shards.values() for r in shard]
    return report, by_reason, kept


def jsonl_source(path, **options):
    return {"name": "j", "format": "jsonl", "path": str(path), **options}


def test_malformed_json_lines_are_quarantined_with_file_and_line(tmp_path):
    lines = [json.dumps({"text": GOOD}), '{"text": "unterminated', "[1, 2]", json.dumps({"text": GOOD + "# b\n"})]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    report, quarantined, kept = run([jsonl_source(tmp_path / "a.jsonl")])
    assert report["records_in"] == 4 and report["records_out"] == 2
    bad = quarantined["malformed_json"]
    assert [q["metadata"]["line"] for q in bad] == [2, 3]
    assert bad[0]["metadata"]["malformed_json"].startswith("a.jsonl:2: ")
    assert bad[0]["text"] == '{"text": "unterminated'  # the raw line is kept for audit
    assert "expected a JSON object" in bad[1]["metadata"]["malformed_json"]


def test_missing_or_non_string_text_field_is_quarantined(tmp_path):
    rows = [{"content": GOOD}, {"text": None}, {"text": 42}, {"text": GOOD}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, quarantined, kept = run([jsonl_source(tmp_path / "a.jsonl")])
    assert len(kept) == 1 and report["dropped"]["missing_text"] == 3
    messages = [q["metadata"]["missing_text"] for q in quarantined["missing_text"]]
    assert messages[0] == "a.jsonl:line 1: field 'text' is missing; fields: ['content']"
    assert "is null" in messages[1] and "is a int" in messages[2]
    assert quarantined["missing_text"][0]["metadata"]["content"] == GOOD  # nothing thrown away


def test_invalid_utf8_in_jsonl_is_quarantined_with_file_and_line(tmp_path):
    good = json.dumps({"text": GOOD}).encode()
    bad = b'{"text": "caf\xe9 ' + GOOD.encode().replace(b"\n", b"\\n") + b'"}'
    (tmp_path / "a.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    report, quarantined, kept = run([jsonl_source(tmp_path / "a.jsonl")])
    assert len(kept) == 1 and report["dropped"]["encoding_error"] == 1
    (q,) = quarantined["encoding_error"]
    assert q["metadata"]["encoding_error"].startswith("a.jsonl:2: invalid continuation byte")
    assert "caf\ufffd" in q["text"]


def test_invalid_utf8_and_binary_files_in_a_code_folder_are_quarantined(tmp_path):
    (tmp_path / "ok.py").write_text(GOOD)
    (tmp_path / "latin1.py").write_bytes(b"# caf\xe9\n" + GOOD.encode())
    (tmp_path / "blob.py").write_bytes(b"\x7fELF\x00\x00\x01" + bytes(range(256)))
    report, quarantined, kept = run([{"name": "c", "root": str(tmp_path)}])
    assert [r["metadata"]["path"] for r in kept] == ["ok.py"]
    assert [q["metadata"]["path"] for q in quarantined["binary"]] == ["blob.py"]
    assert [q["metadata"]["path"] for q in quarantined["encoding_error"]] == ["latin1.py"]


def test_empty_records_are_quarantined_and_blank_lines_are_not_records(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": ""}) + "\n\n   \n" + json.dumps({"text": " \n\t\n"}) + "\n" + json.dumps({"text": GOOD}) + "\n")
    report, quarantined, kept = run([jsonl_source(tmp_path / "a.jsonl")])
    assert report["records_in"] == 3 and report["dropped"]["empty"] == 2 and len(kept) == 1
    assert [q["metadata"]["line"] for q in quarantined["empty"]] == [1, 4]


def test_a_single_50_mb_record_is_quarantined_as_too_long_quickly(tmp_path):
    huge = ("x = 1  # " + "y" * 90 + "\n") * 500_000  # 50 MB of text on 500k lines
    with open(tmp_path / "a.jsonl", "w") as f:
        f.write(json.dumps({"text": huge}) + "\n" + json.dumps({"text": GOOD}) + "\n")
    start = time.perf_counter()
    report, quarantined, kept = run([jsonl_source(tmp_path / "a.jsonl")])
    elapsed = time.perf_counter() - start
    assert report["dropped"]["too_long"] == 1 and len(kept) == 1
    assert report["bytes_in"] == len(huge) + len(GOOD)
    (q,) = quarantined["too_long"]
    assert q["metadata"]["line"] == 1 and len(q["text"]) == 50_000_000
    assert elapsed < 8, f"took {elapsed:.1f} s"


def test_mojibake_is_repaired_or_quarantined(tmp_path):
    repaired = "# café crème\n" + GOOD
    rows = [{"text": repaired.encode().decode("cp1252")},  # "cafÃ© crÃ¨me": repairable
            {"text": "# â€œbrokenâ€\ufffd and ÃƒÂ\n" + GOOD}]  # bytes lost: still garbled
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report, quarantined, kept = run([jsonl_source(tmp_path / "a.jsonl")])
    assert [r["text"] for r in kept] == [repaired]
    assert kept[0]["metadata"]["mojibake_repaired"] >= 2
    assert report["dropped"]["mojibake"] == 1 and quarantined["mojibake"][0]["metadata"]["line"] == 2


def test_parquet_with_the_wrong_schema_names_file_column_and_columns_present(tmp_path):
    pq.write_table(pa.table({"body": ["x"], "n": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(SourceError, match=r"source 'p': .*bad\.parquet: column 'text' not found; "
                                          r"columns present: \['body', 'n'\]"):
        ingest_sources([{"name": "p", "format": "parquet", "path": str(tmp_path / "bad.parquet")}], 10)


def test_parquet_text_column_of_the_wrong_type_is_an_error(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "bad.parquet")
    with pytest.raises(SourceError, match=r"bad\.parquet: text column 'text' has type int64"):
        ingest_sources([{"name": "p", "format": "parquet", "path": str(tmp_path)}], 10)


def test_a_file_that_is_not_parquet_is_an_error_naming_it(tmp_path):
    (tmp_path / "junk.parquet").write_text("not parquet at all")
    with pytest.raises(SourceError, match=r"junk\.parquet: not a readable Parquet file"):
        ingest_sources([{"name": "p", "format": "parquet", "path": str(tmp_path)}], 10)


def test_parquet_null_text_is_quarantined(tmp_path):
    pq.write_table(pa.table({"text": [GOOD, None]}), tmp_path / "a.parquet")
    report, quarantined, kept = run([{"name": "p", "format": "parquet", "path": str(tmp_path)}])
    assert len(kept) == 1 and quarantined["missing_text"][0]["metadata"]["row"] == 1


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    import gzip

    data = gzip.compress(("".join(json.dumps({"text": GOOD}) + "\n" for _ in range(200))).encode())
    (tmp_path / "a.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"a\.jsonl\.gz: unreadable after line \d+"):
        ingest_sources([jsonl_source(tmp_path / "a.jsonl.gz")], 10)
