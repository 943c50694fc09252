"""The tiny chain the end-to-end tests run: the project copied into a fresh git repository with its parameter
files shrunk (the same edit `dvc exp run -S` would make), and the helpers that run commands in it.

`make_project` builds one copy (the `project` fixture's, and the chaos test's second copy of the same
configuration); `TINY` is the configuration both use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ["data_processing", "tokenizer", "pretrain", "sft", "align", "evaluation", "packaging"]

TINY = {
    # every source capped (file formats by max_files, record formats by max_records): ~40 documents each
    "data_processing": {"sources": [{"max_files": 40, "max_records": 40}], "shard_size": 50,
                        "validation": {"min_records": 20}},
    # character_coverage 0.99: the capped en/zh/ja/code sample holds ~1,500 distinct characters, of which ~450
    # cover 99% of the text; the rest go to byte fallback (a 1,024-piece vocab: 256 bytes + pieces)
    "tokenizer": {"train": {"vocab_size": 1024, "character_coverage": 0.99}, "model_max_length": 256,
                  "shards": {"seq_len": 64, "validation_fraction": 0.1}},
    # a checkpoint every 10 steps: the chaos test's kills inside training resume from one
    "pretrain": {"model": {"preset": "debug"}, "train": {"max_steps": 30, "warmup_steps": 3, "lr": 1.0e-2,
                                                          "checkpoint_every": 10}},
    "sft": {"data": {"max_pairs": 400}, "identity": {"repeat": 2}, "max_length": 256,
            "train": {"max_steps": 30, "warmup_steps": 3, "lr": 3.0e-3, "checkpoint_every": 10}},
    # one on-policy round: 8 prompts x 2 samples of 8 tokens; 8 held-out prompts for the win rate
    "align": {"on_policy": {"rounds": 1, "prompts_per_round": 8, "k": 2, "max_new_tokens": 8, "heldout_prompts": 8},
              "train": {"max_steps": 10, "warmup_steps": 2, "checkpoint_every": 5}},
    # every part of the evaluation runs, on few items: generation is its cost on a CPU (at the defaults HumanEval's
    # 20 x 64 tokens, the identity probe's 32 and the held-out pairs' 10 x 32 tokens per model, and 5 rounds of the
    # speed comparison, were most of the stage; measured, `kedro run --pipelines evaluation` on the finished chain at
    # load ~2.5: 94 -> 56 CPU s with these sizes)
    "evaluation": {"max_heldout_blocks": 16, "max_sft_examples": 48, "max_example_tokens": 256,
                   "generation": {"max_new_tokens": 8, "prompts": ["def add(a, b):", "Who are you?"]},
                   "humaneval": {"n_problems": 4, "max_new_tokens": 16},
                   "identity_probe": {"max_new_tokens": 8},
                   "heldout_pairs": {"max_examples": 2, "max_new_tokens": 8},
                   "speed": {"prompts": 2, "rounds": 1},
                   "translation": {"max_pairs_per_direction": 2, "max_new_tokens": 8},
                   "by_language": {"max_chars": 600}},
    # every GGUF format on llama-server against the package: the audit conversation + 2 held-out, 8 tokens each
    "packaging": {"engine": {"conversations": 2, "n_tokens": 8}},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if key == "sources":  # a list: patch every entry
            out[key] = [{**source, **value[0]} for source in base[key]]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merge(base[key], value)
        else:
            out[key] = value
    return out


def network_cut() -> list[str]:
    """A prefix that runs a command in a new network namespace with loopback only (``unshare -n``, as
    root): `dvc repro` proves it needs no network. Empty where the namespace cannot be made."""
    prefix = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else []


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)




def make_project(root: Path) -> tuple[Path, dict]:
    """The project's files (not tests/) copied to ``root``, its parameters shrunk to ``TINY``, committed to a fresh git
    repository; the fetched source cache linked read-only. Returns ``(root, env)``: the environment runs the copy's
    own code and writes MLflow runs to its own ``mlflow.db``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file() and not rel.startswith("tests/"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    cache = REPO / "data/00_sources"  # the fetched packages (`make corpus`), shared read-only with the copy
    assert (cache / "manifest.json").is_file(), f"no source cache at {cache}: run `make corpus` first"
    (root / "data").mkdir(exist_ok=True)
    (root / "data/00_sources").symlink_to(cache, target_is_directory=True)
    for name, patch in TINY.items():
        path = root / "conf" / "base" / f"parameters_{name}.yml"
        params = yaml.safe_load(path.read_text())
        params[name] = merge(params[name], patch)
        path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root / "src"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "KEDRO_DISABLE_TELEMETRY": "1",
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for key, value in (("user.name", "t"), ("user.email", "t@t")):  # `dvc exp run` commits experiments too
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "tiny chain"], cwd=root, check=True)
    return root, env


def lock_outs(root: Path) -> dict[str, str]:
    """``{out path: md5}`` of every stage's outputs as ``dvc.lock`` records them (directories: their .dir hash)."""
    stages = (yaml.safe_load((root / "dvc.lock").read_text()) or {}).get("stages", {})
    return {out["path"]: out.get("md5") or out.get("hash", "") for stage in stages.values()
            for out in stage.get("outs", [])}


def stage_of_outs(root: Path) -> dict[str, str]:
    """``{out path: stage}`` from ``dvc.yaml``."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {(out if isinstance(out, str) else next(iter(out))): name for name, stage in stages.items()
            for out in stage.get("outs", [])}


# the per-step loss curves of the training stages (DVC plots)
LOSS_CURVES = {stage: f"data/08_reporting/{stage}_loss.json" for stage in ("pretrain", "sft", "align")}
