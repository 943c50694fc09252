"""Tests for lmforge.data.instructions and lmforge.data.identity."""

from lmforge.data.documents import Document
from lmforge.data.identity import IdentityConfig, build_identity_conversations, system_prefix
from lmforge.data.instructions import InstructionConfig, build_instruction_pairs, extract_function_pairs

SOURCE = '''"""A module."""


def add(a, b):
    """Return a + b."""
    total = a + b
    return total


def no_doc(x):
    return x


class K:
    @staticmethod
    def double(x):
        """Twice x."""
        y = x * 2
        return y


def short(x):
    """Too short a body."""
    return x
'''


def test_documented_functions_become_signature_to_body_pairs():
    pairs, skipped = extract_function_pairs(Document("d1", SOURCE, "t"), InstructionConfig(min_body_lines=2))
    by_name = {p["function"]: p for p in pairs}
    assert sorted(by_name) == ["add", "double"]
    assert by_name["add"]["prompt"].endswith('def add(a, b):\n    """Return a + b."""')
    assert by_name["add"]["response"] == "total = a + b\nreturn total"
    assert by_name["double"]["prompt"].splitlines()[2] == "@staticmethod"  # decorators kept, dedented
    assert skipped == {"no_docstring_or_body": 1, "body_too_short": 1}


def test_unparsable_documents_are_counted_not_raised():
    pairs, skipped = extract_function_pairs(Document("d", "def broken(:\n", "t"), InstructionConfig())
    assert pairs == [] and skipped == {"unparsable_document": 1}


def test_pairs_are_split_by_source_document_and_capped():
    docs = [Document(f"doc-{i}", SOURCE, "t") for i in range(40)]
    splits, stats = build_instruction_pairs(docs, InstructionConfig(max_pairs=60, validation_fraction=0.25))
    assert stats["pairs"] == 60 == len(splits["train"]) + len(splits["validation"])
    train_docs = {c["source_id"] for c in splits["train"]}
    val_docs = {c["source_id"] for c in splits["validation"]}
    assert train_docs and val_docs and not train_docs & val_docs
    conv = splits["train"][0]["messages"]
    assert [m["role"] for m in conv] == ["user", "assistant"]


def test_identity_data_has_18_positive_and_10_negative_in_two_languages():
    cfg = IdentityConfig(name="Orca", developer="ACME")
    convs = build_identity_conversations(cfg)
    assert len(convs) == 28
    assert sum(c["polarity"] == "positive" for c in convs) == 18
    assert {c["language"] for c in convs} == {"en", "zh"}
    assert all("Orca" in c["messages"][-1]["content"] and "ACME" in c["messages"][-1]["content"] for c in convs)
    with_system = build_identity_conversations(cfg, with_system=True)
    assert with_system[0]["messages"][0] == {"role": "system", "content": system_prefix(cfg, "en")}
    assert system_prefix(cfg, "zh") == "你是由ACME开发的Orca，被设计来生成有用、准确的回答。"


def test_prose_documents_of_a_multilingual_corpus_are_skipped_and_pairs_are_category_code():
    docs = [Document("zh-doc", "def f():\n    '''文档。'''\n    a = 1\n    return a\n", "t",
                     metadata={"language_group": "zh"}),
            Document("code-doc", SOURCE, "t", metadata={"language_group": "code", "license": "PSF-2.0"})]
    splits, stats = build_instruction_pairs(docs, InstructionConfig(validation_fraction=0.0))
    assert stats["skipped"]["not_code"] == 1
    convs = splits["train"]
    assert convs and {c["source_id"] for c in convs} == {"code-doc"}
    assert all(c["category"] == "code" and c["metadata"] == {"language_group": "code", "license": "PSF-2.0"}
               for c in convs)
