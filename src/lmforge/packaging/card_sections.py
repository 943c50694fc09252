"""Sections of the model card that render one input each: the sources table and the quality gate.

The sources table lists each pretraining source with its licence and share of the tokens, read from the
tokenizer stage's ``by_source`` metrics (`lmforge.tokenizer.metrics.summarize_token_counts`: the training
split's tokens per document ``source``, with the ``license`` its documents declare), which the packaging
stage gets from the catalog with the other stage metrics. A base model that brings its own
tokenizer has no such counts: the card then has no table. The gate section shows the decision and one row
per bound of ``gate:`` (`lmforge.packaging.gate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.packaging.gate import GateCheck


def list_training_sources(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{"source", "license", "documents", "tokens", "token_share"}]`` from ``metrics["tokenizer"]["by_source"]``,
    largest share first (empty when absent)."""
    by_source = (metrics.get("tokenizer", {}) or {}).get("by_source") or {}
    rows = [{"source": entry.get("source", key), "license": entry.get("license", "unknown"),
             "documents": entry.get("documents"), "tokens": entry.get("tokens"), "token_share": entry.get("token_share")}
            for key, entry in by_source.items() if isinstance(entry, Mapping)]
    return sorted(rows, key=lambda row: (-(row["tokens"] or 0), row["source"]))


def render_sources_table(sources: list[dict[str, Any]], format_value: Callable[[Any], str] = str) -> str:
    """A Markdown subsection: source, licence, documents, tokens (``format_value``), share of the tokens."""
    if not sources:
        return ""

    def cell(value: Any) -> str:
        return format_value(value).replace("|", "\\|").replace("\n", " ")

    def share(value: Any) -> str:
        return "n/a" if value is None else f"{100 * float(value):.1f}%"

    rows = "".join(f"| {cell(r['source'])} | {cell(r['license'])} | {cell(r['documents'])} | {cell(r['tokens'])} | "
                   f"{share(r['token_share'])} |\n" for r in sources)
    return ("\n### Sources and licences\n\nEach source of the pretraining data with its licence and its share of the "
            "training tokens.\n\n| source | licence | documents | tokens | share of tokens |\n"
            "| --- | --- | --- | --- | --- |\n" + rows)


def render_gate(checks: list[GateCheck]) -> str:
    """The gate's decision and its reasons: one row per bound (a refused model is never packaged)."""
    if not checks:
        return "No quality gate was configured (`gate:` in conf/base/parameters_evaluation.yml is empty).\n"
    verdict = "passed" if all(c.passed for c in checks) else "refused"
    rows = "".join(f"| {c.metric} | {'>=' if c.bound == 'min' else '<='} {c.limit:g} | {c.observed:.6g} | "
                   f"{'pass' if c.passed else 'FAIL'} |\n" for c in checks)
    return (f"Decision: **{verdict}**: every bound of `gate:` (conf/base/parameters_evaluation.yml) checked against "
            "the evaluation metrics before this model was packaged and registered.\n\n"
            "| metric | required | value | result |\n|---|---|---|---|\n" + rows)
