"""Model Registry against a temp sqlite MLflow store: version, aliases, lineage tags, gate refusal."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow_helpers import migrated_store

from lmforge.packaging.export import ModelCardInfo, package_model
from lmforge.packaging.gate import GateError, check_gate, parse_gate
from lmforge.packaging.registry import MAX_DESCRIPTION_CHARS, card_description, dvc_lineage, register_package
from lmforge.pipeline_registry import CHAIN as STAGES
from lmforge.pipelines.catalog_paths import catalog_path
from lmforge.pipelines.packaging.nodes import LINEAGE_ARTIFACTS

MODEL = "lmforge-chat-test"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
LINEAGE_PATHS = {name: catalog_path(dataset, PROJECT_ROOT) for name, dataset in LINEAGE_ARTIFACTS.items()}
"""What the packaging node passes: the catalog's paths of the datasets it names."""
METRICS = {"sft_pairs.perplexity_ratio": 0.7, "sft.heldout.perplexity": 209.6}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh sqlite store holding one finished run per upstream stage, tagged as LineageHooks tags them."""
    uri = migrated_store(tmp_path_factory.mktemp("mlflow").resolve() / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment_id = MlflowClient(uri).create_experiment("lmforge")
    stage_runs = {}
    for stage in ("data_processing", "tokenizer", "pretrain", "sft", "evaluation"):
        with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags={"lmforge.pipelines": stage}) as run:
            stage_runs[stage] = run.info.run_id
    yield uri, stage_runs
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def package(tiny_model_dir, tiny_tokenizer_dir, tmp_path_factory):
    return package_model(tiny_model_dir, tiny_tokenizer_dir, tmp_path_factory.mktemp("pkg") / "tiny-chat",
                         card=ModelCardInfo(model_name="tiny-chat"))


def test_register_creates_version_with_aliases_and_lineage(store, package, tmp_path):
    uri, stage_runs = store
    gate = check_gate(METRICS, parse_gate({"sft_pairs.perplexity_ratio": {"max": 1.0}}))
    lineage = {**dvc_lineage(tmp_path, LINEAGE_PATHS), "git.commit": "abc123"}
    result = register_package(package, model_name=MODEL, gate=gate, stages=STAGES, lineage=lineage, max_new_tokens=3)

    client = MlflowClient(uri)
    version = client.get_model_version(MODEL, result["version"])
    assert sorted(version.aliases) == ["candidate", "champion"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == result["version"]
    tags = version.tags
    for stage, run_id in stage_runs.items():
        assert tags[f"run_id.{stage}"] == run_id
    assert tags["run_id.packaging"] == result["run_id"] not in stage_runs.values()
    assert tags["dvc.checkpoint"].startswith("absent: no dvc.lock")  # tmp_path has none: said, not hidden
    assert tags["git.commit"] == "abc123"
    assert tags["gate.passed"] == "true"
    assert tags["gate.sft_pairs.perplexity_ratio.max"] == "0.7 vs 1"
    card = (Path(package) / "README.md").read_text(encoding="utf-8")
    assert version.description == card and "tiny-chat" in card  # the model card is the version's description

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert [i.name for i in model.metadata.get_input_schema().inputs] == ["prompt"]
    out = model.predict(pd.DataFrame({"prompt": ["Who are you?"]}))
    assert list(out.columns) == ["completion"] and len(out) == 1


def test_pyfunc_answers_as_lmforge_generation_and_loads_without_lmforge(store, package):
    """The registered model's completion is lmforge.generation's greedy answer (one stop rule: EOS + <|im_end|>,
    stop token not in the text), and the model loads and predicts in a process where lmforge cannot be imported."""
    import json
    import os
    import subprocess
    import sys

    from lmforge.generation import generate, load_model_and_tokenizer

    uri, _ = store
    gate = check_gate(METRICS, parse_gate({"sft_pairs.perplexity_ratio": {"max": 1.0}}))
    result = register_package(package, model_name=MODEL + "-gen", gate=gate, stages=STAGES, max_new_tokens=5,
                              promote=False)
    model, tokenizer = load_model_and_tokenizer(package)
    expected = [c.text for c in generate(model, tokenizer, ["Who are you?", "def add(a, b):"], max_new_tokens=5)]
    code = ("import json, sys\n"
            "sys.modules['lmforge'] = None  # the model must not need lmforge\n"
            "import mlflow, pandas as pd\n"
            f"m = mlflow.pyfunc.load_model({result['model_uri']!r})\n"
            "out = m.predict(pd.DataFrame({'prompt': ['Who are you?', 'def add(a, b):']}))\n"
            "print(json.dumps(out['completion'].tolist()))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_unpromoted_version_is_candidate_only(store, package):
    uri, _ = store
    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    gate = check_gate(METRICS, parse_gate({"sft_pairs.perplexity_ratio": {"max": 1.0}}))
    result = register_package(package, model_name=MODEL, gate=gate, stages=STAGES, promote=False, max_new_tokens=3)
    assert client.get_model_version(MODEL, result["version"]).aliases == ["candidate"]
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion


def test_gate_refusal_registers_nothing_and_leaves_no_champion(store, package):
    uri, _ = store
    client = MlflowClient(uri)
    name = "refused-model"
    gate = check_gate(METRICS, parse_gate({"sft_pairs.perplexity_ratio": {"max": 0.5}}))
    runs_before = len(client.search_runs([mlflow.get_experiment_by_name("lmforge").experiment_id]))
    with pytest.raises(GateError, match=r"sft_pairs\.perplexity_ratio = 0\.7 \(required <= 0\.5\)"):
        register_package(package, model_name=name, gate=gate, stages=STAGES, max_new_tokens=3)
    assert client.search_model_versions(f"name = '{name}'") == []
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(name, "champion")
    assert len(client.search_runs([mlflow.get_experiment_by_name("lmforge").experiment_id])) == runs_before


def test_dvc_lineage_reads_dvc_lock_and_names_what_is_missing(tmp_path):
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n"
        "  tokenizer:\n    outs:\n    - path: data/06_models/tokenizer\n      md5: aaa111.dir\n"
        "  sft:\n    outs:\n    - path: data/06_models/sft\n      md5: bbb222.dir\n")
    tags = dvc_lineage(tmp_path, LINEAGE_PATHS)
    assert tags["dvc.tokenizer"] == "data/06_models/tokenizer:aaa111.dir"
    assert tags["dvc.checkpoint"] == "data/06_models/sft:bbb222.dir"
    assert tags["dvc.data"] == "absent: data/03_primary/documents is not a DVC output in dvc.lock"


def test_card_description_is_the_whole_card_on_sqlite_and_cut_where_the_column_is_short():
    card = "# tiny-chat\n" + "".join(f"| metric {i} | {i} |\n" for i in range(600))
    assert len(card) > MAX_DESCRIPTION_CHARS
    assert card_description(card, "sqlite:////tmp/mlflow.db") == card
    assert card_description("# short card\n", "postgresql://host/db") == "# short card\n"
    cut = card_description(card, "postgresql://host/db")
    assert len(cut) <= MAX_DESCRIPTION_CHARS and cut.endswith("(cut: the whole card is README.md in the model's artifacts)")
    assert card.startswith(cut.split("\n\n(cut:")[0] + "\n")  # cut at a line end
