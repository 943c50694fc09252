"""Tests for lmforge.data.sft_formats: Alpaca / ShareGPT / OpenAI records -> one conversation schema."""

from __future__ import annotations

import gzip
import json

import pytest

from lmforge.data.readers import SourceError
from lmforge.data.sft_formats import REASONS, ReadStats, read_conversations, to_conversation


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return path


def read_all(path, fmt="auto", **kwargs):
    stats, quarantine = ReadStats(), []
    convs = list(read_conversations(str(path), fmt, source="src", stats=stats, quarantine=quarantine, **kwargs))
    return convs, quarantine, stats


def roles(conv):
    return [m["role"] for m in conv["messages"]]


def test_alpaca_single_turn_with_input_system_and_history():
    plain = to_conversation({"instruction": "Reverse a list.", "input": "", "output": "xs[::-1]"}, "alpaca",
                            source="a", location="f:1")
    assert plain["messages"] == [{"role": "user", "content": "Reverse a list."},
                                 {"role": "assistant", "content": "xs[::-1]"}]
    assert plain["source"] == "a" and plain["metadata"]["format"] == "alpaca" and plain["metadata"]["location"] == "f:1"

    full = to_conversation({"id": 7, "system": "Be brief.", "instruction": "Translate.", "input": "bonjour",
                            "output": "hello", "history": [["Hi", "Hello!"]], "lang": "fr"}, "alpaca",
                           source="a", location="f:2")
    assert roles(full) == ["system", "user", "assistant", "user", "assistant"]
    assert full["messages"][3]["content"] == "Translate.\n\nbonjour"
    assert full["id"] == "a-7" and full["metadata"]["lang"] == "fr"


def test_sharegpt_multi_turn_maps_roles():
    record = {"system": "sys", "conversations": [
        {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "user", "value": "q2"}, {"from": "assistant", "value": "a2"}]}
    conv = to_conversation(record, "sharegpt", source="s", location="f:1")
    assert conv["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
                                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
                                {"role": "assistant", "content": "a2"}]


def test_openai_messages_with_system_and_text_parts():
    record = {"messages": [{"role": "system", "content": "You help."},
                           {"role": "user", "content": [{"type": "text", "text": "Hello "},
                                                        {"type": "text", "text": "there"}]},
                           {"role": "assistant", "content": "Hi."}]}
    conv = to_conversation(record, "openai", source="o", location="f:1")
    assert roles(conv) == ["system", "user", "assistant"]
    assert conv["messages"][1]["content"] == "Hello there"
    assert to_conversation(record, "openai", source="o", location="f:1")["id"] == conv["id"]


MALFORMED = [  # (record or raw line, reason)
    ("{not json", "malformed_json"),
    ("[1, 2]", "not_an_object"),
    ({"text": "no known fields"}, "unknown_format"),
    ({"instruction": "x", "output": 3}, "bad_type"),
    ({"messages": [{"role": "user"}]}, "missing_field"),
    ({"messages": [{"role": "tool", "content": "42"}]}, "unsupported_role"),
    ({"conversations": [{"from": "observation", "value": "x"}]}, "unsupported_role"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}, "empty_message"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a"}]}, "bad_turn_order"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "bad_turn_order"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}, "no_assistant_turn"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "q2"}]}, "ends_with_user"),
    ({"conversations": "q"}, "bad_type"),
]


def test_malformed_records_are_quarantined_with_reason_and_file_line(tmp_path):
    good = {"instruction": "Say hi.", "output": "hi"}
    path = write_jsonl(tmp_path / "mixed.jsonl", [good, *(r for r, _ in MALFORMED), "", good])

    convs, quarantine, stats = read_all(path)

    assert len(convs) == 2 and [c["metadata"]["location"] for c in convs] == ["mixed.jsonl:1", "mixed.jsonl:16"]
    assert [q["reason"] for q in quarantine] == [reason for _, reason in MALFORMED]
    assert [q["location"] for q in quarantine] == [f"mixed.jsonl:{i}" for i in range(2, 2 + len(MALFORMED))]
    assert all(q["reason"] in REASONS and q["detail"] and q["source"] == "src" for q in quarantine)
    assert quarantine[0]["record"] == "{not json"
    assert stats.read == 2 + len(MALFORMED) == stats.valid + sum(stats.quarantined.values())  # blank line skipped
    assert stats.quarantined["unsupported_role"] == 2


def test_a_fixed_format_rejects_records_of_another(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": "a"}]}])
    convs, quarantine, _ = read_all(path, "alpaca")
    assert convs == [] and quarantine[0]["reason"] == "missing_field"
    assert "instruction" in quarantine[0]["detail"]


def test_json_array_gz_and_parquet_files_in_a_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "data"
    folder.mkdir()
    array = [{"instruction": "one", "output": "1"}, {"instruction": "two"}, {"instruction": "three", "output": "3"}]
    (folder / "a.json").write_text(json.dumps(array, indent=2), encoding="utf-8")
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]})
                 + "\n")
    pq.write_table(pa.Table.from_pylist([
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "category": "x"},
        {"messages": [{"role": "user", "content": "q"}], "category": "y"},
    ]), folder / "c.parquet")

    convs, quarantine, stats = read_all(folder, category_field="category")

    assert [c["metadata"]["location"] for c in convs] == ["a.json:2", "a.json:9", "b.jsonl.gz:1", "c.parquet:row 1"]
    assert [c["messages"][-1]["content"] for c in convs] == ["1", "3", "你好！", "a"]
    assert [(q["location"], q["reason"]) for q in quarantine] == [("a.json:6", "missing_field"),
                                                                 ("c.parquet:row 2", "no_assistant_turn")]
    assert convs[-1]["category"] == "x" and convs[0]["category"] == "(none)"
    assert stats.as_dict()["formats"] == {"alpaca": 2, "openai": 1, "sharegpt": 1}


def test_bom_blank_lines_and_invalid_utf8_in_json_lines(tmp_path):
    path = tmp_path / "odd.jsonl"
    good = json.dumps({"instruction": "hé", "output": "ok"}).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n\n" + good.replace(b"ok", b"o\xffk") + b"\n")

    convs, quarantine, stats = read_all(path)

    assert [c["metadata"]["location"] for c in convs] == ["odd.jsonl:1", "odd.jsonl:3"]
    assert convs[1]["messages"][1]["content"] == "o\ufffdk" and quarantine == [] and stats.read == 2


def test_file_level_faults_raise_naming_the_file(tmp_path):
    (tmp_path / "broken.json").write_text('[{"instruction": "a", "output": "b"},\n {"oops": }]', encoding="utf-8")
    with pytest.raises(SourceError, match=r"broken.json:2: not valid JSON"):
        read_all(tmp_path / "broken.json")
    (tmp_path / "array_first.jsonl").write_text('[1, 2]\n{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"array_first.jsonl:1: text after the closing"):
        read_all(tmp_path / "array_first.jsonl")
    with pytest.raises(SourceError, match="does not exist"):
        read_all(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="format must be one of"):
        read_all(tmp_path / "broken.json", "vicuna")
