"""dvc.yaml's deps are derived from the code (lmforge.dvc_deps) and DVC acts on them.

The check passes on this repository; it fails, naming the stage and the file, when a dep is removed;
the import graph sees lazy, relative and launched-worker imports; and in a throwaway copy of the
project, editing a module only the tokenizer stage executes makes `dvc status` report the tokenizer
stage and, once it has rerun, only the stages downstream of it (no stage is really run).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lmforge.dvc_deps.stages as dvc_stages
from lmforge.dvc_deps import ModuleGraph, check, main, report

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


@pytest.fixture(scope="module", autouse=True)
def _one_analysis_per_tree():
    """Each ``check``/``--fix`` below judges the same code: the import graph of a stage (``stage_sources``, which
    parses every module under src/: ~0.5 s, 14 times per check), the pipelines' free inputs (a subprocess) and
    the parsed conf/ YAML files (pure-Python PyYAML: 57 loads, ~3 s per check) are computed once per (root,
    stage) or per file content and shared by the module's ~11 checks; what is judged (dvc.yaml) still varies
    per test, and the first check computes everything for real. (Measured on 2 shared, busy cores: the 8 tests
    other than the DVC round trip 144 s -> 8 s.) The synthetic graph is built on its own tree, uncached; the DVC
    round trip takes the repository's stage sources before it edits its copy."""
    import copy
    import importlib

    check_module = importlib.import_module("lmforge.dvc_deps.check")  # the package exports a function `check`
    stages_module = importlib.import_module("lmforge.dvc_deps.stages")

    sources, inputs, texts = {}, {}, {}
    real_sources, real_inputs, real_yaml = (stages_module.stage_sources, check_module.pipeline_inputs,
                                            stages_module.load_yaml)

    def cached_yaml(path):  # keyed by content: the tests write their own dvc.yaml variants
        key = (Path(path).resolve(), Path(path).read_bytes())
        if key not in texts:
            texts[key] = real_yaml(path)
        return copy.deepcopy(texts[key])

    def cached_sources(root, pipeline):
        key = (Path(root).resolve(), pipeline)
        if key not in sources:
            sources[key] = real_sources(root, pipeline)
        return copy.deepcopy(sources[key])

    def cached_inputs(root, pipelines):
        key = (Path(root).resolve(), tuple(pipelines))
        if key not in inputs:
            inputs[key] = real_inputs(root, pipelines)
        return copy.deepcopy(inputs[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stages_module, "stage_sources", cached_sources)
        mp.setattr(check_module, "pipeline_inputs", cached_inputs)
        mp.setattr(stages_module, "load_yaml", cached_yaml)
        yield


def stage_names(dvc_file: Path) -> list[str]:
    return list(yaml.safe_load(dvc_file.read_text())["stages"])


def drop_line(text: str, stage: str, line: str) -> str:
    """``text`` (a dvc.yaml) without ``line`` in ``stage``'s block."""
    head = text.index(f"\n  {stage}:\n")
    at = text.index(f"\n{line}\n", head)
    return text[:at] + text[at + len(line) + 1:]


# --------------------------------------------------------------------------------------------------
# the check on the real repository


def test_check_passes_on_the_repository(capsys):
    verdicts = check(REPO)
    assert [v.stage.name for v in verdicts] == stage_names(REPO / "dvc.yaml")
    assert all(v.ok for v in verdicts), report(verdicts)
    assert main(["--check", "--root", str(REPO)]) == 0
    assert "cover what they execute" in capsys.readouterr().out


def test_check_fails_on_a_removed_dep_and_names_the_stage_and_file(tmp_path, capsys):
    dvc_file = tmp_path / "dvc.yaml"
    original = (REPO / "dvc.yaml").read_text()
    dvc_file.write_text(drop_line(original, "tokenizer", "      - src/lmforge/pipelines/tokenizer"))

    assert main(["--check", "--root", str(REPO), "--dvc-file", str(dvc_file)]) == 1
    out = capsys.readouterr().out
    assert "stage tokenizer (kedro run --pipelines tokenizer)" in out
    assert "src/lmforge/pipelines/tokenizer/nodes.py" in out
    assert "add under `deps:`:\n      - src/lmforge/pipelines/tokenizer\n" in out  # the exact YAML line
    assert "stage data_processing" not in out

    # --fix puts the line back: the result is what --fix makes of the untouched file, comments included
    untouched = tmp_path / "untouched.yaml"
    untouched.write_text(original)
    for path in (dvc_file, untouched):
        assert main(["--fix", "--root", str(REPO), "--dvc-file", str(path)]) == 0
    assert "      - src/lmforge/pipelines/tokenizer\n" in dvc_file.read_text()
    assert dvc_file.read_text() == untouched.read_text()
    assert main(["--check", "--root", str(REPO), "--dvc-file", str(dvc_file)]) == 0


def test_a_dep_wider_than_the_stage_needs_is_a_warning_that_fix_narrows(tmp_path, capsys):
    dvc_file = tmp_path / "dvc.yaml"
    original = (REPO / "dvc.yaml").read_text()
    wide = drop_line(original, "tokenizer", "      - src/lmforge/pipelines/tokenizer")
    head = "\n  tokenizer:\n    cmd: kedro run --pipelines tokenizer\n    deps:\n"
    wide = wide.replace(head, head + "      - src/lmforge/pipelines\n")
    dvc_file.write_text(wide)
    assert main(["--check", "--root", str(REPO), "--dvc-file", str(dvc_file)]) == 0  # nothing is missed
    assert "warning: stage tokenizer: src/lmforge/pipelines covers" in capsys.readouterr().out
    assert main(["--fix", "--root", str(REPO), "--dvc-file", str(dvc_file)]) == 0
    assert "      - src/lmforge/pipelines\n" not in dvc_file.read_text()
    assert "      - src/lmforge/pipelines/tokenizer\n" in dvc_file.read_text()


def test_check_fails_on_a_stale_dep_unless_marked_kept(tmp_path, capsys):
    dvc_file = tmp_path / "dvc.yaml"
    original = (REPO / "dvc.yaml").read_text()
    stale = original.replace("      - src/lmforge/pipelines/data_processing\n",
                             "      - src/lmforge/pipelines/data_processing\n      - src/lmforge/results.py\n", 1)
    dvc_file.write_text(stale)
    assert main(["--root", str(REPO), "--dvc-file", str(dvc_file)]) == 1
    assert "cover nothing the stage uses" in capsys.readouterr().out

    dvc_file.write_text(stale.replace("- src/lmforge/results.py", "- src/lmforge/results.py   # dvc-deps: keep (why)"))
    assert main(["--root", str(REPO), "--dvc-file", str(dvc_file)]) == 0


def test_check_fails_on_a_params_key_the_pipeline_reads(tmp_path, capsys):
    dvc_file = tmp_path / "dvc.yaml"
    original = (REPO / "dvc.yaml").read_text()
    dvc_file.write_text(drop_line(drop_line(original, "evaluation", "          - sft"),
                                  "evaluation", "      - conf/base/parameters_sft.yml:"))
    assert main(["--root", str(REPO), "--dvc-file", str(dvc_file)]) == 1
    out = capsys.readouterr().out
    assert "stage evaluation" in out and "      - conf/base/parameters_sft.yml:\n          - sft" in out


def test_what_every_kedro_run_executes_is_a_dep_of_every_stage():
    every_run = set(dvc_stages.stage_sources(REPO, None))
    assert {"src/lmforge/settings.py", "src/lmforge/hooks.py", "src/lmforge/pipeline_registry.py",
            "src/lmforge/pipelines/datasets.py"} <= every_run  # settings -> hooks; the catalog's dataset classes
    for stage in stage_names(REPO / "dvc.yaml"):
        assert every_run <= set(dvc_stages.stage_sources(REPO, stage))


def test_training_stages_reach_the_worker_processes_they_launch():
    # training/launch.py builds `python -m lmforge.training.<kind>` from an f-string: no import names the worker
    launched = ModuleGraph(REPO / "src").edges("lmforge.training.launch")
    assert {"lmforge.training.pretrain", "lmforge.training.sft"} <= launched
    for stage in ("pretrain", "sft"):
        chain = dvc_stages.stage_sources(REPO, stage)[f"src/lmforge/training/{stage}.py"]
        assert chain[0].startswith(f"lmforge.pipelines.{stage}")


# --------------------------------------------------------------------------------------------------
# the import graph on a tiny synthetic package


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_graph_follows_lazy_relative_and_launched_imports(tmp_path):
    write(tmp_path / "src", {
        "lmforge/__init__.py": "",
        "lmforge/entry.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from lmforge import typing_only\n"
            "def run(kind):\n"
            "    from lmforge.lazy import helper\n"          # a lazy import inside a function
            "    from .sub import leaf\n"                      # relative; `leaf` is a submodule
            "    cmd = ['-m', f'lmforge.workers.{kind}']\n"   # a launched worker, named by an f-string
            "    cls = 'lmforge.datasets.Thing'\n"             # a class path
            "    return helper, leaf, cmd, cls\n"),
        "lmforge/lazy.py": "def helper():\n    import lmforge.deep.inner\n",
        "lmforge/deep/__init__.py": "", "lmforge/deep/inner.py": "",
        "lmforge/sub/__init__.py": "", "lmforge/sub/leaf.py": "", "lmforge/sub/unused.py": "",
        "lmforge/workers/__init__.py": "",
        "lmforge/workers/train.py": "import lmforge.worker_dep\nif __name__ == '__main__':\n    pass\n",
        "lmforge/workers/shared.py": "",  # not runnable: not a launch target
        "lmforge/worker_dep.py": "", "lmforge/datasets.py": "", "lmforge/typing_only.py": "",
        "lmforge/unrelated.py": "",
    })
    graph = ModuleGraph(tmp_path / "src")
    reached = graph.reach(["lmforge.entry"])
    assert set(reached) == {"lmforge", "lmforge.entry", "lmforge.lazy", "lmforge.deep", "lmforge.deep.inner",
                            "lmforge.sub", "lmforge.sub.leaf", "lmforge.workers", "lmforge.workers.train",
                            "lmforge.worker_dep", "lmforge.datasets"}
    assert graph.chain(reached, "lmforge.deep.inner") == ["lmforge.entry", "lmforge.lazy", "lmforge.deep.inner"]


