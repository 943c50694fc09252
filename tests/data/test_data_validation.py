"""Tests of the raw, cleaned and final Great Expectations suites (imports GX: 5-15 s once per session)."""

import pytest

from lmforge.data.validation import (
    DataValidationError,
    ValidationSuiteConfig,
    build_data_docs,
    make_context,
    validate_documents,
    validate_suites,
)


def suite_config(**bounds) -> ValidationSuiteConfig:
    """A suite config whose unset bounds are off (min 1 record, no median or language bound), as these
    tests were written against; the stage's own defaults are the YAML's (tests/data/test_data_stage_config.py)."""
    return ValidationSuiteConfig(**{"min_records": 1, "min_median_chars": None, "max_median_chars": None,
                                    "min_language_share": 0.0, "language_share_bounds": None,
                                    "language_char_share_bounds": None, **bounds})


CONFIG = suite_config(min_records=2, min_chars=5, max_chars=100, min_language_share=0.8)


def record(doc_id, text: str, language: str | None = "en", **extra) -> dict:
    metadata = {"path": f"{doc_id}.py"} | ({"language": language} if language else {})
    return {"id": doc_id, "text": text, "source": "test", "metadata": metadata, **extra}


GOOD = [record("a", "x = 1\n"), record("b", "y = 22\n"), record("c", "z = 333\n")]


@pytest.fixture(scope="module")
def context():
    return make_context()


@pytest.fixture(scope="module")
def passing_reports(context):
    return {suite: validate_documents(GOOD, CONFIG, suite=suite, context=context)
            for suite in ("raw", "cleaned", "final")}


def failed(records, suite, config=CONFIG, context=None):
    report = validate_documents(records, config, suite=suite, context=context)
    assert not report.success
    with pytest.raises(DataValidationError) as raised:
        report.raise_for_failure()
    return report, str(raised.value)


def test_good_corpus_passes_every_suite(passing_reports):
    expected = {"raw": 14, "cleaned": 4, "final": 4}  # expectations per suite with CONFIG
    for suite, report in passing_reports.items():
        assert report.success, report.failures
        assert report.suite_name == f"{suite}_documents"
        assert report.failures == []
        stats = report.statistics
        assert stats["evaluated_expectations"] == stats["successful_expectations"] == expected[suite]
        report.raise_for_failure()  # does not raise


def test_raw_suite_checks_schema_types_and_unique_ids(context):
    records = [*GOOD, record("a", "w = 4444\n"), {"id": "d", "text": "v = 1\n", "source": "s", "metadata": "oops"}]
    report, message = failed(records, "raw", context=context)
    assert "suite 'raw_documents' failed 2 of 14 expectation(s)" in message
    assert ("expect_column_values_to_be_unique column='id': unexpected 2 of 5 (40.00%), e.g. ['a', 'a'], "
            "ids ['a' (a.py), 'a' (a.py)]") in message
    assert "expect_column_values_to_be_of_type column='metadata': unexpected 1 of 5" in message
    assert "ids ['d']" in message and "type_='dict'" in message
    missing = [{"id": "a", "text": "x = 1\n"}, {"id": 7, "text": None, "source": "s"}]
    report, message = failed(missing, "raw", context=context)
    assert "expect_column_to_exist column='metadata'" in message
    assert "expect_column_values_to_not_be_null column='text': unexpected 1 of 2" in message
    assert "expect_column_values_to_be_of_type column='id'" in message
    assert "expect_table_row_count_to_be_between: observed_value=2" not in message  # 2 >= min_records passes


def test_cleaned_suite_checks_lengths_language_and_pii_left(context):
    records = [
        *GOOD,
        record("short", "x"),
        record("fr", "x = 'bonjour'\n", language="fr"),
        record("nolang", "y = 'hello'\n", language=None),
        record("pii", "# contact jane.doe@gmail.com\n"),
    ]
    report, message = failed(records, "cleaned", context=context)
    assert "suite 'cleaned_documents' failed 3 of 4 expectation(s)" in message
    assert "expect_column_values_to_be_between column='n_chars': unexpected 1 of 7" in message
    assert "ids ['short' (short.py)]" in message and "min_value=5.0, max_value=100.0" in message
    assert "expect_column_values_to_be_between column='pii_found': unexpected 1 of 7" in message
    assert "ids ['pii' (pii.py)]; bound: max_value=0.0" in message
    assert "expect_column_values_to_be_in_set column='language': unexpected 2 of 7" in message
    assert "ids ['fr' (fr.py), 'nolang' (nolang.py)]" in message and "mostly=0.8" in message
    # A lower bar on the language share passes the same mix.
    loose = suite_config(min_chars=1, max_chars=100, min_language_share=0.5, max_pii_per_document=1)
    assert validate_documents(records, loose, suite="cleaned", context=context).success


def test_cleaned_suite_median_length_bounds(context):
    config = suite_config(min_chars=1, min_median_chars=50)
    report, message = failed(GOOD, "cleaned", config, context)
    assert "expect_column_median_to_be_between column='n_chars': observed_value=7.0; bound: min_value=50.0" in message


