"""The static validation report (our Data Docs): words for each expectation, and an offline read in Chromium.

The browser test opens the report from disk in headless Chromium with the network off (every request
that is not a ``file://`` one is aborted and recorded) and checks what a reader sees: the list of the
raw, cleaned and final validations, and on each suite's page its expectations and results.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import CHROMIUM_ARGS, require_chromium

from lmforge.data.validation import ValidationSuiteConfig, build_data_docs, make_context, validate_documents
from lmforge.data.validation_report import describe_expectation, describe_observed

CONFIG = ValidationSuiteConfig(min_records=2, min_chars=5, max_chars=100, min_median_chars=None,
                               max_median_chars=None, min_language_share=0.5,
                               language_share_bounds=None, language_char_share_bounds=None)


def record(doc_id: str, text: str, language: str | None = "en") -> dict:
    metadata = {"path": f"{doc_id}.py"} | ({"language": language} if language else {})
    return {"id": doc_id, "text": text, "source": "test", "metadata": metadata}


GOOD = [record("a", "x = 1\n"), record("b", "y = 22\n"), record("c", "z = 333\n")]
SHORT = [*GOOD, record("tiny", "x\n")]  # one text under min_chars: the cleaned suite fails


@pytest.fixture(scope="module")
def reports():
    """raw and final pass, cleaned fails on one record (its page must say which)."""
    context = make_context()
    return [validate_documents(GOOD, CONFIG, suite="raw", context=context),
            validate_documents(SHORT, CONFIG, suite="cleaned", context=context),
            validate_documents(GOOD, CONFIG, suite="final", context=context)]


def test_expectations_and_observations_in_words():
    assert describe_expectation("expect_column_values_to_be_unique", {"column": "id"}) == "id values must be unique"
    assert describe_expectation("expect_table_row_count_to_be_between", {"min_value": 50}) == (
        "number of records must be at least 50")
    assert describe_expectation("expect_column_values_to_be_in_set", {"column": "language", "value_set": ["en"],
                                                                      "mostly": 0.6}) == (
        "language values must belong to the set en, at least 60% of the time")
    assert describe_expectation("expect_something_new", {"column": "x", "batch_id": "b"}) == (
        "expect_something_new (column='x')")
    assert describe_observed({"observed_value": 155.0}) == "observed 155"
    assert describe_observed({"element_count": 4, "unexpected_count": 1, "unexpected_percent": 25.0,
                              "partial_unexpected_list": [2],
                              "partial_unexpected_index_list": [{"id": "tiny", "path": "tiny.py"}]}) == (
        "1 of 4 records unexpected (25.00%), e.g. [2], ids ['tiny' (tiny.py)]")
    assert describe_observed({}, {"raised_exception": True, "exception_message": "boom"}) == "error: boom"
    assert describe_observed({}) == "-"  # a yes/no check (a column exists) measures nothing; its status says it


def test_report_pages_exist_for_every_suite_and_use_no_remote_asset(reports, tmp_path):
    index = build_data_docs(reports, tmp_path / "docs")
    pages = [index, *sorted((tmp_path / "docs" / "validations").rglob("*.html"))]
    assert [p.parent.name for p in pages[1:]] == ["cleaned_documents", "final_documents", "raw_documents"]
    for page in pages:
        text = page.read_text()
        assert "<script" not in text and "<img" not in text and "http" not in text, page
        for href in re.findall(r'href="([^"]+)"', text):  # every link leads to a file that exists
            assert (page.parent / href).resolve().is_file(), (page, href)
    assert (tmp_path / "docs/validations/cleaned_documents/result.json").is_file()
    build_data_docs(reports[:1], tmp_path / "docs")  # a later run lists only its own suites
    assert sorted(p.name for p in (tmp_path / "docs/validations").iterdir()) == ["raw_documents"]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium and playwright, or a skip; a failure when $CI is set (as tests/e2e/test_chain.py)."""
    return require_chromium()


def test_report_reads_offline_in_headless_chromium(chromium, reports, tmp_path):
    """The index lists the three validations and each suite's page shows its expectations and results, with
    the network off: no request leaves the machine, and none is even needed (nothing was aborted)."""
    from playwright.sync_api import expect, sync_playwright

    index = build_data_docs(reports, tmp_path / "docs")
    remote: list[str] = []  # every request that was not for a local file

    def local_only(route):
        if urlparse(route.request.url).scheme == "file":
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
            context.route("**/*", local_only)
            page = context.new_page()
            page.set_default_timeout(20_000)
            loaded: list[str] = []
            page.on("requestfinished", lambda request: loaded.append(request.url))
            page.goto(index.as_uri())

            table = page.locator("table#validations")
            expect(table.locator("tbody tr")).to_have_count(3)
            for report in reports:
                row = table.locator("tbody tr").filter(has=page.get_by_role("link", name=report.suite_name,
                                                                            exact=True))
                expect(row).to_be_visible()
                expect(row).to_contain_text("passed" if report.success else "FAILED")
            expect(page.locator("#verdict")).to_contain_text("2 of 3 suites passed")

            for report in reports:
                page.get_by_role("link", name=report.suite_name, exact=True).click()
                expect(page.get_by_role("heading", name=f"Suite {report.suite_name}", level=1)).to_be_visible()
                stats = report.statistics
                expect(page.locator("#verdict")).to_contain_text(
                    f"{stats['successful_expectations']} of {stats['evaluated_expectations']} expectations passed")
                rows = page.locator("table#expectations tbody tr")
                expect(rows).to_have_count(stats["evaluated_expectations"])
                expect(rows.filter(has_text="FAILED")).to_have_count(stats["unsuccessful_expectations"])
                if report.suite_name == "cleaned_documents":
                    failed = rows.filter(has_text="FAILED")
                    expect(failed).to_contain_text("n_chars values must be between 5 and 100")
                    expect(failed).to_contain_text("1 of 4 records unexpected")
                    expect(failed).to_contain_text("'tiny' (tiny.py)")
                else:
                    expect(rows.first).to_contain_text("passed")
                page.screenshot(path=str(tmp_path / f"{report.suite_name}.png"), full_page=True)
                page.get_by_role("link", name="all validations").click()
                expect(table).to_be_visible()
        finally:
            browser.close()

    assert remote == [], f"the report asked the network for {remote}"
    assert loaded and all(urlparse(url).scheme == "file" for url in loaded), loaded
    assert {Path(unquote(urlparse(url).path)).parent.name for url in loaded} >= {
        "cleaned_documents", "final_documents", "raw_documents"}
