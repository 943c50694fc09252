"""The evaluation report: one self-contained HTML file (no CDN, no script), plots as inline PNG.

Sections: the verdicts of SFT against base and, when align ran, of the aligned model against SFT (better /
worse / within noise, the noise estimate and how it was made: ``lmforge.evaluation.verdicts``; regressions
red, improvements green, noise grey), the align stage's own numbers, the per-language scores (a column per
model: ``lmforge.evaluation.html_tables``), the
quantized packages (size, bits per byte and its change per language against the budgets), where
the quality gate's decision is made and recorded, sample generations of every model side by side
(``{model: records}``: an aligned model is one more column) and the identity probe's answers, all
model text HTML-escaped; training loss curves (``data/08_reporting/<stage>_loss.json``), base vs SFT metric bars,
operations per stage (durations, CPU/GPU, memory, network), the seed-metric table (measured, measured
after evaluation, or "not measured on this hardware" with the reason), everything not measured, and
notes on the numbers that look odd without them (peak memory, p50 = p95, CPU samples, the chain
totals), and every flat metric of ``evaluation.json``. It opens offline in any browser and as an MLflow artifact.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from lmforge.evaluation.html_tables import align_html, per_language_html, quantization_html, report_models
from lmforge.evaluation.html_tables import escape as _e
from lmforge.evaluation.html_tables import fmt as _fmt
from lmforge.evaluation.html_tables import text_cell as _text
from lmforge.evaluation.verdicts import (
    BETTER,
    BOOTSTRAP_RESAMPLES,
    NOISE_METHOD,
    NOISE_Z,
    WITHIN_NOISE,
    WORSE,
    Verdict,
)

logger = logging.getLogger(__name__)

BAR_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Scores, higher is better (0-1)", ("humaneval.pass_at_1", "identity.precision", "identity.recall",
                                        "identity.f1", "heldout_pairs.exact_match", "heldout_pairs.token_f1")),
    ("Bits per byte, lower is better", ("heldout.bits_per_byte", "sft_pairs.bits_per_byte")),
    ("Perplexity, lower is better", ("heldout.perplexity", "sft_pairs.perplexity")),
)
"""Per-model metric suffixes drawn side by side for each model (absent ones are left out)."""

OPS_BARS = ("duration_s", "cpu_utilization_pct", "gpu_utilization_pct", "memory_used_mb_max", "allreduce_busbw_gbps",
            "network_mb_per_s")

_CSS = """body{font-family:system-ui,sans-serif,"Noto Sans CJK SC","PingFang SC","Microsoft YaHei";margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.measured{color:#186a1d}.not{color:#a33}.later{color:#8a6d00}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
tr.worse td.verdict{color:#fff;background:#c62828;font-weight:bold}tr.better td.verdict{color:#fff;background:#2e7d32;
font-weight:bold}tr.noise td.verdict{color:#fff;background:#757575}tr.unknown td.verdict{color:#555}
pre{font-family:monospace,"Noto Sans Mono CJK SC","Noto Sans CJK SC";white-space:pre-wrap;word-break:break-word;
margin:0;font-size:.85em;max-width:32em}
.summary{font-size:1.1em;padding:.5em .8em;border-left:4px solid #757575;background:#f7f7f7}
.summary.worse{border-color:#c62828}small{color:#555}"""


def build_html_report(metrics: Mapping[str, float], seed_table: Sequence[Mapping[str, Any]],
                      not_measured: Mapping[str, str], loss_curves: Mapping[str, Sequence[Mapping[str, Any]]],
                      *, title: str = "lmforge evaluation",
                      verdicts: Sequence[Verdict] | Mapping[str, Sequence[Verdict]] = (),
                      samples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                      identity_answers: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                      translations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                      align_metrics: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML string (see the module docstring).

    ``verdicts`` is ``{"SFT against base": [...], "aligned against SFT": [...]}`` (a bare list: SFT against
    base); ``align_metrics`` the align stage's ``align.json`` (a section when the metrics hold ``aligned.*``
    or it is given).

    ``samples`` is ``{model: [{"prompt", "completion", "new_tokens"}]}`` (generations.json's per-model
    lists, same prompts in the same order), ``identity_answers`` ``{model: identity probe records}``,
    ``translations`` ``{model: translation records}`` (``lmforge.evaluation.translation``).
    """
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]
    for heading, judged in (verdicts if isinstance(verdicts, Mapping) else {"SFT against base": verdicts}).items():
        parts.append(f"<h2>Verdicts: {_e(heading)}</h2>" + verdicts_html(judged, heading))
    if align_metrics is not None or "aligned" in report_models(metrics):
        parts.append("<h2>Align stage</h2>" + align_html(align_metrics))
    parts.append("<h2>Per language</h2>" + per_language_html(metrics, translations or {}))
    parts.append("<h2>Quantized packages</h2>" + quantization_html(metrics))
    parts.append("<h2>Quality gate</h2>" + GATE_NOTE)
    parts.append("<h2>Sample generations</h2>" + samples_html(samples or {}))
    if identity_answers:
        parts.append("<h2>Identity probe answers</h2>" + identity_html(identity_answers))
    parts.append("<h2>Training loss</h2>")
    parts.append(_figure(plot_loss_curves(loss_curves), "loss curves") if any(loss_curves.values())
                 else "<p>No loss curves (data/08_reporting/*_loss.json missing).</p>")
    parts.append("<h2>Base vs SFT" + (" vs aligned" if "aligned" in report_models(metrics) else "") + "</h2>")
    for group_title, suffixes in BAR_GROUPS:
        png = plot_model_bars(metrics, suffixes, group_title)
        parts.append(_figure(png, group_title) if png else f"<p>{_e(group_title)}: no metrics.</p>")
    parts.append("<h2>Operations</h2>")
    png = plot_operations(metrics)
    parts.append(_figure(png, "operations per stage") if png else "<p>No operations metrics (no MLflow runs).</p>")
    parts.append("<h2>Seed metrics</h2>" + seed_table_html(seed_table))
    if notes := number_notes(metrics):
        parts.append("<h2>About these numbers</h2><ul>" + "".join(f"<li>{n}</li>" for n in notes) + "</ul>")
    if not_measured:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in sorted(not_measured.items()))
        parts.append(f"<h2>Not measured</h2><table><tr><th>metric</th><th>reason</th></tr>{rows}</table>")
    rows = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_fmt(v)}</td></tr>" for k, v in sorted(metrics.items()))
    parts.append(f"<h2>All metrics (evaluation.json)</h2><table><tr><th>name</th><th>value</th></tr>{rows}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


GATE_NOTE = (
    "<p>The quality gate is decided by the <b>packaging</b> stage, not here: before packaging and registering the "
    "SFT model (the aligned model when align ran: the same bounds on its own numbers) it checks the bounds under "
    "<code>gate:</code> in <code>conf/base/parameters_evaluation.yml</code> "
    "against the numbers of <code>evaluation.json</code> listed at the end of this page (each bound: the metric's "
    "value, the bound, pass or fail).</p><p>The bounds are deliberately not an input of this stage: DVC reruns a "
    "stage when its params change, and <code>gate</code> is a param of packaging only, so changing a threshold "
    "reruns packaging alone and keeps this report. A report that showed pass/fail would have to read the bounds "
    "and rerun the whole evaluation for every threshold change (or show stale bounds).</p><p>Where the decision is "
    "recorded: the packaged model card's <b>Quality gate</b> section (the decision, each bound, its value and "
    "outcome; also the registered version's description in MLflow), "
    "<code>data/08_reporting/packaging.json</code> (<code>gate_passed</code>, and per bound "
    "<code>gate.&lt;metric&gt;.&lt;min|max&gt;.value</code>, <code>.limit</code>, <code>.passed</code>), the registered "
    "model version's <code>gate.*</code> tags in MLflow, and, for a refused model, packaging's one-line error "
    "naming each failed bound with its value. The verdicts above say which way each number moved and whether "
    "the move is more than noise.</p>")
"""The gate section: where the decision is made and recorded, and why this stage does not read the bounds."""


def verdicts_html(verdicts: Sequence[Verdict], heading: str = "SFT against base") -> str:
    """A summary line and one coloured row per compared metric, then how the noise was estimated.

    ``heading`` is ``"<model> against <reference>"``: the column labels come from it."""
    other, base = heading.split(" against ", 1)
    if not verdicts:
        return "<p>No metric of both models to compare.</p>"
    worse = [v.metric for v in verdicts if v.verdict == WORSE]
    better = [v.metric for v in verdicts if v.verdict == BETTER]
    noise = [v.metric for v in verdicts if v.verdict == WITHIN_NOISE]
    summary = (f"{_e(heading)}: <b>{len(better)} better</b>, <b>{len(worse)} worse</b>"
               + (f" ({_e(', '.join(worse))})" if worse else "") + f", {len(noise)} within noise"
               + (f", {len(verdicts) - len(worse) - len(better) - len(noise)} without a noise estimate"
                  if len(worse) + len(better) + len(noise) < len(verdicts) else "") + ".")
    rows = []
    for v in verdicts:
        css = {BETTER: "better", WORSE: "worse", WITHIN_NOISE: "noise"}.get(v.verdict, "unknown")
        if v.noise_unit.startswith("loss"):  # perplexity: judged on the loss difference it is exp() of
            diff = f"&times;{v.other / v.base:.4g} (loss {math.log(v.other / v.base):+.4g} nats/token)" \
                if v.base > 0 and v.other > 0 else "&mdash;"
        else:
            diff = f"{v.difference:+.4g}"
        noise_cell = (f"&plusmn;{v.noise_se:.3g} SE<br><small>{_e(v.noise_unit)}, {v.items} paired items</small>"
                      if v.noise_se is not None else "&mdash;")
        rows.append(f"<tr class='{css}'><td>{_e(v.metric)}</td><td>{_e(v.better)}</td><td class='num'>{v.base:.4g}</td>"
                    f"<td class='num'>{v.other:.4g}</td><td class='num'>{diff}</td><td class='num'>{noise_cell}</td>"
                    f"<td class='verdict'>{_e(v.word)}</td></tr>")
    methods = "".join(f"<li><b>{_e(split)}</b>: {_e(method)}</li>" for split, method in NOISE_METHOD.items()
                      if any(v.metric.startswith(split + ".") and v.noise_se is not None for v in verdicts))
    return (f"<p class='summary{' worse' if worse else ''}'>{summary}</p>"
            f"<table><tr><th>metric</th><th>better when</th><th>{_e(base)}</th><th>{_e(other)}</th><th>difference "
            f"({_e(other)} &minus; {_e(base)})</th><th>noise</th><th>verdict</th></tr>" + "".join(rows) + "</table>"
            f"<p><small>Noise: the standard error (SE) of the difference, from a paired bootstrap ({BOOTSTRAP_RESAMPLES} "
            "resamples, seeded) over the items both models were scored on: resample the items, score both models on "
            f"the resample, take the spread of the difference. Within noise: |difference| &le; {NOISE_Z:g} SE (about a "
            "95% interval). Perplexity is judged on the loss difference (perplexity = exp(loss)), bits per byte on the "
            f"same difference in its unit.</small></p><ul><small>{methods}</small></ul>")


def samples_html(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Fixed prompts down, models across (base, SFT, then any later model); every text escaped."""
    models = [m for m, records in samples.items() if records]
    if not models:
        return "<p>No sample generations (generations.json has no per-model list).</p>"
    prompts = [str(r.get("prompt", "")) for r in samples[models[0]]]
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    rows = []
    for i, prompt in enumerate(prompts):
        cells = []
        for m in models:
            record = samples[m][i] if i < len(samples[m]) else {}
            tokens = record.get("new_tokens")
            cells.append(f"<td>{_text(record.get('completion', ''))}"
                         + (f"<small>{int(tokens)} new tokens</small>" if tokens is not None else "") + "</td>")
        rows.append(f"<tr><td><pre>{_e(prompt)}</pre></td>{''.join(cells)}</tr>")
    return ("<p><small>Greedy answers to the fixed prompts of <code>evaluation.generation.prompts</code>, through "
            "the chat template (data/08_reporting/generations.json).</small></p>"
            f"<table><tr><th>prompt</th>{head}</tr>" + "".join(rows) + "</table>")


def identity_html(answers: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Each probe question with every model's answer and whether it was scored as claiming the identity."""
    models = [m for m, records in answers.items() if records]
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    rows = []
    for i, record in enumerate(answers[models[0]] if models else []):
        cells = []
        for m in models:
            r = answers[m][i] if i < len(answers[m]) else {}
            claim = "claims the identity" if r.get("claims_identity") else "does not claim it"
            cells.append(f"<td>{_text(r.get('answer', ''))}<small>{claim}</small></td>")
        rows.append(f"<tr><td>{_e(record.get('question', ''))}</td><td>{_e(record.get('kind', ''))}</td>"
                    f"{''.join(cells)}</tr>")
    claims = ", ".join(f"{_e(m)} {sum(bool(r.get('claims_identity')) for r in answers[m])}/{len(answers[m])}"
                       for m in models)
    return (f"<details><summary>{len(rows)} questions; answers scored as claiming the identity: {claims}</summary>"
            f"<table><tr><th>question</th><th>kind</th>{head}</tr>" + "".join(rows) + "</table></details>")


def number_notes(metrics: Mapping[str, float]) -> list[str]:
    """HTML sentences explaining the numbers that look wrong without them (only for metrics present)."""
    notes = []
    if "sft.speed.peak_memory_mb" in metrics:
        growth = metrics.get("sft.speed.memory_growth_mb")
        notes.append("<code>sft.speed.peak_memory_mb</code>: the evaluation process's peak memory while generating, "
                     "model weights included (peak RSS on a CPU, max allocated on CUDA)"
                     + (f"; the generation's own growth over the memory in use before it is "
                        f"<code>sft.speed.memory_growth_mb</code> = {growth:.3g} MB (near 0 on a CPU: the timed "
                        "rounds reuse the warm-up's buffers)" if growth is not None else "") + ".")
    if "sft.speed.latency_ms_p50" in metrics:
        timings = metrics.get("sft.speed.latency_timings")
        notes.append("<code>sft.speed.latency_ms_p50</code> / <code>_p95</code>: a request's response time is the "
                     "wall time of its batch (a batch answers its requests together), so the percentiles come from "
                     + (f"{int(timings)} distinct timing(s)" if timings is not None else "one timing per batch")
                     + (": with one batch p50 = p95" if timings == 1 else "") + ".")
    if any(k.startswith("ops.") and k.endswith(".cpu_utilization_pct") for k in metrics):
        notes.append("<code>ops.&lt;stage&gt;.cpu_utilization_pct</code>: mean of MLflow's CPU samples (every 5 s) "
                     "without the first, which is always 0 (psutil's first reading in MLflow's monitor thread); a "
                     "stage shorter than two samples has no CPU figure (see Not measured) instead of 0%.")
    busbw = {k.split(".")[1]: v for k, v in metrics.items() if k.startswith("ops.") and k.endswith(".allreduce_busbw_gbps")}
    if busbw:
        notes.append("<code>ops.&lt;stage&gt;.allreduce_busbw_gbps</code> (the seed's network bandwidth): all-reduce bus "
                     "bandwidth of the training job's own process group, measured at its start, in Gbps ("
                     + ", ".join(f"{_e(stage)} {_fmt(v)}" for stage, v in busbw.items())
                     + "); nccl-tests' definition, bytes / time &times; 2(n&minus;1)/n with n ranks, so it compares with "
                     "a link's speed whatever n; <code>network_mb_per_s</code> is every interface's traffic over the "
                     "stage, loopback included.")
    if "ops.chain.runs" in metrics:
        stages = metrics.get("ops.chain.stages")
        notes.append("<code>ops.chain.*</code>: totals over the "
                     + (f"{int(stages)} " if stages is not None else "")
                     + "stages before evaluation (evaluation's own run is still open and packaging runs after it): "
                     f"<code>ops.chain.runs</code> = {int(metrics['ops.chain.runs'])} MLflow runs of those stages, "
                     "every attempt counted.")
    return notes


def seed_table_html(seed_table: Sequence[Mapping[str, Any]]) -> str:
    css = {"measured": "measured", "measured after evaluation": "later"}
    rows = []
    for row in seed_table:
        values = "<br>".join(f"{_e(k)} = {_fmt(v)}" for k, v in row["values"].items()) or "&mdash;"
        rows.append(f"<tr><td>{_e(row['seed'])}</td><td class='{css.get(row['status'], 'not')}'>{_e(row['status'])}"
                    f"</td><td>{values}</td><td>{_e(row['note'])}</td></tr>")
    return ("<table><tr><th>seed metric</th><th>status</th><th>values</th><th>note</th></tr>"
            + "".join(rows) + "</table>")


def plot_loss_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """One panel per training stage: loss against step."""
    plt = _pyplot()
    present = {name: c for name, c in curves.items() if c}
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.2), squeeze=False)
    for ax, (name, curve) in zip(axes[0], present.items(), strict=True):
        ax.plot([r["step"] for r in curve], [r["loss"] for r in curve], lw=1.2)
        ax.set(title=f"{name} loss", xlabel="step", ylabel="loss (nats/token)")
        ax.grid(alpha=.3)
    return _png(fig)


def plot_model_bars(metrics: Mapping[str, float], suffixes: Sequence[str], title: str) -> bytes | None:
    """Grouped bars, one per model (base, SFT, aligned), for the suffixes any model reports; None when none."""
    models = report_models(metrics)
    shown = [s for s in suffixes if any(f"{m}.{s}" in metrics for m in models)]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(shown) + 2), 3.2))
    width = 0.76 / len(models)
    for i, model in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(shown))]
        ax.bar(xs, [float(metrics.get(f"{model}.{s}", 0.0)) for s in shown], width, label=model)
    ax.set_xticks(range(len(shown)), shown, rotation=20, ha="right", fontsize=8)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=.3)
    return _png(fig)


def plot_operations(metrics: Mapping[str, float]) -> bytes | None:
    """One small bar chart per operations metric, a bar per stage; None without ``ops.*`` metrics.

    Stages are shown in the order their metrics come (``gather_operations`` emits them in chain order).
    """
    found = {k.split(".")[1] for k in metrics if k.startswith("ops.") and k.split(".")[1] != "chain"}
    stages = [s for s in dict.fromkeys(k.split(".")[1] for k in metrics if k.startswith("ops.")) if s in found]
    panels = [(name, [(s, metrics[f"ops.{s}.{name}"]) for s in stages if f"ops.{s}.{name}" in metrics])
              for name in OPS_BARS]
    panels = [(name, bars) for name, bars in panels if bars]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, (name, bars) in zip(axes[0], panels, strict=True):
        ax.bar([s for s, _ in bars], [v for _, v in bars], color="#4c72b0")
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    return _png(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; PNG only
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _figure(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
