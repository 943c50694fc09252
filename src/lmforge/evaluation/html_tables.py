"""The evaluation report's per-model tables: a column per model (base, SFT and, when align ran, aligned).

Per language (bits per byte per group, translation chrF/BLEU per direction with every translated pair,
identity P/R/F1 in English and Chinese) and the align stage's own numbers (``align.json``: method,
rounds, pairs, held-out preference accuracy, the on-policy win rate over SFT) and the quantized packages
(``lmforge.evaluation.quantization``: size, bits per byte and its change per language against the budgets). Split out of
``lmforge.evaluation.html_report`` (which assembles the page) so that each file stays one concern;
the escaping helpers live here and the page imports them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

LABELS = {"base": "base", "sft": "SFT", "aligned": "aligned"}
"""How the report names each model prefix of ``lmforge.evaluation.report.MODEL_PREFIXES``."""

ALIGN_ROWS = (("method", "preference loss"), ("rounds", "on-policy rounds"),
              ("pairs_trained", "preference pairs trained on (every round)"),
              ("pairs_sha256", "sha256 of the pairs (data/04_feature/align_pairs.jsonl)"),
              ("heldout.preference_accuracy", "held-out preference accuracy (chosen scored above rejected)"),
              ("win_rate.vs_sft", "on-policy reward win rate of aligned over SFT, held-out prompts"),
              ("final_loss", "final training loss (last round)"), ("steps", "optimizer steps (last round)"))
"""(``align.json`` key, what it is) shown in the align section, in this order; absent keys are left out."""


def report_models(metrics: Mapping[str, float]) -> list[str]:
    """The model prefixes the metrics hold, in report order: ``["base", "sft"]`` or with ``"aligned"``."""
    return ["base", "sft"] + (["aligned"] if any(k.startswith("aligned.") for k in metrics) else [])


def model_cells(metrics: Mapping[str, float], key: str, models: Sequence[str], *, digits: str = ".4g") -> str:
    """Each model's ``<model>.<key>``, then each model minus the one before it, as table cells (dash: absent)."""
    values = [metrics.get(f"{m}.{key}") for m in models]
    cells = [f"{v:{digits}}" if v is not None else "&mdash;" for v in values]
    cells += [f"{b - a:+{digits}}" if a is not None and b is not None else "&mdash;"
              for a, b in zip(values, values[1:], strict=False)]
    return "".join(f"<td class='num'>{c}</td>" for c in cells)


def model_heads(models: Sequence[str], name: str = "") -> str:
    """Header cells matching `model_cells`: ``<name> base``, ..., then ``SFT − base``..."""
    labels = [LABELS.get(m, m) for m in models]
    heads = [f"{name} {label}".strip() for label in labels]
    heads += [f"{b} &minus; {a}" if not name else "&Delta;" if len(labels) == 2 else f"&Delta; {b} &minus; {a}"
              for a, b in zip(labels, labels[1:], strict=False)]
    return "".join(f"<th>{h}</th>" for h in heads)