def test_final_suite_checks_duplicates_count_and_ids(context):
    copies = [*GOOD, record("d", "x  =  1\n")]  # same content as "a" up to whitespace
    report, message = failed(copies, "final", context=context)
    assert ("expect_column_proportion_of_unique_values_to_be_between column='text_hash': observed_value=0.75; "
            "bound: min_value=1.0") in message
    report, message = failed([record("a", "x = 1\n")], "final", suite_config(min_records=5), context)
    assert "expect_table_row_count_to_be_between: observed_value=1; bound: min_value=5" in message
    loose = suite_config(min_records=1, max_duplicate_fraction=0.25)
    assert validate_documents(copies, loose, suite="final", context=context).success


def test_unknown_suite_and_bad_config():
    with pytest.raises(ValueError, match="unknown validation suite 'clean'"):
        validate_documents(GOOD, CONFIG, suite="clean")
    with pytest.raises(ValueError, match="min_language_share must be in"):
        ValidationSuiteConfig(min_language_share=1.5)


def test_build_data_docs_writes_html_for_every_suite(passing_reports, tmp_path):
    index = build_data_docs(list(passing_reports.values()), tmp_path / "docs")
    assert index == tmp_path / "docs" / "index.html"
    assert index.is_file()
    pages = sorted((tmp_path / "docs" / "validations").rglob("*.html"))
    assert sorted(p.relative_to(tmp_path / "docs" / "validations").parts[0] for p in pages) == [
        "cleaned_documents", "final_documents", "raw_documents"]
    assert "values must be unique" in (tmp_path / "docs" / "validations" / "raw_documents").rglob("*.html").__next__() \
        .read_text()
    assert "raw_documents" in index.read_text()


def test_validate_suites_writes_docs_then_names_every_failed_suite(passing_reports, tmp_path):
    records = [*GOOD, record("dup", "x = 1\n"), record("pii", "# mail jane.doe@gmail.com\n")]
    with pytest.raises(DataValidationError) as raised:
        validate_suites(records, CONFIG, ["cleaned", "final"], data_docs_dir=tmp_path / "docs",
                        earlier=[passing_reports["raw"]])
    error = raised.value
    assert error.suite_names == ["cleaned_documents", "final_documents"]
    message = str(error)
    assert "suite 'cleaned_documents' failed 1 of 4" in message and "ids ['pii' (pii.py)]" in message
    assert "suite 'final_documents' failed 1 of 4" in message and "text_hash" in message
    assert f"Data Docs of the failed run: {tmp_path / 'docs' / 'index.html'}" in message
    assert "raw_documents" in (tmp_path / "docs" / "index.html").read_text()
    reports = validate_suites(GOOD, CONFIG, ["cleaned", "final"])
    assert [r.success for r in reports] == [True, True]


def grouped(doc_id: str, group: str, n_chars: int) -> dict:
    return {"id": doc_id, "text": "字" * n_chars, "source": "test", "metadata": {"language_group": group}}


def test_cleaned_suite_bounds_each_language_groups_share_of_documents_and_characters(context):
    # 6 documents: en 3 (300 characters), zh 2 (600), code 1 (100): shares 0.5 / 0.33 / 0.17 of documents,
    # 0.3 / 0.6 / 0.1 of characters; ja has none.
    docs = [grouped("e1", "en", 100), grouped("e2", "en", 100), grouped("e3", "en", 100),
            grouped("z1", "zh", 300), grouped("z2", "zh", 300), grouped("c1", "code", 100)]
    ok = suite_config(min_chars=1, max_chars=1000, language_share_bounds={"en": [0.4, 0.6], "zh": [0.3, 0.4]},
                      language_char_share_bounds={"zh": [0.55, 0.65], "code": [0.05, 0.15]})
    assert validate_documents(docs, ok, suite="cleaned", context=context).success
    bad = suite_config(min_chars=1, max_chars=1000, language_share_bounds={"en": [0.0, 0.4], "ja": [0.1, 1.0]},
                       language_char_share_bounds={"zh": [0.0, 0.5]})
    report = validate_documents(docs, bad, suite="cleaned", context=context)
    assert not report.success
    failed = " | ".join(report.failures)
    assert len(report.failures) == 3, failed
    assert "expect_column_values_to_not_be_in_set column='language_group'" in failed  # en above 0.4
    assert "expect_column_values_to_be_in_set column='language_group'" in failed  # ja below 0.1
    assert "char_share_term__zh" in failed and "observed_value=0.6" in failed


def test_share_bounds_are_checked():
    with pytest.raises(ValueError, match="language_share_bounds.zh"):
        ValidationSuiteConfig(language_share_bounds={"zh": [0.5, 0.2]})
    with pytest.raises(ValueError, match="language_char_share_bounds.ja"):
        ValidationSuiteConfig(language_char_share_bounds={"ja": [0.1]})
