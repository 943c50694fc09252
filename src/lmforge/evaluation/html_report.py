"""The evaluation report: one self-contained HTML file (no CDN, no script), plots as inline PNG.

Sections: training loss curves (``data/08_reporting/<stage>_loss.json``), base vs SFT metric bars,
operations per stage (durations, CPU/GPU, memory, network), the seed-metric table (measured, measured
after evaluation, or "not measured on this hardware" with the reason), everything not measured, and
every flat metric of ``evaluation.json``. It opens offline in any browser and as an MLflow artifact.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

BAR_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Scores, higher is better (0-1)", ("humaneval.pass_at_1", "identity.precision", "identity.recall",
                                        "identity.f1", "heldout_pairs.exact_match", "heldout_pairs.token_f1")),
    ("Bits per byte, lower is better", ("heldout.bits_per_byte", "sft_pairs.bits_per_byte")),
    ("Perplexity, lower is better", ("heldout.perplexity", "sft_pairs.perplexity")),
)
"""Per-model metric suffixes drawn side by side for base and SFT (absent ones are left out)."""

OPS_BARS = ("duration_s", "cpu_utilization_pct", "gpu_utilization_pct", "memory_used_mb_max", "network_mb_per_s")

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.measured{color:#186a1d}.not{color:#a33}.later{color:#8a6d00}
td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}"""


def build_html_report(metrics: Mapping[str, float], seed_table: Sequence[Mapping[str, Any]],
                      not_measured: Mapping[str, str], loss_curves: Mapping[str, Sequence[Mapping[str, Any]]],
                      *, title: str = "lmforge evaluation") -> str:
    """The report as one HTML string (see the module docstring)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]
    parts.append("<h2>Training loss</h2>")
    parts.append(_figure(plot_loss_curves(loss_curves), "loss curves") if any(loss_curves.values())
                 else "<p>No loss curves (data/08_reporting/*_loss.json missing).</p>")
    parts.append("<h2>Base vs SFT</h2>")
    for group_title, suffixes in BAR_GROUPS:
        png = plot_model_bars(metrics, suffixes, group_title)
        parts.append(_figure(png, group_title) if png else f"<p>{_e(group_title)}: no metrics.</p>")
    parts.append("<h2>Operations</h2>")
    png = plot_operations(metrics)
    parts.append(_figure(png, "operations per stage") if png else "<p>No operations metrics (no MLflow runs).</p>")
    parts.append("<h2>Seed metrics</h2>" + seed_table_html(seed_table))
    if not_measured:
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in sorted(not_measured.items()))
        parts.append(f"<h2>Not measured</h2><table><tr><th>metric</th><th>reason</th></tr>{rows}</table>")
    rows = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_fmt(v)}</td></tr>" for k, v in sorted(metrics.items()))
    parts.append(f"<h2>All metrics (evaluation.json)</h2><table><tr><th>name</th><th>value</th></tr>{rows}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
    """Grouped bars base vs SFT for the suffixes both models (or either) report; None when none."""
    shown = [s for s in suffixes if f"base.{s}" in metrics or f"sft.{s}" in metrics]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(shown) + 2), 3.2))
    width = 0.38
    for i, model in enumerate(("base", "sft")):
        xs = [j + (i - 0.5) * width for j in range(len(shown))]
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


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _e(str(value))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
