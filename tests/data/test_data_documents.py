"""Tests of the Document record type and its dict form."""

import pytest

from lmforge.data.documents import Document


def test_round_trip_through_dict():
    doc = Document(id="a1", text="x = 1\n", source="s", metadata={"path": "a.py"})
    d = doc.to_dict()
    assert d == {"id": "a1", "text": "x = 1\n", "source": "s", "metadata": {"path": "a.py"}}
    assert Document.from_dict(d) == doc


def test_metadata_defaults_to_empty_dict():
    assert Document.from_dict({"id": "a", "text": "t", "source": "s"}).metadata == {}


def test_from_dict_names_the_missing_field():
    with pytest.raises(ValueError, match="missing field.*text"):
        Document.from_dict({"id": "a", "source": "s"})


def test_from_dict_rejects_wrong_types():
    with pytest.raises(TypeError, match="'text' must be a str"):
        Document.from_dict({"id": "a", "text": 3, "source": "s"})
    with pytest.raises(TypeError, match="must be a mapping"):
        Document.from_dict(["a", "b"])
