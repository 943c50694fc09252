"""Validate document records with a Great Expectations suite, and render Data Docs.

The suite checks what later stages rely on: the columns exist, ids are unique and
not null, texts are present and within length bounds, there are enough records
and (almost) no duplicate texts. Duplicates are measured on the same whitespace-
collapsed fingerprint that `exact_dedup` uses, so validation checks exactly what
dedup promised.

Great Expectations costs ~6 s to import: it is imported inside the functions, and
each call uses an in-memory (ephemeral) context, so nothing is written to disk or
fetched from the network except the Data Docs folder asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.dedup import fingerprint_text

logger = logging.getLogger(__name__)

DATA_DOCS_SITE_NAME = "lmforge_data_docs"  # not "local_site": GX has a default site of that name
MAX_VALUE_REPR = 80  # characters of an unexpected value shown in a failure summary


@dataclass
class ValidationSuiteConfig:
    """Bounds of the data validation suite."""

    min_records: int = 1
    """Fail when there are fewer records than this."""
    min_chars: int = 200
    """Fail when a text is shorter than this (characters)."""
    max_chars: int = 200_000
    """Fail when a text is longer than this (characters)."""
    max_duplicate_fraction: float = 0.0
    """Fail when more than this share of records repeat an earlier text (whitespace-insensitive)."""
    required_columns: list[str] = field(default_factory=lambda: ["id", "text", "source"])
    """Columns every record set must have."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_duplicate_fraction <= 1.0:
            raise ValueError(f"max_duplicate_fraction must be in [0, 1], got {self.max_duplicate_fraction}")
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} > max_chars {self.max_chars}")


class DataValidationError(Exception):
    """Raised when a record set fails its validation suite; the message lists each failure."""

    def __init__(self, suite_name: str, failures: list[str]) -> None:
        self.suite_name = suite_name
        self.failures = failures
        lines = [f"Data validation suite {suite_name!r} failed {len(failures)} expectation(s):"]
        lines += [f"  - {failure}" for failure in failures]
        super().__init__("\n".join(lines))


@dataclass
class ValidationReport:
    """Outcome of `validate_documents`."""

    suite_name: str
    """Name of the suite that was run."""
    success: bool
    """Whether every expectation passed."""
    statistics: dict
    """{"evaluated_expectations", "successful_expectations", "unsuccessful_expectations", ...}."""
    failures: list[str]
    """One readable line per failed expectation (type, column, observed value, bound)."""
    result: Any = field(default=None, repr=False, compare=False)
    """The Great Expectations ExpectationSuiteValidationResult, for `build_data_docs`."""

    def raise_for_failure(self) -> None:
        """Raise DataValidationError when the suite failed."""
        if not self.success:
            raise DataValidationError(self.suite_name, self.failures)

    def to_dict(self) -> dict:
        """Return the report as plain values (for a metrics/JSON dataset)."""
        return {
            "suite_name": self.suite_name,
            "success": self.success,
            "statistics": dict(self.statistics),
            "failures": list(self.failures),
        }


def build_frame(records: list[dict]) -> Any:
    """Return a pandas DataFrame of the record columns plus computed n_chars and text_hash."""
    import pandas as pd

    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame = frame.drop(columns=["metadata"], errors="ignore")
    if "text" in frame.columns:
        texts = frame["text"].tolist()
        frame["n_chars"] = [len(t) if isinstance(t, str) else None for t in texts]
        frame["text_hash"] = [fingerprint_text(t) if isinstance(t, str) else None for t in texts]
    return frame


def build_expectations(config: ValidationSuiteConfig) -> list[Any]:
    """Return the list of GX expectations for config."""
    import great_expectations.expectations as gxe

    expectations: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in config.required_columns]
    expectations += [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValuesToNotBeNull(column="source"),
        gxe.ExpectColumnValuesToBeBetween(column="n_chars", min_value=config.min_chars, max_value=config.max_chars),
        gxe.ExpectTableRowCountToBeBetween(min_value=config.min_records),
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="text_hash", min_value=1.0 - config.max_duplicate_fraction
        ),
    ]
    return expectations


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_REPR else text[: MAX_VALUE_REPR - 3] + "..."


