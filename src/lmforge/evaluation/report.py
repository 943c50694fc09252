"""Flatten base-vs-SFT(-vs-aligned) evaluation results into stable metric names and add comparisons.

MLflow compares runs by metric name, so these names are an interface: change them only on purpose.

Input: for each model, a dict ``{split: {metric: value}}``, typically
``{"heldout": evaluate_lm_perplexity(...), "sft_pairs": evaluate_masked_perplexity(...)}``.
Deeper nesting is flattened with dots as well.

Output keys (all floats):

- ``base.<split>.<metric>`` and ``sft.<split>.<metric>``, e.g. ``base.heldout.perplexity``,
  ``sft.heldout.perplexity``, ``base.sft_pairs.perplexity``, ``sft.sft_pairs.perplexity``, with
  ``<metric>`` in ``loss``, ``perplexity``, ``bits_per_token``, ``tokens`` for the perplexity
  evaluators.
- Per language (``lmforge.evaluation.by_language``, ``lmforge.evaluation.translation``,
  ``lmforge.evaluation.identity_probe``): ``<model>.heldout.by_language.<group>.bits_per_byte`` (and
  ``perplexity``, ``bytes``, ``documents``... for en, zh, ja, code),
  ``<model>.translation.<src>_<tgt>.chrf`` / ``.bleu`` / ``.pairs`` (en_zh, en_ja, zh_en, ja_en),
  ``<model>.identity.by_language.<en|zh>.{precision,recall,f1}``; and the differences SFT - base
  ``heldout.by_language.<group>.bits_per_byte_delta`` and ``translation.<src>_<tgt>.{chrf,bleu}_delta``.
- For every split present in both models:
  ``<split>.perplexity_ratio`` = sft / base perplexity (< 1: SFT fits that split better;
  ``sft_pairs.perplexity_ratio`` is the headline SFT number, ``heldout.perplexity_ratio`` shows
  how much general LM ability SFT cost), and ``<split>.loss_delta`` = sft - base loss (nats/token).
- When align ran: ``aligned.<split>.<metric>`` as for the others, and the same comparisons of the aligned
  model with SFT, ``aligned_vs_sft.<split>.perplexity_ratio`` / ``.loss_delta`` / per-language
  ``..._delta`` (aligned - sft), and with base, ``aligned_vs_base.*`` (the quality gate's ratios for an
  aligned model, ``lmforge.packaging.gate.gate_for_model``).

Values that are not numbers (strings, lists) are left out with a warning.

The stage's report is assembled here too (``build_evaluation_report``): the model metrics plus the
operations metrics (``ops.*``, ``lmforge.evaluation.operations``) and the verdicts of SFT against base
(``verdict.*``, ``noise.*``, ``lmforge.evaluation.verdicts``) become ``evaluation.json`` (every
key is also the MLflow metric ``evaluation.<key>``); ``build_seed_table`` says for each seed metric
of the project whether it was measured, is measured after evaluation by the serving commands, or
was not measured, and why; ``lmforge.evaluation.html_report`` draws the HTML page.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

MODEL_PREFIXES = ("base", "sft", "aligned")
"""Top-level prefixes of the per-model metrics, in output order (``aligned`` only when align ran)."""

COMPARISONS = (("", "base", "sft"), ("aligned_vs_sft.", "sft", "aligned"), ("aligned_vs_base.", "base", "aligned"))
"""(key prefix, reference model, compared model) of the comparison metrics; SFT vs base keeps its bare names."""


def summarize_evaluation(base: Mapping[str, Any], sft: Mapping[str, Any],
                         aligned: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Flat ``{name: float}`` of every model's metrics plus the comparisons of `COMPARISONS` (those with ``aligned``
    only when it is given): ``[<prefix>]<split>.perplexity_ratio``, ``.loss_delta`` and the per-language deltas."""
    models = {"base": base, "sft": sft, **({"aligned": aligned} if aligned is not None else {})}
    summary: dict[str, float] = {}
    for prefix in MODEL_PREFIXES:
        if prefix in models:
            summary.update(flatten_metrics(models[prefix], prefix=prefix))
    for key_prefix, reference, other in COMPARISONS:
        if reference in models and other in models:
            summary.update({key_prefix + k: v for k, v in compare_models(models[reference], models[other]).items()})
    return summary


