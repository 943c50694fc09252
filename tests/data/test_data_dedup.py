"""Tests of exact deduplication."""

from lmforge.data.dedup import exact_dedup, fingerprint_text
from lmforge.data.documents import Document


def doc(doc_id: str, text: str) -> Document:
    return Document(id=doc_id, text=text, source="test")


def test_exact_dedup_keeps_first_and_names_the_kept_id():
    docs = [
        doc("a", "x = 1\n"),
        doc("b", "y = 2\n"),
        doc("c", "x = 1\n"),
        doc("d", "x  =  1\n\n"),  # formatting-only copy of a
        doc("e", "y = 2\n"),
        doc("f", "z = 3\n"),
    ]
    result = exact_dedup(docs)
    assert [d.id for d in result.kept] == ["a", "b", "f"]
    assert result.removed == [
        {"id": "c", "kept_id": "a", "similarity": 1.0, "reason": "exact_duplicate"},
        {"id": "d", "kept_id": "a", "similarity": 1.0, "reason": "exact_duplicate"},
        {"id": "e", "kept_id": "b", "similarity": 1.0, "reason": "exact_duplicate"},
    ]


def test_no_duplicates_removes_nothing():
    result = exact_dedup([doc("a", "x"), doc("b", "xy")])
    assert [d.id for d in result.kept] == ["a", "b"]
    assert result.removed == []


def test_fingerprint_ignores_whitespace_runs_only():
    assert fingerprint_text("a  b\n\tc") == fingerprint_text("a b c\n")
    assert fingerprint_text("ab c") != fingerprint_text("a b c")
