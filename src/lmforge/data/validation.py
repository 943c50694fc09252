"""Great Expectations suites for the raw, cleaned and final documents, and their Data Docs.

Three suites, each checking what the next step relies on:

- ``raw`` (ingest output, before cleaning): the schema. Columns id/text/source/metadata exist,
  id/text/source are strings and metadata a mapping, none is null, ids are unique, and there are
  at least `min_records` records. Readers never crash on bad content (they flag it for cleaning to
  quarantine), so a raw failure is a reader or source-configuration fault.
- ``cleaned`` (what cleaning kept): content quality. Every text within [min_chars, max_chars],
  the median length within optional bounds, a share of documents >= `min_language_share` whose
  `metadata["language"]` is in `allowed_languages` (a missing language counts as not allowed), the
  share of each language group (`documents.language_group`: en, zh, ja, code) of the documents and
  of the characters within `language_share_bounds` / `language_char_share_bounds`, and
  no personal data left: `lmforge.data.pii.find_pii` finds at most `max_pii_per_document` matches
  (default 0) in any text.
- ``final`` (the published shards, after exact/near dedup and decontamination): dataset-level
  guarantees. Ids unique and not null, at least `min_records` records, and a duplicate rate of at
  most `max_duplicate_fraction` (default 0) measured on the same whitespace-collapsed content hash
  that `exact_dedup` uses, so validation checks exactly what dedup promised.

`process_corpus` cleans and dedups in one pass and writes only the final shards, so the cleaned
suite runs on those shards too: they are a subset of what cleaning kept, and every cleaned
property (length, language, PII) is per document, so it holds for the subset exactly when it held
for the documents that reached the output.

A failed suite raises `DataValidationError` whose message names the suite, each failed
expectation, the observed value against the bound and a few offending document ids, and the
Data Docs folder written for inspection.

Great Expectations costs 6-15 s to import: it is imported inside the functions, and one in-memory
(ephemeral) context serves every suite of a node (pass `context=`), so nothing is written to disk
or fetched from the network except the Data Docs folder asked for. The Data Docs are our own static
pages (`lmforge.data.validation_report`): GX's load their list of validations from a CDN.

Long because the three suites share one frame builder, one GX context and one report format; the
per-language share terms (documents and characters) belong with the cleaned suite they extend.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.dedup import fingerprint_text
from lmforge.data.documents import language_group

logger = logging.getLogger(__name__)

SUITES = ("raw", "cleaned", "final")
"""The suites, in pipeline order; suite `s` runs as the GX suite named f"{s}_documents"."""
MAX_VALUE_REPR = 80  # characters of an unexpected value shown in a failure summary
MAX_EXAMPLES = 5  # offending values / ids shown per failed expectation
MISSING_LANGUAGE = "<missing>"  # language column value of a document without metadata["language"]
TEXT_PREFIX_CHARS = 80  # characters of each text kept in the validated frame (shown in Data Docs)


@dataclass
class ValidationSuiteConfig:
    """Bounds of the raw, cleaned and final suites (`data_processing.validation`)."""

    min_records: int = 50
    """raw and final: fail when there are fewer records than this."""
    min_chars: int = 100
    """cleaned: fail when a text is shorter than this (characters): the smallest length cleaning keeps
    (cleaning.min_chars 200, min_chars_by_language zh/ja 100)."""
    max_chars: int = 200_000
    """cleaned: fail when a text is longer than this (characters)."""
    min_median_chars: int | None = 1000
    """cleaned: fail when the median text length is below this (None: no bound)."""
    max_median_chars: int | None = 100_000
    """cleaned: fail when the median text length is above this (None: no bound)."""
    allowed_languages: list[str] = field(default_factory=lambda: ["en", "zh", "ja"])
    """cleaned: ISO 639-1 codes (metadata["language"], set by cleaning) that count as in-language."""
    min_language_share: float = 0.6
    """cleaned: fail when fewer than this share of documents have an allowed language (0: no check); the
    default stdlib corpus measures 74% en, 26% "unknown" (code with too little prose to tell)."""
    language_share_bounds: dict[str, list[float]] | None = field(
        default_factory=lambda: {group: [0.05, 0.6] for group in ("en", "zh", "ja", "code")})
    """cleaned: language group (`documents.language_group`: en, zh, ja, code...) -> [min, max] share of the
    documents (the default corpus measures en .15, zh .37, ja .34, code .14); null or {} checks nothing (a
    corpus of code alone has no en/zh/ja to bound: conf/stdlib sets null)."""
    language_char_share_bounds: dict[str, list[float]] | None = field(
        default_factory=lambda: {group: [0.03, 0.7] for group in ("en", "zh", "ja", "code")})
    """cleaned: language group -> [min, max] share of the characters of all texts (measured: en .38, zh .10,
    ja .13, code .37); null or {} checks nothing."""
    max_pii_per_document: int = 0
    """cleaned: fail when `find_pii` finds more than this many matches in any text (PII left after redaction)."""
    max_duplicate_fraction: float = 0.0
    """final: fail when more than this share of records repeat an earlier text (whitespace-insensitive)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_duplicate_fraction <= 1.0:
            raise ValueError(f"max_duplicate_fraction must be in [0, 1], got {self.max_duplicate_fraction}")
        if not 0.0 <= self.min_language_share <= 1.0:
            raise ValueError(f"min_language_share must be in [0, 1], got {self.min_language_share}")
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} > max_chars {self.max_chars}")
        for name in ("language_share_bounds", "language_char_share_bounds"):
            bounds = {str(group): [float(v) for v in pair] for group, pair in (getattr(self, name) or {}).items()}
            for group, pair in bounds.items():
                if len(pair) != 2 or not 0.0 <= pair[0] <= pair[1] <= 1.0:
                    raise ValueError(f"validation.{name}.{group} must be [min, max] with 0 <= min <= max <= 1, "
                                     f"got {pair}")
            setattr(self, name, bounds)