def per_language_html(metrics: Mapping[str, float], translations: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Bits per byte per language group, translation chrF/BLEU per direction, the identity probe per language."""
    from lmforge.evaluation.translation import bleu_tokenize

    models = report_models(metrics)

    def keys(prefix: str, suffix: str) -> list[str]:  # the <group> of <model>.<prefix><group>.<suffix>
        return sorted({k.split(".")[-2] for k in metrics if k.startswith(tuple(f"{m}.{prefix}" for m in models))
                       and k.endswith("." + suffix) and k.count(".") == prefix.count(".") + 2})

    parts = []
    groups = keys("heldout.by_language.", "bits_per_byte")
    if groups:
        rows = "".join(f"<tr><td>{escape(g)}</td>{model_cells(metrics, f'heldout.by_language.{g}.bits_per_byte', models)}"
                       f"<td class='num'>{fmt(metrics.get(f'sft.heldout.by_language.{g}.bytes', 0.0))}</td>"
                       f"<td class='num'>{fmt(metrics.get(f'sft.heldout.by_language.{g}.documents', 0.0))}</td></tr>"
                       for g in groups)
        parts.append("<h3>Held-out bits per byte, lower is better</h3><table><tr><th>group</th>" + model_heads(models)
                     + "<th>bytes</th><th>documents</th></tr>" + rows + "</table><p><small>The "
                     "tokenizer stage's validation documents grouped by <code>language_group</code> of their metadata, "
                     "the same text for every model (<code>evaluation.by_language</code>); bits per byte does not depend "
                     "on the tokenizer.</small></p>")
    else:
        parts.append("<p>No per-language held-out scores (evaluation.by_language off, or no validation document of "
                     "the groups asked for).</p>")
    directions = keys("translation.", "chrf")
    if directions:
        rows = "".join(f"<tr><td>{' &rarr; '.join(escape(x) for x in d.split('_', 1))}</td>"
                       f"{model_cells(metrics, f'translation.{d}.chrf', models, digits='.1f')}"
                       f"{model_cells(metrics, f'translation.{d}.bleu', models, digits='.1f')}"
                       f"<td class='num'>{fmt(metrics.get(f'sft.translation.{d}.pairs', 0.0))}</td>"
                       f"<td>{escape(bleu_tokenize(d.split('_', 1)[1]))}</td></tr>" for d in directions)
        parts.append("<h3>Translation (held-out pairs), higher is better</h3><table><tr><th>direction</th>"
                     + model_heads(models, "chrF") + model_heads(models, "BLEU")
                     + "<th>pairs</th><th>BLEU tokenizer</th></tr>" + rows + "</table>"
                     "<p><small>sacrebleu, corpus level, greedy translations through the chat template "
                     "(<code>evaluation.translation</code>). Japanese BLEU counts characters (<code>char</code>): "
                     "compare it only with itself.</small></p>")
        parts.append(translations_html(translations))
    else:
        parts.append("<p>No translation scores (evaluation.translation off, or no held-out record of category "
                     "translation).</p>")
    langs = keys("identity.by_language.", "recall")
    if langs:
        rows = "".join(f"<tr><td>{escape(lang)}</td>" + "".join(
            model_cells(metrics, f"identity.by_language.{lang}.{m}", models, digits=".2f")
            for m in ("precision", "recall", "f1")) + "</tr>" for lang in langs)
        parts.append("<h3>Identity probe per language</h3><table><tr><th>language</th>"
                     + "".join(model_heads(models, m) for m in ("precision", "recall", "F1"))
                     + "</tr>" + rows + "</table>")
    return "".join(parts)


def translations_html(translations: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Every translated pair with each model's translation and its sentence chrF, folded."""
    models = [m for m, records in translations.items() if records]
    if not models:
        return ""
    head = "".join(f"<th>{escape(m)}</th>" for m in models)
    rows = []
    for i, record in enumerate(translations[models[0]]):
        cells = "".join(f"<td>{text_cell(r.get('hypothesis', ''))}<small>chrF {float(r.get('chrf', 0.0)):.1f}</small></td>"
                        for r in (translations[m][i] if i < len(translations[m]) else {} for m in models))
        rows.append(f"<tr><td>{escape(record.get('direction', ''))}</td><td><pre>{escape(record.get('prompt', ''))}</pre>"
                    f"</td><td><pre>{escape(record.get('reference', ''))}</pre></td>{cells}</tr>")
    return (f"<details><summary>{len(rows)} translated pairs</summary><table><tr><th>direction</th><th>prompt</th>"
            f"<th>reference</th>{head}</tr>" + "".join(rows) + "</table></details>")


def align_html(align_metrics: Mapping[str, Any] | None) -> str:
    """The align stage's own numbers (`ALIGN_ROWS`), or why there are none (align off, or no align.json)."""
    from lmforge.tracking import flatten_leaves

    align = flatten_leaves(align_metrics or {})
    if not align:
        return "<p>No align metrics (data/08_reporting/align.json missing).</p>"
    if align.get("enabled") in (False, 0, 0.0, "false"):
        return ("<p>The align stage is off (<code>align.enabled: false</code>): the SFT model is the one evaluated "
                "last, gated and packaged.</p>")
    rows = "".join(f"<tr><td><code>{escape(key)}</code></td><td>{escape(what)}</td><td class='num'>"
                   f"{fmt(align[key])}</td></tr>" for key, what in ALIGN_ROWS if key in align)
    return ("<table><tr><th>align.json key</th><th>what</th><th>value</th></tr>" + rows + "</table>"
            "<p><small>Measured by the align stage on its held-out pairs and prompts; the aligned model's scores "
            "on evaluation's own held-out data are its column in the tables above and its verdicts against SFT."
            "</small></p>")


def text_cell(text: Any) -> str:
    """Model text, escaped, in a <pre>; an empty or whitespace-only answer is said so (it would look blank)."""
    text = str(text)
    if not text.strip():
        return f"<pre><em>{'(empty)' if not text else 'only whitespace: ' + escape(repr(text))}</em></pre>"
    return f"<pre>{escape(text)}</pre>"


def fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def quantization_html(metrics: Mapping[str, float]) -> str:
    """The quantized packages (``lmforge.evaluation.quantization``): a row per GGUF format under the full-precision
    package: size, held-out bits per byte, its change in percent in total and per language group, the budget and
    pass/fail (a per-language change over the budget is marked too)."""
    formats = quantization_formats(metrics)
    if not formats:
        return ("<p>No quantized packages (<code>evaluation.quantization.enabled</code> is false, or the stage ran "
                "without them).</p>")
    found = {k.split(".")[-2] for k in metrics if k.startswith("quantization.") and ".by_language." in k
             and k.endswith(".bpb")}
    groups = [g for g in ("en", "zh", "ja", "code") if g in found] + sorted(found - {"en", "zh", "ja", "code"})

    def num(key: str, digits: str = ".4f") -> str:
        value = metrics.get(key)
        return f"<td class='num'>{value:{digits}}</td>" if value is not None else "<td>&mdash;</td>"

    def delta(key: str, budget: float | None) -> str:
        value = metrics.get(key)
        if value is None:
            return "<td>&mdash;</td>"
        over = budget is not None and value > budget
        return f"<td class='num{' not' if over else ''}'>{value:+.3f}%</td>"

    head = ("<tr><th>format</th><th>size (MB)</th><th>bits per byte</th><th>&Delta; bits per byte</th>"
            + "".join(f"<th>{escape(g)} bpb (&Delta;)</th>" for g in groups) + "<th>budget</th><th>verdict</th></tr>")
    rows = []
    for fmt in [QUANTIZATION_REFERENCE, *formats]:
        p = f"quantization.{fmt}"
        budget = metrics.get(f"{p}.budget_pct")
        size = metrics.get(f"{p}.bytes")
        cells = [f"<td>{'full precision (HF package)' if fmt == QUANTIZATION_REFERENCE else escape(fmt)}</td>",
                 f"<td class='num'>{size / 1e6:.2f}</td>" if size is not None else "<td>&mdash;</td>",
                 num(f"{p}.bpb"), "<td></td>" if fmt == QUANTIZATION_REFERENCE else delta(f"{p}.bpb_delta_pct", budget)]
        for g in groups:
            bpb = metrics.get(f"{p}.by_language.{g}.bpb")
            change = metrics.get(f"{p}.by_language.{g}.bpb_delta_pct")
            text = "&mdash;" if bpb is None else f"{bpb:.4f}" + ("" if change is None else f" ({change:+.3f}%)")
            over = change is not None and budget is not None and change > budget
            cells.append(f"<td class='num{' not' if over else ''}'>{text}</td>")
        if budget is None:
            cells += ["<td></td>", "<td></td>"]
        else:
            passed = metrics.get(f"{p}.within_budget") == 1.0
            cells += [f"<td class='num'>&le; {budget:g}%</td>",
                      f"<td class='{'measured' if passed else 'not'}'>{'pass' if passed else 'fail'}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table>{head}{''.join(rows)}</table><p><small>GGUF files of the chat model "
            "(<code>data/06_models/gguf</code>, shipped by the packaging stage), each scored on the same held-out "
            "blocks and per-language texts as the models above after transformers dequantized its weights: this is "
            "the cost of <b>weight</b> quantization (llama.cpp also rounds activations to 8 bits in its q8_0/q4_k_m "
            "matrix products). &Delta;: the change of bits per byte against the full-precision package, in percent; "
            "the verdict compares the total with the budget (<code>evaluation.quantization.budgets_pct</code>); a "
            "language over the budget is red.</small></p>")


QUANTIZATION_REFERENCE = "reference"
"""``lmforge.evaluation.quantization.REFERENCE`` (not imported: that module imports the suite, which imports the report)."""


def quantization_formats(metrics: Mapping[str, float]) -> list[str]:
    """The formats ``metrics`` hold ``quantization.<fmt>.bpb_delta_pct`` for, in the engine's order."""
    found = {k.split(".")[1] for k in metrics if k.startswith("quantization.") and k.endswith(".bpb_delta_pct")
             and k.count(".") == 2}
    order = ("f32", "f16", "q8_0", "q4_k_m")
    return [f for f in order if f in found] + sorted(found - set(order))
