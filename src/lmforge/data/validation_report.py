"""A static HTML report of the Great Expectations validation results: our Data Docs, readable offline.

Great Expectations' own Data Docs load their CSS, JavaScript and logo from public CDNs and build the
list of validations with JavaScript: without network the index shows a broken logo and a link to
``#``. This report is plain HTML with inline CSS, no script and no remote asset, so it reads the same
from a laptop offline, from an MLflow artifact or from a CI archive:

- ``index.html``: one row per suite (raw, cleaned, final) with its verdict, the expectations passed
  out of those evaluated, and a link to the suite's page;
- ``validations/<suite>/index.html``: each expectation in words (what it demands, the column, its
  bounds), whether it passed and what was observed (value, or how many records broke it and which);
- ``validations/<suite>/result.json``: the GX validation result itself, for tools.

It takes the reports duck-typed (``suite_name``, ``success``, ``statistics``, ``failures`` and the
GX ``result``, as `lmforge.data.validation.ValidationReport` holds them) and imports nothing heavy.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_SHOWN = 5  # offending values / record ids shown per expectation
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .4em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.passed { color: #176b2c; font-weight: bold; }
.failed { color: #b00020; font-weight: bold; }
tr.failed-row { background: #fdecee; }
code { font-size: 90%; }
"""

DESCRIPTIONS = {
    "expect_column_to_exist": "column {column} exists",
    "expect_column_values_to_not_be_null": "{column} values must never be null",
    "expect_column_values_to_be_of_type": "{column} values must be of type {type_}",
    "expect_column_values_to_be_unique": "{column} values must be unique",
    "expect_column_values_to_be_in_set": "{column} values must belong to the set {value_set}",
    "expect_column_values_to_be_between": "{column} values must be {range}",
    "expect_column_median_to_be_between": "median of {column} must be {range}",
    "expect_column_proportion_of_unique_values_to_be_between": "proportion of unique {column} values must be {range}",
    "expect_table_row_count_to_be_between": "number of records must be {range}",
}
"""What an expectation demands, in words, by GX expectation type; other types show their type and bounds."""