@dataclass
class ValidationReport:
    """Outcome of `validate_documents` for one suite."""

    suite_name: str
    """Name of the GX suite that was run ("raw_documents", ...)."""
    success: bool
    """Whether every expectation passed."""
    statistics: dict
    """{"evaluated_expectations", "successful_expectations", "unsuccessful_expectations", ...}."""
    failures: list[str]
    """One readable line per failed expectation (type, column, observed value, bound, offending ids)."""
    result: Any = field(default=None, repr=False, compare=False)
    """The Great Expectations ExpectationSuiteValidationResult, for `build_data_docs`."""

    def raise_for_failure(self, data_docs: str | Path | None = None) -> None:
        """Raise DataValidationError when the suite failed."""
        raise_for_failures([self], data_docs)

    def to_dict(self) -> dict:
        """Return the report as plain values (for a metrics/JSON dataset)."""
        return {
            "suite_name": self.suite_name,
            "success": self.success,
            "statistics": {k: v for k, v in self.statistics.items() if isinstance(v, int | float)},
            "failures": list(self.failures),
        }


class DataValidationError(Exception):
    """Raised when one or more suites failed; the message lists each failed expectation per suite."""

    def __init__(self, reports: Sequence[ValidationReport], data_docs: str | Path | None = None) -> None:
        self.reports = list(reports)
        self.suite_names = [r.suite_name for r in self.reports]
        self.failures = [f for r in self.reports for f in r.failures]
        lines = []
        for report in self.reports:
            stats = report.statistics
            lines.append(
                f"Data validation suite {report.suite_name!r} failed {len(report.failures)} of "
                f"{stats.get('evaluated_expectations', '?')} expectation(s):"
            )
            lines += [f"  - {failure}" for failure in report.failures]
        if data_docs:
            lines.append(f"Data Docs of the failed run: {data_docs}")
        lines.append("Fix the data or the sources, or relax data_processing.validation in "
                     "conf/base/parameters_data_processing.yml if the bound is wrong.")
        super().__init__("\n".join(lines))


def raise_for_failures(reports: Sequence[ValidationReport], data_docs: str | Path | None = None) -> None:
    """Raise one DataValidationError naming every failed suite; do nothing when all passed."""
    failed = [report for report in reports if not report.success]
    if failed:
        raise DataValidationError(failed, data_docs)


def _row(record: Any, suites: Sequence[str]) -> dict:
    """The facts of one record that `suites` check; texts are cut to a short prefix to bound memory."""
    if not isinstance(record, dict):
        return {"record": _shorten(record)}
    row = {k: v for k, v in record.items() if k not in ("text", "metadata")}
    text = record.get("text")
    if "text" in record:
        row["text"] = text[:TEXT_PREFIX_CHARS] if isinstance(text, str) else text
    metadata = record.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("path"), str):
        row["path"] = metadata["path"]  # named next to the id of an offending record
    if "raw" in suites and "metadata" in record:
        row["metadata"] = {} if isinstance(metadata, dict) else metadata  # the type is what is checked
    if "cleaned" in suites and "text" in record:
        from lmforge.data.pii import find_pii

        row["n_chars"] = len(text) if isinstance(text, str) else None
        row["pii_found"] = sum(find_pii(text).values()) if isinstance(text, str) else 0
        row["language"] = (metadata.get("language") if isinstance(metadata, dict) else None) or MISSING_LANGUAGE
        row["language_group"] = language_group(metadata) if isinstance(metadata, dict) else "unknown"
    if "final" in suites and "text" in record:
        row["text_hash"] = fingerprint_text(text) if isinstance(text, str) else None
    return row


