"""The whole chain through `dvc repro`, on real parts, on a tiny configuration.

The project is copied into a fresh git repository under tmp_path and its parameter files are shrunk
(the same edit `dvc exp run -S` would make), then:

1. `kedro run --pipeline sft` / `--pipelines sft` with nothing produced exits non-zero with one line;
2. `dvc repro` runs the six stages (DeepSpeed on 2 gloo processes) and leaves every artifact, six
   metrics files and six MLflow runs with params, per-step losses and lineage tags;
3. the packaged model loads with transformers Auto classes and generates;
4. a second `dvc repro` reruns nothing, in under 5 s;
5. changing one tokenizer parameter reruns exactly tokenizer and everything downstream.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ["data_processing", "tokenizer", "pretrain", "sft", "evaluation", "packaging"]

TINY = {
    "data_processing": {"sources": [{"max_files": 120}], "shard_size": 50, "validation": {"min_records": 20}},
    "tokenizer": {"train": {"vocab_size": 512}, "model_max_length": 256,
                  "shards": {"seq_len": 64, "validation_fraction": 0.1}},
    "pretrain": {"model": {"preset": "debug"}, "train": {"max_steps": 30, "warmup_steps": 3, "lr": 1.0e-2}},
    "sft": {"data": {"max_pairs": 400}, "identity": {"repeat": 2}, "max_length": 256,
            "train": {"max_steps": 30, "warmup_steps": 3, "lr": 3.0e-3}},
    "evaluation": {"max_heldout_blocks": 16, "max_sft_examples": 48, "max_example_tokens": 256,
                   "generation": {"max_new_tokens": 8, "prompts": ["def add(a, b):", "Who are you?"]}},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if key == "sources":  # a list: patch its first entry
            out[key] = [{**base[key][0], **value[0]}, *base[key][1:]]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merge(base[key], value)
        else:
            out[key] = value
    return out


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("chain") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file() and not rel.startswith("tests/"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    for name, patch in TINY.items():
        path = root / "conf" / "base" / f"parameters_{name}.yml"
        params = yaml.safe_load(path.read_text())
        params[name] = merge(params[name], patch)
        path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root / "src"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "KEDRO_DISABLE_TELEMETRY": "1",
           "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny chain"], cwd=root, check=True)
    return root, env


@pytest.fixture(scope="module")
def chain(project) -> tuple[Path, dict, subprocess.CompletedProcess, dict]:
    root, env = project
    missing = {flag: run([str(BIN / "kedro"), "run", flag, "sft"], root, env, timeout=300)
               for flag in ("--pipeline", "--pipelines")}
    started = time.perf_counter()
    repro = run([str(BIN / "dvc"), "repro"], root, env, timeout=1500)
    print(f"dvc repro of the tiny chain: {time.perf_counter() - started:.0f} s")
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-6000:]
    return root, env, repro, missing


def test_missing_inputs_stop_with_one_line(chain):
    _, _, _, missing = chain
    for flag, proc in missing.items():
        assert proc.returncode != 0, flag
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("lmforge: 'clean_documents'"), proc.stderr[-2000:]
        assert "kedro run --pipelines data_processing,tokenizer,pretrain" in last
        assert "Traceback" not in proc.stderr


def test_repro_runs_every_stage_and_leaves_artifacts(chain):
    root, _, repro, _ = chain
    assert ran_stages(repro.stdout) == STAGES
    for rel in ["data/01_raw/corpus", "data/03_primary/documents", "data/02_intermediate/quarantine.jsonl",
                "data/08_reporting/data_docs/index.html", "data/06_models/tokenizer/tokenizer.model",
                "data/06_models/tokenizer/tokenizer.json", "data/05_model_input/tokens/index.json",
                "data/06_models/pretrain/model.safetensors", "data/06_models/sft/model.safetensors",
                "data/07_model_output/lmforge-chat/README.md", "data/08_reporting/pretrain_loss.json",
                "data/08_reporting/evaluation_report.html", "data/08_reporting/seed_metrics.json"]:
        assert (root / rel).exists(), rel
    metrics = {s: json.loads((root / "data/08_reporting" / f"{s}.json").read_text()) for s in STAGES}
    dp = metrics["data_processing"]
    assert dp["records_in"] == dp["records_out"] + sum(dp["dropped"].values())
    assert metrics["tokenizer"]["unknown_tokens"] == 0
    for stage in ("pretrain", "sft"):
        assert metrics[stage]["world_size"] == 2
        assert metrics[stage]["final_loss"] < metrics[stage]["initial_loss"], stage
    ev = metrics["evaluation"]
    assert ev["sft.sft_pairs.perplexity"] < ev["base.sft_pairs.perplexity"]
    assert metrics["packaging"]["loads"] is True


def test_mlflow_has_one_run_per_stage(chain):
    from mlflow.tracking import MlflowClient

    root, env, _, _ = chain
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("lmforge")
    runs = client.search_runs([experiment.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(by_name) == sorted(STAGES)
    for run_ in runs:
        assert run_.info.status == "FINISHED"
        assert run_.data.tags.get("git.commit", "unknown") != "unknown"
        assert run_.data.params, run_.info.run_name
    assert by_name["pretrain"].data.params["pretrain.train.max_steps"] == "30"
    loss_history = client.get_metric_history(by_name["pretrain"].info.run_id, "pretrain.loss")
    assert len(loss_history) == 30 and loss_history[-1].value < loss_history[0].value
    assert "evaluation.sft_pairs.perplexity_ratio" in by_name["evaluation"].data.metrics
    assert by_name["evaluation"].data.metrics["evaluation.ops.pretrain.runs"] == 1  # read back from the pretrain run
    assert [a.path for a in client.list_artifacts(by_name["evaluation"].info.run_id, "reports")] == [
        "reports/evaluation_report.html"]
    assert any(k.startswith("dvc.") for k in by_name["tokenizer"].data.tags)  # hashes of its inputs
    assert any(k.startswith("system/") for k in by_name["pretrain"].data.metrics)


def test_packaged_model_loads_and_generates(chain):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = chain[0]
    package = root / "data/07_model_output/lmforge-chat"
    model = AutoModelForCausalLM.from_pretrained(package)
    tokenizer = AutoTokenizer.from_pretrained(package)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "def add(a, b):"}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_compare_runs_notebook_executes_on_the_chain(chain, monkeypatch):
    """notebooks/compare_runs.ipynb reads this chain's MLflow runs and DVC metrics and draws them (~15 s)."""
    import nbformat
    from nbclient import NotebookClient

    root, env, _, _ = chain
    for name in ("MLFLOW_TRACKING_URI", "PATH", "DVC_NO_ANALYTICS"):  # the kernel inherits this environment
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("LMFORGE_PROJECT_DIR", str(root))
    notebook = nbformat.read(root / "notebooks/compare_runs.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs)
    text = "\n".join(out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs)
    assert "pretrain.loss" in text and "workspace (DVC)" not in text  # curves from the MLflow histories
    assert "sft_pairs.perplexity_ratio" in text  # evaluation scores of the evaluation run


def test_noop_repro_is_fast_and_param_change_reruns_downstream_only(chain):
    root, env, _, _ = chain
    started = time.perf_counter()
    noop = run([str(BIN / "dvc"), "repro"], root, env)
    elapsed = time.perf_counter() - started
    assert noop.returncode == 0 and ran_stages(noop.stdout) == [], noop.stdout
    assert elapsed < 5, f"no-op dvc repro took {elapsed:.1f} s"

    path = root / "conf/base/parameters_tokenizer.yml"
    params = yaml.safe_load(path.read_text())
    params["tokenizer"]["train"]["vocab_size"] = 500
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    rerun = run([str(BIN / "dvc"), "repro"], root, env, timeout=1500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert ran_stages(rerun.stdout) == STAGES[1:]
    assert json.loads((root / "data/08_reporting/tokenizer.json").read_text())["vocab_size"] == 500