def compare_models(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, float]:
    """``<split>.perplexity_ratio`` (other / base), ``<split>.loss_delta`` (other - base) and the per-language deltas."""
    summary: dict[str, float] = {}
    for split in sorted(set(base) & set(other)):
        base_split, other_split = base[split], other[split]
        if not (isinstance(base_split, Mapping) and isinstance(other_split, Mapping)):
            continue
        if _is_number(base_split.get("perplexity")) and _is_number(other_split.get("perplexity")):
            summary[f"{split}.perplexity_ratio"] = _ratio(
                float(other_split["perplexity"]), float(base_split["perplexity"])
            )
        if _is_number(base_split.get("loss")) and _is_number(other_split.get("loss")):
            summary[f"{split}.loss_delta"] = float(other_split["loss"]) - float(base_split["loss"])
    summary.update(_per_language_deltas(base, other))
    return summary


PER_LANGUAGE_DELTAS = (("heldout", "by_language", ("bits_per_byte",)), ("translation", None, ("chrf", "bleu")))
"""(split, sub-key, metrics) compared per group: ``<split>[.<sub>].<group>.<metric>_delta`` = SFT - base."""


def _per_language_deltas(base: Mapping[str, Any], sft: Mapping[str, Any]) -> dict[str, float]:
    """``heldout.by_language.<group>.bits_per_byte_delta`` and ``translation.<src>_<tgt>.{chrf,bleu}_delta``."""
    out: dict[str, float] = {}
    for split, sub, names in PER_LANGUAGE_DELTAS:
        b, s = base.get(split) or {}, sft.get(split) or {}
        if sub is not None:
            b, s = b.get(sub) or {}, s.get(sub) or {}
        prefix = f"{split}.{sub}" if sub else split
        for group in sorted(set(b) & set(s)):
            if not (isinstance(b[group], Mapping) and isinstance(s[group], Mapping)):
                continue
            for name in names:
                if _is_number(b[group].get(name)) and _is_number(s[group].get(name)):
                    out[f"{prefix}.{group}.{name}_delta"] = float(s[group][name]) - float(b[group][name])
    return out


def flatten_metrics(metrics: Mapping[str, Any], *, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1.0}``; non-numeric leaves are dropped (logged)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=name))
        elif _is_number(value):
            flat[name] = float(value)
        else:
            logger.warning("skipping non-numeric metric %s (%s)", name, type(value).__name__)
    return flat


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return math.nan
    return numerator / denominator