def build_frame(records: Iterable[dict], suite: str | Sequence[str]) -> Any:
    """Return a pandas DataFrame of what `suite` (one name or several) checks.

    Columns: the record's own (texts cut to a prefix, metadata only as its type, metadata.path as
    "path"), plus n_chars/pii_found/language (cleaned) or text_hash (final), computed from the full text.

    records may be a stream (e.g. `iter_records` over shards): memory grows with the number of
    records, not with the size of their texts.
    """
    import pandas as pd

    suites = [suite] if isinstance(suite, str) else list(suite)
    for name in suites:
        if name not in SUITES:
            raise ValueError(f"unknown validation suite {name!r}; expected one of {', '.join(SUITES)}")
    rows = [_row(record, suites) for record in records]
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    if "cleaned" in suites and "language_group" in frame.columns:
        add_char_share_terms(frame)
    return frame


CHAR_SHARE_PREFIX = "char_share_term__"


def add_char_share_terms(frame: Any, groups: Iterable[str] = ()) -> None:
    """Add a column CHAR_SHARE_PREFIX + group per group whose MEAN is the group's share of all characters.

    The term of a document is n_chars * N / total_chars when it is in the group, else 0: GX's column
    mean then measures the character share (GX weighs every row alike). groups: also add these
    (all zeros when absent from the frame), so a configured group with no document is checked too.
    """
    n_chars = frame["n_chars"].fillna(0)
    total = float(n_chars.sum()) or 1.0
    for group in {*frame["language_group"].unique(), *groups}:
        column = CHAR_SHARE_PREFIX + str(group)
        if column not in frame.columns:
            frame[column] = n_chars.where(frame["language_group"] == group, 0) * (len(frame) / total)


def build_expectations(config: ValidationSuiteConfig, suite: str) -> list[Any]:
    """Return the GX expectations of one suite ("raw", "cleaned" or "final") for config."""
    import great_expectations.expectations as gxe

    if suite == "raw":
        expectations: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in ("id", "text", "source", "metadata")]
        for column, type_ in (("id", "str"), ("text", "str"), ("source", "str"), ("metadata", "dict")):
            expectations += [
                gxe.ExpectColumnValuesToNotBeNull(column=column),
                gxe.ExpectColumnValuesToBeOfType(column=column, type_=type_),
            ]
        return expectations + [
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectTableRowCountToBeBetween(min_value=config.min_records),
        ]
    if suite == "cleaned":
        expectations = [
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValuesToBeBetween(column="n_chars", min_value=config.min_chars, max_value=config.max_chars),
            gxe.ExpectColumnValuesToBeBetween(column="pii_found", max_value=config.max_pii_per_document),
        ]
        if config.min_median_chars is not None or config.max_median_chars is not None:
            expectations.append(gxe.ExpectColumnMedianToBeBetween(
                column="n_chars", min_value=config.min_median_chars, max_value=config.max_median_chars))
        if config.min_language_share > 0:
            expectations.append(gxe.ExpectColumnValuesToBeInSet(
                column="language", value_set=list(config.allowed_languages), mostly=config.min_language_share))
        # Share of documents of a group: in the group for at least `min` of the rows (mostly), and
        # outside it for at least 1 - `max`.
        for group, (low, high) in sorted(config.language_share_bounds.items()):
            if low > 0:
                expectations.append(gxe.ExpectColumnValuesToBeInSet(column="language_group", value_set=[group],
                                                                    mostly=low))
            if high < 1:
                expectations.append(gxe.ExpectColumnValuesToNotBeInSet(column="language_group", value_set=[group],
                                                                        mostly=round(1.0 - high, 12)))
        for group, (low, high) in sorted(config.language_char_share_bounds.items()):
            expectations.append(gxe.ExpectColumnMeanToBeBetween(column=CHAR_SHARE_PREFIX + group, min_value=low,
                                                                max_value=high))
        return expectations
    if suite == "final":
        return [
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectTableRowCountToBeBetween(min_value=config.min_records),
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column="text_hash", min_value=1.0 - config.max_duplicate_fraction),
        ]
    raise ValueError(f"unknown validation suite {suite!r}; expected one of {', '.join(SUITES)}")


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_REPR else text[: MAX_VALUE_REPR - 3] + "..."


