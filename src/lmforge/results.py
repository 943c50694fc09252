"""Print where the chain's results are and the headline numbers (``make run`` ends with this).

``python -m lmforge.results`` reads each stage's metrics file (``<stage>_metrics`` in the catalog) of
the current project and says which artifacts exist.

`summarize` is plain code: it is given the stages and every path. The command (`main`) is the one
Kedro-aware part: the stage list comes from ``lmforge.pipeline_registry.CHAIN`` and the paths from the
project's catalog (``lmforge.pipelines.catalog_paths``), so nothing here repeats a ``data/...`` path.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import UserError, run_cli

ARTIFACTS = {
    "cleaned shards": "clean_documents",
    "quarantine": "quarantine",
    "data docs": "data_docs/index.html",
    "tokenizer": "tokenizer",
    "token shards": "token_shards",
    "pretrain checkpoint": "pretrain_checkpoint",
    "sft checkpoint": "sft_checkpoint",
    "align checkpoint": "align_checkpoint",
    "align pairs": "align_pairs",
    "generations": "generations",
    "evaluation report": "evaluation_report",
    "packaged model": "packaged_model",
    "GGUF packages": "packaged_gguf",
}
"""What the summary lists: label -> catalog dataset, optionally followed by ``/<file inside it>``."""

METRICS_DATASET = "{stage}_metrics"
"""The catalog dataset of a stage's metrics file (``data_processing_metrics``...)."""

BUSBW = "network.allreduce_busbw_gbps"
"""A training job's all-reduce bus bandwidth in Gbps, measured at its start (``lmforge.training.bandwidth``)."""

HEADLINES = {
    "data_processing": ("records_in", "records_out"),
    "tokenizer": ("vocab_size", "bytes_per_token", "unknown_tokens"),
    "pretrain": ("initial_loss", "final_loss", "tokens_per_s", "train_time_s", BUSBW),
    "sft": ("initial_loss", "final_loss", "tokens_per_s", BUSBW),
    "align": ("method", "initial_loss", "final_loss", "pairs_trained", "heldout.preference_accuracy",
              "win_rate.vs_sft", BUSBW),
    "evaluation": ("base.sft_pairs.perplexity", "sft.sft_pairs.perplexity", "sft_pairs.perplexity_ratio",
                   "base.identity.f1", "sft.identity.f1", "aligned.identity.f1",
                   "quantization.q8_0.bpb_delta_pct", "quantization.q4_k_m.bpb_delta_pct"),
    "packaging": ("loads", "package_bytes", "engine.parity_passed", "engine.q8_0.bytes", "engine.q4_k_m.bytes"),
}


def summarize(root: Path, artifacts: Mapping[str, str], metrics_files: Mapping[str, str],
              stages: Sequence[str]) -> str:
    """The summary text.

    Args:
        root: the project directory the relative paths are under.
        artifacts: label -> path of each artifact to list (marked when missing).
        metrics_files: stage -> path of its flat JSON metrics file.
        stages: the chain, upstream first.
    """
    lines = ["", "lmforge results", "==============="]
    for name, rel in artifacts.items():
        path = root / rel
        lines.append(f"  {name:<20} {rel}{'' if path.exists() else '   (missing)'}")
    lines.append("")
    for stage in stages:
        path = root / metrics_files[stage]
        if not path.exists():
            lines.append(f"  {stage:<16} (no metrics: run `dvc repro {stage}`)")
            continue
        metrics = json.loads(path.read_text())
        found = {k: _lookup(metrics, k) for k in HEADLINES.get(stage, ())}
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in found.items() if v is not None)
        lines.append(f"  {stage:<16} {shown}")
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root.resolve()}/mlflow.db")
    lines += ["", f"  MLflow runs: {uri}   (browse them with `make ui`)",
              "  DVC: `dvc metrics show`, `dvc plots show`, `dvc exp run -S conf/base/parameters_pretrain.yml:pretrain.train.lr=1e-3`",
              ""]
    return "\n".join(lines)


def _lookup(metrics: Mapping[str, Any], key: str) -> Any:
    """``metrics[key]``, or the nested value a dotted key names (``heldout.preference_accuracy``); None if absent."""
    if key in metrics:
        return metrics[key]
    head, _, rest = key.partition(".")
    inner = metrics.get(head)
    return _lookup(inner, rest) if rest and isinstance(inner, Mapping) else None


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def catalog_locations(root: Path, stages: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(`ARTIFACTS` as label -> path, stage -> metrics file), both read from the project's catalog."""
    from lmforge.pipelines.catalog_paths import catalog_path

    artifacts = {}
    for label, entry in ARTIFACTS.items():
        dataset, _, inside = entry.partition("/")
        path = catalog_path(dataset, root)
        artifacts[label] = f"{path}/{inside}" if inside else path
    metrics = {stage: catalog_path(METRICS_DATASET.format(stage=stage), root) for stage in stages}
    return artifacts, metrics


def main(argv: list[str] | None = None) -> None:
    from lmforge.pipeline_registry import CHAIN

    parser = argparse.ArgumentParser(prog="python -m lmforge.results", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="project root (default: current directory)")
    args = parser.parse_args(argv)
    root = Path(args.project)
    if not (root / "conf" / "base").is_dir():
        raise UserError(f"{root.resolve()} is not the lmforge project (no conf/base)",
                        "run it from the project root, or pass --project <root>")
    artifacts, metrics = catalog_locations(root, CHAIN)
    print(summarize(root, artifacts, metrics, CHAIN))  # noqa: T201 - this command's output


if __name__ == "__main__":
    run_cli(main, "lmforge.results")
