"""Print where the chain's results are and the headline numbers (``make run`` ends with this).

``python -m lmforge.results`` reads ``data/08_reporting/*.json`` of the current project.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

STAGES = ("data_processing", "tokenizer", "pretrain", "sft", "evaluation", "packaging")
ARTIFACTS = {
    "cleaned shards": "data/03_primary/documents",
    "quarantine": "data/02_intermediate/quarantine.jsonl",
    "data docs": "data/08_reporting/data_docs/index.html",
    "tokenizer": "data/06_models/tokenizer",
    "token shards": "data/05_model_input/tokens",
    "pretrain checkpoint": "data/06_models/pretrain",
    "sft checkpoint": "data/06_models/sft",
    "generations": "data/08_reporting/generations.json",
    "evaluation report": "data/08_reporting/evaluation_report.html",
    "packaged model": "data/07_model_output/lmforge-chat",
}
HEADLINES = {
    "data_processing": ("records_in", "records_out"),
    "tokenizer": ("vocab_size", "bytes_per_token", "unknown_tokens"),
    "pretrain": ("initial_loss", "final_loss", "tokens_per_s", "train_time_s"),
    "sft": ("initial_loss", "final_loss", "tokens_per_s"),
    "evaluation": ("base.sft_pairs.perplexity", "sft.sft_pairs.perplexity", "sft_pairs.perplexity_ratio",
                   "base.identity.f1", "sft.identity.f1"),
    "packaging": ("loads", "package_bytes"),
}


def summarize(root: Path) -> str:
    lines = ["", "lmforge results", "==============="]
    for name, rel in ARTIFACTS.items():
        path = root / rel
        lines.append(f"  {name:<20} {rel}{'' if path.exists() else '   (missing)'}")
    lines.append("")
    for stage in STAGES:
        path = root / "data" / "08_reporting" / f"{stage}.json"
        if not path.exists():
            lines.append(f"  {stage:<16} (no metrics: run `dvc repro {stage}`)")
            continue
        metrics = json.loads(path.read_text())
        shown = ", ".join(f"{k}={_fmt(metrics.get(k))}" for k in HEADLINES[stage] if k in metrics)
        lines.append(f"  {stage:<16} {shown}")
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root.resolve()}/mlflow.db")
    lines += ["", f"  MLflow runs: {uri}   (browse them with `make ui`)",
              "  DVC: `dvc metrics show`, `dvc plots show`, `dvc exp run -S conf/base/parameters_pretrain.yml:pretrain.train.lr=1e-3`",
              ""]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmforge.results", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="project root (default: current directory)")
    args = parser.parse_args(argv)
    print(summarize(Path(args.project)))  # noqa: T201 - this command's output


if __name__ == "__main__":
    main()