def describe_failure(expectation_result: Any) -> str:
    """Return one readable line for a failed GX expectation result: observed vs bound, offending ids."""
    config = expectation_result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "column")}
    where = f" column={config.kwargs['column']!r}" if "column" in config.kwargs else ""
    bound = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "(none)"
    result = expectation_result.result or {}
    exception = expectation_result.exception_info or {}
    if exception.get("raised_exception"):
        observed = f"error: {exception.get('exception_message')}"
    elif "observed_value" in result:
        value = result["observed_value"]
        value = value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value  # numpy scalar
        observed = f"observed_value={value!r}"
    elif "unexpected_count" in result:
        examples = ", ".join(_shorten(v) for v in result.get("partial_unexpected_list", [])[:MAX_EXAMPLES])
        observed = (
            f"unexpected {result['unexpected_count']} of {result.get('element_count')} "
            f"({result.get('unexpected_percent', 0.0):.2f}%), e.g. [{examples}]"
        )
        rows = [row for row in result.get("partial_unexpected_index_list") or [] if isinstance(row, dict)]
        if rows:
            ids = [_shorten(row.get("id")) + (f" ({row['path']})" if isinstance(row.get("path"), str) else "")
                   for row in rows]
            observed += f", ids [{', '.join(ids[:MAX_EXAMPLES])}]"
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


def _datasource(context: Any) -> Any:
    try:
        return context.data_sources.get("documents")
    except (KeyError, ValueError, LookupError):
        return context.data_sources.add_pandas("documents")


def validate_documents(
    records: Iterable[dict], config: ValidationSuiteConfig, *, suite: str, context: Any = None
) -> ValidationReport:
    """Run one suite ("raw", "cleaned" or "final") over document records (dicts) and return its report."""
    return validate_frame(build_frame(records, suite), config, suite=suite, context=context)


def validate_frame(frame: Any, config: ValidationSuiteConfig, *, suite: str, context: Any = None) -> ValidationReport:
    """Run one suite over a frame made by `build_frame` (with that suite's columns) and return its report."""
    import great_expectations as gx

    context = context if context is not None else make_context()
    if suite == "cleaned" and config.language_char_share_bounds and "n_chars" in frame.columns:
        add_char_share_terms(frame, config.language_char_share_bounds)
    suite_name = f"{suite}_documents"
    n_records = len(frame)
    expectations = build_expectations(config, suite)
    datasource = _datasource(context)
    asset = datasource.add_dataframe_asset(f"{suite_name}_{len(datasource.assets)}")  # unique in a shared context
    batch = asset.add_batch_definition_whole_dataframe("all_records").get_batch(batch_parameters={"dataframe": frame})
    expectation_suite = gx.ExpectationSuite(name=suite_name)
    for expectation in expectations:
        expectation_suite.add_expectation(expectation)
    index_columns = [c for c in ("id", "path") if c in frame.columns]
    result = batch.validate(
        expectation_suite, result_format={"result_format": "SUMMARY", "unexpected_index_column_names": index_columns}
    )
    failures = [describe_failure(r) for r in result.results if not r.success]
    statistics = dict(result.statistics)
    logger.info(
        "Validation suite %r on %d records: %s (%d/%d expectations passed)",
        suite_name,
        n_records,
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


def validate_suites(
    records: Iterable[dict],
    config: ValidationSuiteConfig,
    suites: Sequence[str],
    *,
    data_docs_dir: str | Path | None = None,
    earlier: Sequence[ValidationReport] = (),
) -> list[ValidationReport]:
    """Run suites over records with one GX context; write Data Docs; raise if any suite failed.

    Data Docs (of `earlier` reports, e.g. the raw suite of a previous node, plus these) go to
    data_docs_dir when one is given, before raising, so a failed run can be inspected there.
    records is read once (it may be a stream). Returns the reports of `suites` in order.
    """
    context = make_context()
    frame = build_frame(records, suites)
    reports = [validate_frame(frame, config, suite=suite, context=context) for suite in suites]
    index = build_data_docs([*earlier, *reports], data_docs_dir) if data_docs_dir else None
    raise_for_failures([*earlier, *reports], index)
    return reports


def build_data_docs(results: ValidationReport | Sequence[ValidationReport], out_dir: str | Path) -> Path:
    """Write the Data Docs of validation reports into out_dir and return the path of index.html.

    A static report (`lmforge.data.validation_report`) with every asset local, not GX's SiteBuilder
    site, whose index lists the validations with JavaScript from a CDN and is empty offline.
    """
    from lmforge.data.validation_report import write_validation_report

    reports = [results] if isinstance(results, ValidationReport) else list(results)
    return write_validation_report(reports, out_dir)