def describe_failure(expectation_result: Any) -> str:
    """Return one readable line for a failed GX expectation result."""
    config = expectation_result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
    where = f" column={config.kwargs['column']!r}" if "column" in config.kwargs else ""
    bound = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "(none)"
    result = expectation_result.result or {}
    exception = expectation_result.exception_info or {}
    if exception.get("raised_exception"):
        observed = f"error: {exception.get('exception_message')}"
    elif "observed_value" in result:
        observed = f"observed_value={result['observed_value']!r}"
    elif "unexpected_count" in result:
        examples = ", ".join(_shorten(v) for v in result.get("partial_unexpected_list", [])[:5])
        observed = (
            f"unexpected {result['unexpected_count']} of {result.get('element_count')} "
            f"({result.get('unexpected_percent', 0.0):.2f}%), e.g. [{examples}]"
        )
    else:
        # Exception info of metric errors is nested under one metric id.
        messages = [
            info.get("exception_message")
            for info in exception.values()
            if isinstance(info, dict) and info.get("exception_message")
        ]
        observed = f"error: {messages[0]}" if messages else "no observed value"
    return f"{config.type}{where}: {observed}; bound: {bound}"


def make_context() -> Any:
    """Return an in-memory GX context with progress bars off."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate_documents(records: list[dict], suite: ValidationSuiteConfig, *, suite_name: str) -> ValidationReport:
    """Run the validation suite over document records (dicts) and return the report."""
    import great_expectations as gx

    context = make_context()
    frame = build_frame(records)
    asset = context.data_sources.add_pandas("documents").add_dataframe_asset(suite_name)
    batch_definition = asset.add_batch_definition_whole_dataframe("all_records")
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    expectation_suite = gx.ExpectationSuite(name=suite_name)
    for expectation in build_expectations(suite):
        expectation_suite.add_expectation(expectation)
    result = batch.validate(expectation_suite, result_format="SUMMARY")
    failures = [describe_failure(r) for r in result.results if not r.success]
    statistics = dict(result.statistics)
    logger.info(
        "Validation suite %r on %d records: %s (%d/%d expectations passed)",
        suite_name,
        len(records),
        "passed" if result.success else "FAILED",
        statistics.get("successful_expectations", 0),
        statistics.get("evaluated_expectations", 0),
    )
    return ValidationReport(
        suite_name=suite_name,
        success=bool(result.success),
        statistics=statistics,
        failures=failures,
        result=result,
    )


def build_data_docs(results: ValidationReport | Sequence[ValidationReport], out_dir: str | Path) -> Path:
    """Write Great Expectations Data Docs HTML for validation reports into out_dir.

    Returns the path of index.html. The pages reference CSS/JS on public CDNs, so
    they render unstyled offline, but building them needs no network.
    """
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    reports = [results] if isinstance(results, ValidationReport) else list(results)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    context = make_context()
    context.add_data_docs_site(
        DATA_DOCS_SITE_NAME,
        {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(out_dir),
            },
        },
    )
    for report in reports:
        if report.result is None:
            raise ValueError(f"report {report.suite_name!r} carries no GX result to render")
        run_id = RunIdentifier(run_name="lmforge")
        report.result.meta["run_id"] = run_id  # shown on the page; GX leaves it empty
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=report.suite_name),
            run_id=run_id,
            batch_identifier=report.suite_name,
        )
        context.validation_results_store.store_validation_results(report.result, key)
    context.build_data_docs(site_names=[DATA_DOCS_SITE_NAME])
    index = out_dir / "index.html"
    logger.info("Data Docs for %d report(s) written to %s", len(reports), index)
    return index