def _range(kwargs: Mapping[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"between {_number(low)} and {_number(high)}"
    if low is not None:
        return f"at least {_number(low)}"
    if high is not None:
        return f"at most {_number(high)}"
    return "any value"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_expectation(kind: str, kwargs: Mapping[str, Any]) -> str:
    """``expect_column_values_to_be_unique`` + ``{"column": "id"}`` -> "id values must be unique"."""
    template = DESCRIPTIONS.get(kind)
    if template is None:
        bounds = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "batch_id")
        return f"{kind} ({bounds})" if bounds else kind
    text = template.format(column=kwargs.get("column"), type_=kwargs.get("type_"), range=_range(kwargs),
                           value_set=", ".join(map(str, kwargs.get("value_set") or [])))
    if kwargs.get("mostly") is not None:
        text += f", at least {kwargs['mostly']:.0%} of the time"
    return text


def describe_observed(result: Mapping[str, Any] | None, exception: Mapping[str, Any] | None = None) -> str:
    """What an expectation saw: the observed value, or how many records broke it, with examples and ids."""
    result, exception = result or {}, exception or {}
    if exception.get("raised_exception"):
        return f"error: {exception.get('exception_message')}"
    if "observed_value" in result:
        value = result["observed_value"]
        value = value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value
        return f"observed {_number(value)}"
    if "unexpected_count" in result:
        count = result["unexpected_count"]
        text = (f"{count} of {result.get('element_count')} records unexpected "
                f"({result.get('unexpected_percent') or 0.0:.2f}%)")
        if count:
            examples = ", ".join(repr(v)[:80] for v in (result.get("partial_unexpected_list") or [])[:MAX_SHOWN])
            text += f", e.g. [{examples}]"
            rows = [r for r in result.get("partial_unexpected_index_list") or [] if isinstance(r, Mapping)]
            if rows:
                text += ", ids [" + ", ".join(repr(r.get("id")) + (f" ({r['path']})" if r.get("path") else "")
                                              for r in rows[:MAX_SHOWN]) + "]"
        return text
    return "-" if not result else json.dumps(result, default=str)[:200]  # e.g. a column exists: nothing measured


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _verdict(success: bool) -> str:
    return '<span class="passed">passed</span>' if success else '<span class="failed">FAILED</span>'


def suite_page(report: Any) -> str:
    """The HTML page of one suite: its verdict, then one row per expectation."""
    stats = report.statistics
    rows = []
    for number, item in enumerate(report.result.results, 1):
        config = item.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        rows.append(
            f'<tr class="{"passed-row" if item.success else "failed-row"}"><td>{number}</td>'
            f"<td>{html.escape(describe_expectation(config.type, kwargs))}<br><code>{html.escape(config.type)}"
            f"</code></td><td>{html.escape(str(kwargs.get('column', '')))}</td><td>{_verdict(item.success)}</td>"
            f"<td>{html.escape(describe_observed(item.result, item.exception_info))}</td></tr>")
    failures = "".join(f"<li>{html.escape(line)}</li>" for line in report.failures)
    body = (
        f'<p><a href="../../index.html">&larr; all validations</a></p>\n'
        f"<h1>Suite {html.escape(report.suite_name)}</h1>\n"
        f'<p id="verdict">{_verdict(report.success)}: {stats.get("successful_expectations", 0)} of '
        f'{stats.get("evaluated_expectations", 0)} expectations passed '
        f'(<a href="result.json">validation result as JSON</a>).</p>\n'
        + (f"<h2>Failed expectations</h2><ul>{failures}</ul>\n" if failures else "")
        + '<table id="expectations"><thead><tr><th>#</th><th>Expectation</th><th>Column</th><th>Status</th>'
        "<th>Observed</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>")
    return _page(f"{report.suite_name}: data validation", body)


def index_page(reports: Sequence[Any], title: str) -> str:
    """The index: one row per suite, linking to its page."""
    rows = []
    for report in reports:
        stats = report.statistics
        rows.append(
            f'<tr><td><a href="validations/{html.escape(report.suite_name)}/index.html">'
            f"{html.escape(report.suite_name)}</a></td><td>{_verdict(report.success)}</td>"
            f'<td>{stats.get("successful_expectations", 0)} / {stats.get("evaluated_expectations", 0)}</td></tr>')
    overall = all(r.success for r in reports)
    body = (f"<h1>{html.escape(title)}</h1>\n"
            f'<p id="verdict">{_verdict(overall)}: {sum(r.success for r in reports)} of {len(reports)} suites '
            "passed. Suites run in pipeline order: raw (ingest output), cleaned (what cleaning kept), final "
            "(the published shards).</p>\n"
            '<table id="validations"><thead><tr><th>Suite</th><th>Status</th><th>Expectations passed</th></tr>'
            "</thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>")
    return _page(title, body)


def write_validation_report(reports: Sequence[Any], out_dir: str | Path, *,
                            title: str = "lmforge data validation") -> Path:
    """Write ``index.html`` and one page (plus ``result.json``) per suite into ``out_dir``; return the index.

    ``validations/`` is rewritten, so the index never links to a page of an earlier run.
    """
    out_dir = Path(out_dir).resolve()
    pages = out_dir / "validations"
    shutil.rmtree(pages, ignore_errors=True)
    for report in reports:
        if report.result is None:
            raise ValueError(f"report {report.suite_name!r} carries no GX result to render")
        folder = pages / report.suite_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text(suite_page(report), encoding="utf-8")
        (folder / "result.json").write_text(json.dumps(report.result.to_json_dict(), indent=2, default=str),
                                            encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(index_page(reports, title), encoding="utf-8")
    logger.info("validation report for %d suite(s) written to %s", len(reports), index)
    return index
