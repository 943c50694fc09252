"""Tests of the Great Expectations validation suite (imports GX: ~5 s once per session)."""

import pytest

from lmforge.data.validation import (
    DataValidationError,
    ValidationSuiteConfig,
    build_data_docs,
    validate_documents,
)

SUITE = ValidationSuiteConfig(min_records=2, min_chars=5, max_chars=100)


def record(doc_id: str, text: str) -> dict:
    return {"id": doc_id, "text": text, "source": "test", "metadata": {"path": "x.py"}}


GOOD = [record("a", "x = 1\n"), record("b", "y = 22\n"), record("c", "z = 333\n")]


@pytest.fixture(scope="module")
def passing_report():
    return validate_documents(GOOD, SUITE, suite_name="clean_documents")


def test_passing_records(passing_report):
    assert passing_report.success
    assert passing_report.failures == []
    stats = passing_report.statistics
    assert stats["evaluated_expectations"] == stats["successful_expectations"] == 10
    assert stats["unsuccessful_expectations"] == 0
    passing_report.raise_for_failure()  # does not raise


def test_duplicate_ids_fail_with_a_readable_message():
    records = [*GOOD, record("a", "w = 4444\n")]
    report = validate_documents(records, SUITE, suite_name="clean_documents")
    assert not report.success
    assert report.statistics["unsuccessful_expectations"] == 1
    with pytest.raises(DataValidationError) as raised:
        report.raise_for_failure()
    message = str(raised.value)
    assert "suite 'clean_documents' failed 1 expectation(s)" in message
    assert "expect_column_values_to_be_unique column='id'" in message
    assert "unexpected 2 of 4" in message


def test_each_bound_is_reported():
    records = [{"id": "a", "text": "x"}, {"id": "b", "text": "x"}, {"id": None, "text": "abcdef"}]
    report = validate_documents(records, SUITE, suite_name="bad")
    failed = "\n".join(report.failures)
    assert "expect_column_to_exist column='source'" in failed
    assert "expect_column_values_to_not_be_null column='source': error:" in failed
    assert "expect_column_values_to_not_be_null column='id': unexpected 1 of 3" in failed
    assert "expect_column_values_to_be_between column='n_chars'" in failed
    assert "min_value=5" in failed and "max_value=100" in failed
    assert (
        "expect_column_proportion_of_unique_values_to_be_between column='text_hash': "
        "observed_value=0.6666666666666666; bound: min_value=1.0" in failed
    )
    assert report.statistics["unsuccessful_expectations"] == 5


def test_too_few_records_and_duplicate_fraction_bound():
    report = validate_documents([record("a", "x = 1\n")], ValidationSuiteConfig(min_records=5), suite_name="s")
    assert any(
        f.startswith("expect_table_row_count_to_be_between") and "observed_value=1" in f for f in report.failures
    )
    dupes = [record("a", "x = 1\n"), record("b", "x  = 1\n")]
    loose = ValidationSuiteConfig(min_records=1, min_chars=1, max_duplicate_fraction=0.5)
    assert validate_documents(dupes, loose, suite_name="s").success


def test_build_data_docs_writes_html(passing_report, tmp_path):
    index = build_data_docs(passing_report, tmp_path / "docs")
    assert index == tmp_path / "docs" / "index.html"
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "values must be unique" in page
    assert "Succeeded" in page
