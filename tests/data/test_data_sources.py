"""Tests of the folder reader, glob matching and sharding."""

from pathlib import Path

import pytest
from code_folder_oracle import read_code_folder

from lmforge.data.documents import Document
from lmforge.data.sources import (
    default_stdlib_excludes,
    make_document_id,
    match_glob,
    python_stdlib_root,
    shard_documents,
)


@pytest.fixture
def code_folder(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    (tmp_path / "top.py").write_text("x = 'é'\n", encoding="utf-8")
    (tmp_path / "latin1.py").write_bytes(b"name = 'caf\xe9'\n")
    (tmp_path / "blob.py").write_bytes(b"abc\x00\x01def")
    (tmp_path / "notes.txt").write_text("not python\n")
    (tmp_path / "pkg" / "tests").mkdir()
    (tmp_path / "pkg" / "tests" / "test_bad.py").write_text("def broken(:\n")
    return tmp_path


def read(root: Path) -> list[Document]:
    return list(read_code_folder(root, source="demo", license="MIT", exclude=("**/tests/**",)))


def test_reads_matching_files_in_sorted_order_without_excluded(code_folder):
    paths = [doc.metadata["path"] for doc in read(code_folder)]
    assert paths == ["blob.py", "latin1.py", "pkg/mod.py", "top.py"]


def test_normal_file_has_text_and_metadata(code_folder):
    doc = {d.metadata["path"]: d for d in read(code_folder)}["pkg/mod.py"]
    assert doc.text == "def f():\n    return 1\n"
    assert doc.source == "demo"
    assert doc.id == make_document_id("demo", "pkg/mod.py")
    assert doc.metadata == {"path": "pkg/mod.py", "license": "MIT", "size_bytes": 22}


def test_invalid_utf8_is_flagged_not_skipped(code_folder):
    doc = {d.metadata["path"]: d for d in read(code_folder)}["latin1.py"]
    assert doc.metadata["encoding_error"] is True
    assert doc.text == "name = 'caf\ufffd'\n"


def test_binary_is_flagged_with_empty_text(code_folder):
    doc = {d.metadata["path"]: d for d in read(code_folder)}["blob.py"]
    assert doc.metadata["binary"] is True
    assert doc.text == ""
    assert doc.metadata["size_bytes"] == 8


def test_unreadable_file_is_flagged(code_folder, monkeypatch):
    # chmod 0 does not stop root, so simulate the permission error.
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        if self.name == "top.py":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    doc = {d.metadata["path"]: d for d in read(code_folder)}["top.py"]
    assert doc.metadata["read_error"] == "PermissionError: Permission denied"
    assert doc.text == ""


def test_read_error_is_flagged_for_a_dangling_symlink(code_folder):
    (code_folder / "gone.py").symlink_to(code_folder / "does_not_exist.py")
    doc = {d.metadata["path"]: d for d in read(code_folder)}["gone.py"]
    assert doc.metadata["read_error"].startswith("FileNotFoundError")


def test_ids_are_stable_across_calls(code_folder):
    assert [d.id for d in read(code_folder)] == [d.id for d in read(code_folder)]
    # sha256("demo:pkg/mod.py")[:16]: the same on every machine.
    assert make_document_id("demo", "pkg/mod.py") == "be9dd8372604f51f"


def test_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_code_folder(tmp_path / "nope", source="s", license="l"))


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("a.py", "**/*.py", True),
        ("x/y/a.py", "**/*.py", True),
        ("a.pyc", "**/*.py", False),
        ("tests/t.py", "**/tests/**", True),
        ("a/tests/t.py", "**/tests/**", True),
        ("a/tests_x/t.py", "**/tests/**", False),
        ("test/t.py", "test/**", True),
        ("a/test/t.py", "test/**", False),
        ("a.py", "?.py", True),
        ("a.py", "[!b].py", True),
    ],
)
def test_match_glob(path, pattern, expected):
    assert match_glob(path, pattern) is expected


def test_stdlib_root_and_excludes():
    root = python_stdlib_root()
    assert (root / "os.py").is_file()
    assert "test/**" in default_stdlib_excludes
    assert "**/__pycache__/**" in default_stdlib_excludes


def test_shard_documents_names_and_sizes():
    docs = [Document(id=str(i), text="t", source="s") for i in range(5)]
    shards = shard_documents(docs, shard_size=2)
    assert list(shards) == ["shard-00000", "shard-00001", "shard-00002"]
    assert [[r["id"] for r in s] for s in shards.values()] == [["0", "1"], ["2", "3"], ["4"]]
    assert shards["shard-00000"][0] == docs[0].to_dict()
    assert shard_documents([], 3) == {}
    with pytest.raises(ValueError, match="shard_size"):
        shard_documents(docs, 0)