# --------------------------------------------------------------------------------------------------
# end to end: DVC reruns the tokenizer stage (and, after it, its downstream) when tokenizer-only code changes


def dvc(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd / "src")}
    proc = subprocess.run([str(DVC), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def fake_outputs(root: Path, stage: str | None, content: str) -> None:
    """Small placeholders for the outputs of ``stage`` (every stage when None): a file, or a folder with one file."""
    for name, body in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items():
        if stage not in (None, name):
            continue
        for entry in [o for key in ("outs", "metrics", "plots") for o in body.get(key, [])]:
            path = root / (next(iter(entry)) if isinstance(entry, dict) else entry)
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"placeholder": content}))
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder.txt").write_text(content)


def fake_external_inputs(root: Path) -> None:
    """Placeholders for the data deps no stage produces (the fetched source cache's manifest)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    outs = {next(iter(o)) if isinstance(o, dict) else o
            for body in stages.values() for key in ("outs", "metrics", "plots") for o in body.get(key, [])}
    for body in stages.values():
        for dep in body.get("deps", []):
            if dep.startswith("data/") and not any(dep == o or dep.startswith(o + "/") for o in outs):
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
                (root / dep).write_text("{}")


def change_a_function(path: Path) -> None:
    """Add a statement at the end of the first function of ``path`` (still valid Python)."""
    text = path.read_text()
    func = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    indent = " " * func.body[-1].col_offset
    lines = text.splitlines(keepends=True)
    lines.insert(func.end_lineno, f"{indent}_changed_by_test = True  # noqa\n")
    path.write_text("".join(lines))
    ast.parse(path.read_text())


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed next to this interpreter")
def test_dvc_status_reports_the_tokenizer_stage_after_a_tokenizer_only_change(tmp_path):
    root = tmp_path / "project"
    for rel in ("src", "conf"):
        shutil.copytree(REPO / rel, root / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for rel in ("dvc.yaml", "pyproject.toml", ".dvcignore"):
        shutil.copy2(REPO / rel, root / rel)
    stages = stage_names(root / "dvc.yaml")

    # Only the tokenizer stage executes these files (computed, not remembered); prefer library code to the node.
    # (computed on the repository: the copy's src/ and conf/ are byte for byte the same until it is edited below,
    # and the module's other tests have usually computed them already: 7 import-graph builds fewer)
    sources = {stage: set(dvc_stages.stage_sources(REPO, stage)) for stage in stages}
    only = sorted(sources["tokenizer"].difference(*(files for s, files in sources.items() if s != "tokenizer")))
    only = [f for f in only if not f.endswith("__init__.py")]
    assert only, "no source file is executed by the tokenizer stage alone"
    target = min(only, key=lambda f: ("/pipelines/" in f, not f.endswith("nodes.py"), f))

    # Every stage up to date without running one: placeholder outputs, committed to dvc.lock.
    fake_outputs(root, None, "first run")
    fake_external_inputs(root)
    dvc(["init", "-q", "--no-scm"], root)
    dvc(["commit", "-f", "-q"], root)
    assert json.loads(dvc(["status", "--json"], root)) == {}

    change_a_function(root / target)
    status = json.loads(dvc(["status", "--json"], root))
    assert list(status) == ["tokenizer"], status
    changed = status["tokenizer"][0]["changed deps"]
    assert any(target == dep or target.startswith(dep + "/") for dep in changed), (target, changed)
    dry = dvc(["repro", "--dry"], root)
    assert re.findall(r"Running stage '(\w+)'", dry) == ["tokenizer"], dry
    assert "Stage 'data_processing' didn't change" in dry

    # The tokenizer reruns (simulated: new outputs, committed); now exactly its downstream stages are stale.
    fake_outputs(root, "tokenizer", "after the change")
    dvc(["commit", "-f", "-q", "tokenizer"], root)
    downstream = set(json.loads(dvc(["status", "--json"], root)))
    assert downstream == set(stages[stages.index("tokenizer") + 1:]) == {"pretrain", "sft", "align", "evaluation",
                                                                           "packaging"}
