"""Tests of the hash-based train/validation split."""

import pytest

from lmforge.data.documents import Document
from lmforge.data.splits import assign_split, hash_unit_interval, split_documents


def docs(n: int) -> list[Document]:
    return [Document(id=f"doc-{i}", text="t", source="s") for i in range(n)]


def test_assign_split_is_deterministic_and_seeded():
    ids = [f"doc-{i}" for i in range(200)]
    first = [assign_split(i, 0.2, seed=1) for i in ids]
    assert first == [assign_split(i, 0.2, seed=1) for i in ids]
    assert first != [assign_split(i, 0.2, seed=2) for i in ids]
    assert set(first) == {"train", "validation"}
    assert 20 <= first.count("validation") <= 60  # ~40 expected


def test_split_does_not_depend_on_order():
    forward = split_documents(docs(50), 0.3, seed=0)
    backward = split_documents(list(reversed(docs(50))), 0.3, seed=0)
    assert {d.id for d in forward["validation"]} == {d.id for d in backward["validation"]}


def test_split_matches_assign_split_when_both_sides_are_filled():
    result = split_documents(docs(100), 0.25, seed=3)
    for name in ("train", "validation"):
        assert all(assign_split(d.id, 0.25, seed=3) == name for d in result[name])
    assert len(result["train"]) + len(result["validation"]) == 100


def test_validation_is_never_empty_with_two_or_more_docs():
    two = docs(2)
    # A fraction so small that no hash falls below it.
    result = split_documents(two, 1e-12, seed=0)
    assert all(assign_split(d.id, 1e-12, seed=0) == "train" for d in two)
    smallest = min(two, key=lambda d: hash_unit_interval(d.id, 0))
    assert [d.id for d in result["validation"]] == [smallest.id]
    assert len(result["train"]) == 1


def test_train_is_never_empty_either():
    result = split_documents(docs(2), 0.999999999, seed=0)
    assert len(result["train"]) == 1 and len(result["validation"]) == 1


def test_zero_fraction_and_single_doc():
    assert split_documents(docs(3), 0.0, seed=0)["validation"] == []
    assert len(split_documents(docs(1), 1e-12, seed=0)["train"]) == 1


def test_bad_fraction_raises():
    with pytest.raises(ValueError, match="validation_fraction"):
        assign_split("a", 1.0, seed=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        split_documents(docs(2), -0.1, seed=0)