def _is_number(value: Any) -> bool:
    """True for ints/floats and numpy/torch scalars (anything float() accepts that is not a str)."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# --- the seed-metric table ---------------------------------------------------------------------------

MEASURED = "measured"
NOT_MEASURED = "not measured on this hardware"
NOT_RUN = "not measured"
LATER = "measured after evaluation"

PAIRS_OFF = ("identity probe and held-out pairs off (evaluation.identity_probe / heldout_pairs), or no held-out "
             "pair fitted (see <model>.heldout_pairs.skipped_*)")

SEED_METRICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("training speed (time per epoch)",
     ("ops.pretrain.time_per_epoch_s", "ops.sft.time_per_epoch_s", "ops.pretrain.tokens_per_s", "ops.sft.tokens_per_s",
      "ops.align.tokens_per_s"),
     "time per epoch needs an epoch size; tokens/s of the training runs"),
    ("inference speed (requests per second)", ("sft.speed.requests_per_s", "sft.speed.tokens_per_s", "serving.rps"),
     "speed step off (evaluation.speed.enabled)"),
    ("GPU utilisation", ("ops.pretrain.gpu_utilization_pct", "ops.sft.gpu_utilization_pct"),
     "no GPU: MLflow logged no system/gpu_* metrics"),
    ("precision", ("sft.identity.precision", "sft.heldout_pairs.token_precision"), PAIRS_OFF),
    ("recall", ("sft.identity.recall", "sft.heldout_pairs.token_recall"), PAIRS_OFF),
    ("F1", ("sft.identity.f1", "sft.heldout_pairs.token_f1"), PAIRS_OFF),
    ("exact match", ("sft.heldout_pairs.exact_match", "base.heldout_pairs.exact_match"), PAIRS_OFF),
    ("pass@1", ("sft.humaneval.pass_at_1", "base.humaneval.pass_at_1"), "HumanEval off (evaluation.humaneval.enabled)"),
    ("memory use", ("ops.pretrain.peak_memory_mb", "ops.sft.peak_memory_mb", "ops.pretrain.memory_used_mb_max",
                    "ops.sft.memory_used_mb_max", "ops.pretrain.gpu_memory_used_mb_max", "sft.speed.peak_memory_mb",
                    "ops.align.peak_memory_mb"),
     "no MLflow runs / metrics files of the training stages"),
    ("disk I/O", ("ops.data_processing.disk_mb_per_s", "ops.tokenizer.disk_mb_per_s", "ops.pretrain.disk_mb_per_s",
                  "ops.sft.disk_mb_per_s", "ops.pretrain.disk_write_mb", "ops.sft.disk_write_mb",
                  "ops.data_processing.disk_usage_delta_mb", "ops.pretrain.disk_usage_delta_mb"),
     "psutil gave no block-device counters and MLflow system metrics were off"),
    ("network bandwidth", ("ops.pretrain.allreduce_busbw_gbps", "ops.sft.allreduce_busbw_gbps",
                           "ops.align.allreduce_busbw_gbps", "ops.pretrain.network_mb_per_s", "ops.sft.network_mb_per_s",
                           "ops.data_processing.network_mb_per_s", "ops.tokenizer.network_mb_per_s"),
     "the training stages reported no all-reduce bus bandwidth and MLflow system metrics were off"),
    ("crash rate", ("ops.chain.crash_rate",), "no MLflow runs of the chain's stages"),
    ("restart count", ("ops.chain.restart_count", "ops.pretrain.restart_count", "ops.sft.restart_count",
                       "ops.align.restart_count"),
     "the training stages reported no restart_count"),
    ("error rate", ("ops.chain.error_rate", "serving.error_rate"), "no MLflow runs of the chain's stages"),
    ("response time (ms)", ("sft.speed.latency_ms_p50", "sft.speed.latency_ms_p95", "serving.latency_p50_ms",
                            "serving.latency_p95_ms"),
     "speed step off (evaluation.speed.enabled)"),
    ("user satisfaction", ("serving.mean_rating", "serving.rated"), "users rate the served model"),
)
"""(seed metric, the flat metric names that report it, why it may be missing). The seed list of issue 7."""

LOADTEST_NOTE = ("served: measured by `make loadtest` (data/08_reporting/serving_load.json, MLflow experiment "
                 "lmforge-serving)")
SERVING_NOTES = {"serving.mean_rating": "served: measured by `python -m lmforge.packaging.serve --summary` "
                                        "(ratings in data/08_reporting/serving_feedback.sqlite)"}
"""Where a serving number comes from (default: the load test)."""

BUSBW_NOTE = ("allreduce_busbw_gbps (the figure): all-reduce bus bandwidth in Gbps of each training job's own process "
              "group (gloo on CPU, NCCL on GPU), nccl-tests' busbw = bytes / time x 2(n-1)/n, measured at training "
              "start (training/bandwidth.py; on one machine its ranks talk over loopback or NVLink, not a network); "
              "network_mb_per_s (secondary): every interface's traffic over the stage in MB/s, loopback included")
"""What the network row's figures are: the bus bandwidth first, the interface counters second."""

MEASURED_NOTES = {"disk I/O": "block-device reads + writes of the whole machine during each stage (psutil, "
                              "hooks.DiskIOHooks); disk_usage_delta_mb is the net growth of disk space in use",
                  "network bandwidth": BUSBW_NOTE}
"""What a measured row's numbers mean where the name alone would mislead."""


def read_serving_results(load_json: str | None, feedback_db: str | None) -> dict[str, float]:
    """``serving.*`` numbers from the load-test report and the feedback table, when those files exist.

    They are written after evaluation (``make loadtest``, ``serve``), so they describe the previously
    served model: the report shows them apart and they never enter ``evaluation.json``.
    """
    import json
    import sqlite3
    from pathlib import Path

    out: dict[str, float] = {}
    if load_json and Path(load_json).is_file():
        try:
            load = json.loads(Path(load_json).read_text(encoding="utf-8"))
            out["serving.rps"] = float(load["rps"])
            out["serving.error_rate"] = float(load["errors"]) / max(1.0, float(load["requests"]))
            for q in ("p50", "p95"):
                if q in load.get("latency_ms", {}):
                    out[f"serving.latency_{q}_ms"] = float(load["latency_ms"][q])
        except (ValueError, KeyError, TypeError) as err:
            logger.warning("%s: unreadable load-test report (%s); serving speed left out", load_json, err)
    if feedback_db and Path(feedback_db).is_file():
        try:
            with sqlite3.connect(f"file:{feedback_db}?mode=ro", uri=True) as db:
                rated, mean = db.execute("SELECT COUNT(rating), AVG(rating) FROM interactions").fetchone()
            out["serving.rated"] = float(rated)
            if mean is not None:
                out["serving.mean_rating"] = float(mean)
        except sqlite3.Error as err:
            logger.warning("%s: unreadable feedback table (%s); user satisfaction left out", feedback_db, err)
    return out


