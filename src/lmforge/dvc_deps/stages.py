"""What a Kedro stage executes and reads (derived), and what dvc.yaml declares for it (as written).

Derived: the source files (``graph.ModuleGraph`` from the stage's pipeline package and the modules
every ``kedro run`` executes), the paths the catalog gives the pipeline's free inputs, and its
``params:`` keys by parameters file. Declared: each stage's ``deps`` (with the comment on each line,
which ``--fix`` keeps) and ``params``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmforge.dvc_deps.graph import PACKAGE, ModuleGraph

# What `kedro run` imports in every run, whatever the pipeline: settings (-> hooks -> tracking ...) and
# the registry. The catalog's dataset classes are added from conf/base/catalog.yml.
KEDRO_ROOTS = ("lmforge.settings", "lmforge.pipeline_registry")
CATALOG = "conf/base/catalog.yml"
PARAMETERS_GLOB = "conf/base/**/parameters*.yml"
KEEP_MARK = "dvc-deps: keep"
_STAGE_CMD = re.compile(r"\bkedro run\b.*--pipelines?[ =](\w+)")


@dataclass
class Needs:
    """What one stage reads or executes: source files (with the import chain that reaches each), data/conf
    paths, and params keys by parameters file."""

    sources: dict[str, list[str]] = field(default_factory=dict)  # file -> chain of modules, root first
    every_run: set[str] = field(default_factory=set)  # the sources every `kedro run` executes
    paths: list[str] = field(default_factory=list)
    params: dict[str, list[str]] = field(default_factory=dict)


def relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _catalog_classes(catalog: dict) -> set[str]:
    """``type:``/``dataset:`` values of the catalog that name ``lmforge.*`` classes."""
    found, stack = set(), [catalog]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("type", "dataset") and isinstance(value, str) and value.startswith(PACKAGE + "."):
                    found.add(value)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _catalog_paths(entry: object) -> list[str]:
    """The local paths a catalog entry reads (``filepath``/``path``, also of a wrapped ``dataset``)."""
    if not isinstance(entry, dict):
        return []
    paths = [entry[key] for key in ("filepath", "path") if isinstance(entry.get(key), str)]
    paths += _catalog_paths(entry.get("dataset"))
    return [p.rstrip("/") for p in paths if "://" not in p and "${" not in p and not os.path.isabs(p)]


def stage_sources(root: Path, pipeline: str | None) -> dict[str, list[str]]:
    """The source files (relative to ``root``) that ``kedro run --pipelines <pipeline>`` can execute,
    each with the import chain that reaches it; with ``pipeline=None``, what every ``kedro run`` executes."""
    graph = ModuleGraph(root / "src")
    roots = list(KEDRO_ROOTS)
    for cls in sorted(_catalog_classes(load_yaml(root / CATALOG))):
        roots += graph.named_module(cls)
    if pipeline is not None:
        folder = root / "src" / PACKAGE / "pipelines" / pipeline
        if not folder.is_dir():
            raise FileNotFoundError(f"no pipeline folder {relative(folder, root)}")
        roots = [f"{PACKAGE}.pipelines.{pipeline}"] + [
            ".".join(p.relative_to(root / "src").with_suffix("").parts).removesuffix(".__init__")
            for p in sorted(folder.rglob("*.py"))] + roots
    parent = graph.reach(roots)
    return dict(sorted((relative(graph.file(name), root), graph.chain(parent, name)) for name in parent))


def pipeline_inputs(root: Path, pipelines: list[str]) -> dict[str, list[str]]:
    """Kedro's free inputs of each pipeline, built in a subprocess from ``root/src``."""
    code = ("import importlib, json, sys\n"
            "print(json.dumps({n: sorted(importlib.import_module(f'lmforge.pipelines.{n}').create_pipeline()"
            ".inputs()) for n in sys.argv[1:]}))")
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "KEDRO_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *pipelines], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"building the pipelines {pipelines} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parameter_files(root: Path) -> dict[str, str]:
    """Top-level parameter key -> the conf/base parameters file that holds it."""
    owner: dict[str, str] = {}
    for path in sorted(root.glob(PARAMETERS_GLOB)):
        for key in load_yaml(path):
            owner.setdefault(str(key), relative(path, root))
    return owner


