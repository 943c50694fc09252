"""Sections of the model card that render one input each: the sources table, the quality gate, the
alignment and the usage snippet.

The sources table lists each pretraining source with its licence and share of the tokens, read from the
tokenizer stage's ``by_source`` metrics (`lmforge.tokenizer.metrics.summarize_token_counts`: the training
split's tokens per document ``source``, with the ``license`` its documents declare), which the packaging
stage gets from the catalog with the other stage metrics. A base model that brings its own
tokenizer has no such counts: the card then has no table. The gate section shows the decision and one row
per bound of ``gate:`` (`lmforge.packaging.gate`). The alignment section records the align run that
produced the packaged model (``summarize_alignment``: method, beta, rounds, pairs, the pairs' sha256 and
DVC md5, held-out preference accuracy, the win rate over SFT, the MLflow run id and the resolved
``params:align``), or that align was off and the SFT model is packaged.
"""

from __future__ import annotations

import json
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


ALIGN_CARD_KEYS = (("method", ("method",)), ("beta", ("beta", "loss.beta")), ("rounds", ("rounds",)),
                   ("pairs", ("pairs_trained",)),
                   ("pairs_sha256", ("pairs_sha256",)),
                   ("heldout preference accuracy", ("heldout.preference_accuracy",)),
                   ("win rate vs SFT", ("win_rate.vs_sft",)), ("steps per round", ("steps",)), ("final loss", ("final_loss",)))
"""(card row, the keys that may hold it: the align stage's metrics first, then ``params:align``); absent rows
are left out, so a metrics file with fewer keys still renders."""


def summarize_alignment(align_metrics: Mapping[str, Any] | None, align_params: Mapping[str, Any] | None, *,
                        packaged: str, run_id: str = "", pairs_md5: str = "") -> dict[str, Any]:
    """The card's alignment rows: `ALIGN_CARD_KEYS`, the run id, the pairs' DVC md5 and every ``params:align`` key
    (``align.<key>``); for an SFT package only why (``{"enabled": False, ...}``); {} without align inputs."""
    if align_metrics is None and align_params is None:
        return {}
    if packaged != "aligned":
        return {"enabled": False, "packaged model": "sft (align.enabled is false: the SFT model is packaged)"}
    from lmforge.tracking import flatten_leaves

    metrics, params = flatten_leaves(align_metrics or {}), flatten_leaves(align_params or {})
    rows: dict[str, Any] = {"enabled": True, "packaged model": "aligned"}
    for label, keys in ALIGN_CARD_KEYS:
        value = next((source[k] for source in (metrics, params) for k in keys if k in source), None)
        if value is not None:
            rows[label] = value
    rows.update({"MLflow run id": run_id, "align_pairs.dvc_md5": pairs_md5})
    rows.update({f"align.{key}": value for key, value in params.items()})
    return {k: v for k, v in rows.items() if v not in ("", None)}


def render_usage(model_name: str) -> str:
    """The card's "How to use": load the folder with transformers and chat through its template."""
    return (
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "\n"
        f"model_dir = {json.dumps(model_name)}  # path to this folder\n"
        "tokenizer = AutoTokenizer.from_pretrained(model_dir)\n"
        "model = AutoModelForCausalLM.from_pretrained(model_dir)\n"
        "\n"
        'messages = [{"role": "user", "content": "Write a function that adds two numbers."}]\n'
        "text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)\n"
        "# the chat template already adds BOS\n"
        'inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)\n'
        "output = model.generate(**inputs, max_new_tokens=64)\n"
        'completion = output[0, inputs["input_ids"].shape[1]:]\n'
        "print(tokenizer.decode(completion, skip_special_tokens=True))\n"
        "```\n"
    )