def build_seed_table(metrics: Mapping[str, float], not_measured: Mapping[str, str],
                     serving: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per seed metric: ``{"seed", "status", "values": {name: value}, "note"}``.

    ``status`` is ``measured``, ``measured after evaluation`` (serving numbers: from their files when
    present, else the note says which command measures them and where it writes), ``not measured on
    this hardware`` (no GPU) or ``not measured`` (switched off, or its inputs are missing), with the
    reason in ``note`` (from ``not_measured`` when it names one of the row's metrics, else the row's
    default reason).
    """
    serving = dict(serving or {})
    rows = []
    for seed, names, default_reason in SEED_METRICS:
        values = {n: float(metrics[n]) for n in names if n in metrics and _is_number(metrics[n])}
        later = {n: serving[n] for n in names if n in serving}
        served = [n for n in names if n.startswith("serving.")]
        serving_note = SERVING_NOTES.get(served[0], LOADTEST_NOTE) if served else ""
        if values:  # serving numbers, when the row has some, join the in-stage ones (or the note says where)
            status = MEASURED
            note = "; ".join(x for x in (MEASURED_NOTES.get(seed, ""), "" if later else serving_note) if x)
            values.update(later)
        elif served:
            values, status, note = later, LATER, serving_note
        else:
            reasons = [not_measured[n] for n in names if n in not_measured]
            note = reasons[0] if reasons else default_reason
            status = NOT_MEASURED if note.startswith("no GPU") else NOT_RUN
        rows.append({"seed": seed, "status": status, "values": values, "note": note})
    return rows


def build_evaluation_report(model_metrics: Mapping[str, float], operations: Mapping[str, Any],
                            loss_curves: Mapping[str, Any], *, generations: Mapping[str, Any] | None = None,
                            serving_load: str | None = None,
                            serving_feedback: str | None = None,
                            align_metrics: Mapping[str, Any] | None = None) -> tuple[dict[str, float], list[dict], str]:
    """(flat metrics for ``evaluation.json``, seed-metric table, HTML report).

    When the model metrics hold an aligned model (``aligned.*``), its verdicts against SFT join too
    (``verdict.aligned_vs_sft.*``) and ``align_metrics`` (the align stage's ``align.json``: preference
    accuracy, win rate, method, rounds) gets its own section of the HTML.

    ``operations`` is ``lmforge.evaluation.operations.gather_operations`` output; its metrics join the
    model metrics (``ops.*``), its ``not_measured`` reasons go to the table and the HTML. ``generations``
    (generations.json) gives the report its sample generations (every ``<model>`` list: base, SFT and any
    later model) and the per-item records behind the verdicts' noise; the verdicts join the metrics as
    ``verdict.*`` / ``noise.*`` (``lmforge.evaluation.verdicts``).
    """
    from lmforge.evaluation.html_report import build_html_report
    from lmforge.evaluation.verdicts import build_verdicts, verdict_metrics

    generations = generations or {}
    metrics = {**dict(model_metrics), **flatten_metrics(operations.get("metrics", {}))}
    verdicts = {"SFT against base": build_verdicts(metrics, generations)}
    metrics.update(verdict_metrics(verdicts["SFT against base"]))
    if any(k.startswith("aligned.") for k in model_metrics):
        prefix = "aligned_vs_sft."
        verdicts["aligned against SFT"] = build_verdicts(metrics, generations, "sft", "aligned", prefix=prefix)
        metrics.update(verdict_metrics(verdicts["aligned against SFT"], prefix=prefix))
    dropped = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if dropped:  # JSON and MLflow take no NaN/inf: say which, do not write them
        logger.warning("left out of evaluation.json (not finite): %s", ", ".join(dropped))
    metrics = {k: v for k, v in metrics.items() if k not in dropped}
    not_measured = dict(operations.get("not_measured", {}))
    serving = read_serving_results(serving_load, serving_feedback)
    table = build_seed_table(metrics, not_measured, serving)
    missing = [row["seed"] for row in table if row["status"] == NOT_MEASURED]
    if missing:
        logger.info("not measured here: %s", ", ".join(missing))
    samples = {k: v for k, v in generations.items() if "." not in k and isinstance(v, list)}
    answers = {k.removesuffix(".identity_probe"): v for k, v in generations.items()
               if k.endswith(".identity_probe") and isinstance(v, list)}
    translations = {k.removesuffix(".translation"): v for k, v in generations.items()
                    if k.endswith(".translation") and isinstance(v, list)}
    page = build_html_report(metrics, table, not_measured, {k: v or [] for k, v in loss_curves.items()},
                             verdicts=verdicts, samples=samples, identity_answers=answers, translations=translations,
                             align_metrics=align_metrics)
    return metrics, table, page