def stage_needs(root: Path, pipeline: str, inputs: list[str]) -> Needs:
    """Everything one stage needs declared: sources, ``conf/base/catalog.yml`` and its inputs' paths, params."""
    catalog, owners = load_yaml(root / CATALOG), parameter_files(root)
    needs = Needs(sources=stage_sources(root, pipeline), every_run=set(stage_sources(root, None)), paths=[CATALOG])
    for name in inputs:
        if name == "parameters":
            keys = list(owners)
        elif name.startswith("params:"):
            keys = [name.removeprefix("params:")]
        else:
            needs.paths += [p for p in _catalog_paths(catalog.get(name)) if p not in needs.paths]
            continue
        for key in keys:
            owner = owners.get(key.split(".")[0])
            if owner is None:
                raise KeyError(f"pipeline {pipeline} reads params:{key}, which no {PARAMETERS_GLOB} defines")
            needs.params.setdefault(owner, []).append(key)
    return needs


# --------------------------------------------------------------------------------------------------
# dvc.yaml as written


@dataclass
class Dep:
    path: str
    suffix: str = ""  # what followed the path on its line (spaces and the comment), kept by --fix

    @property
    def keep(self) -> bool:
        return KEEP_MARK in self.suffix


@dataclass
class Stage:
    name: str
    pipeline: str
    deps: list[Dep]
    params: dict[str, list[str]]  # parameters file -> keys


def covers(dep: str, path: str) -> bool:
    """A dep covers itself and, as a directory, every file under it."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def key_covers(entry: str, key: str) -> bool:
    """A params entry covers its key and every key below it (``sft`` covers ``sft.identity``)."""
    return key == entry or key.startswith(entry + ".")


def stage_lines(lines: list[str], stage: str) -> tuple[int, int]:
    """The line range of ``stage``'s body in dvc.yaml (after its ``  <stage>:`` line)."""
    heads = [i for i, line in enumerate(lines) if line.rstrip() == f"  {stage}:"]
    if len(heads) != 1:  # the layout `dvc stage add` writes: 2-space stages, 4-space keys, 6-space items
        raise ValueError(f"dvc.yaml: expected one line '  {stage}:' (2-space indentation), found {len(heads)}")
    start = heads[0] + 1
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("   ")):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return start, end


def block(lines: list[str], start: int, end: int, key: str) -> tuple[int, int] | None:
    """The range of the item lines under ``    <key>:`` within [start, end), or None without that key."""
    head = next((i for i in range(start, end) if lines[i].rstrip() == f"    {key}:"), None)
    if head is None:
        return None
    stop = head + 1
    while stop < end and lines[stop].startswith("     "):
        stop += 1
    return head + 1, stop


def read_stages(dvc_file: Path) -> list[Stage]:
    """The dvc.yaml stages that run one Kedro pipeline, with their deps (and comments) and params."""
    data, lines = load_yaml(dvc_file), dvc_file.read_text(encoding="utf-8").splitlines()
    stages = []
    for name, body in (data.get("stages") or {}).items():
        match = _STAGE_CMD.search(str(body.get("cmd", "")))
        if not match:
            continue
        suffixes = {}
        start, end = stage_lines(lines, name)
        if (items := block(lines, start, end, "deps")) is not None:
            for line in lines[items[0]:items[1]]:
                if item := re.match(r"\s*- (\S+)(.*)$", line):
                    suffixes[item.group(1)] = item.group(2)
        deps = [Dep(str(d), suffixes.get(str(d), "")) for d in body.get("deps") or []]
        params: dict[str, list[str]] = {}
        for entry in body.get("params") or []:
            pairs = entry.items() if isinstance(entry, dict) else [("params.yaml", [entry])]
            for file, keys in pairs:
                params.setdefault(str(file), []).extend(str(k) for k in keys or [])
        stages.append(Stage(name, match.group(1), deps, params))
    return stages
