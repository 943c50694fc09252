"""The verdict per stage (what dvc.yaml lacks or declares for nothing), the report, ``--fix`` and the CLI."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from lmforge.dvc_deps.graph import PACKAGE
from lmforge.dvc_deps.stages import (
    KEEP_MARK,
    Dep,
    Needs,
    Stage,
    block,
    covers,
    key_covers,
    pipeline_inputs,
    read_stages,
    relative,
    stage_lines,
    stage_needs,
)

SOURCES = "src/"  # deps derived exactly; data and conf deps may go beyond what the catalog says
KNOWN = ("src/", "conf/", "data/")  # deps elsewhere are left where they are, last
EVERY_RUN_COMMENT = "   # from here on: what every `kedro run` executes"
DEPS_INDENT, PARAMS_KEY_INDENT = " " * 6, " " * 10


@dataclass
class Verdict:
    """One stage: what dvc.yaml lacks, what it declares for nothing, and the blocks --fix would write."""

    stage: Stage
    needs: Needs
    missing_sources: list[str]
    missing_paths: list[str]
    missing_params: dict[str, list[str]]
    unused_deps: list[str]
    unused_params: dict[str, list[str]]
    deps: list[Dep]  # the fixed deps block
    params: dict[str, list[str]]  # the fixed params block
    broad: dict[str, int]  # source dep -> how many .py files under it the stage cannot execute (a warning)

    @property
    def ok(self) -> bool:
        return not (self.missing_sources or self.missing_paths or self.missing_params or self.unused_deps
                    or self.unused_params)


def _python_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".py" else []
    return [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]


def source_entries(needed: set[str], root: Path) -> list[str]:
    """Readable deps covering the source files ``needed``: a package directory when the stage executes more
    than half of its .py files, else the files one by one. The top package is never collapsed."""
    out: list[str] = []

    def visit(folder: Path) -> None:
        rel = relative(folder, root)
        inside = {f for f in needed if covers(rel, f)}
        if not inside:
            return
        all_py = [relative(p, root) for p in _python_files(folder)]
        used = sum(1 for p in all_py if p in needed)
        if folder != root / "src" / PACKAGE and used * 2 > len(all_py):
            out.append(rel)
            return
        out.extend(sorted(f for f in inside if Path(f).parent == Path(rel)))
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
            visit(sub)

    visit(root / "src" / PACKAGE)
    return out


def _comment_for(path: str, old: list[Dep]) -> str:
    """The comment the dep ``path`` had; for a new directory dep, the comments of the file deps it replaces
    (``   # a.py: why; b.py: why``); for a new file dep, its part of such a directory comment."""
    if same := [d.suffix for d in old if d.path == path]:
        return same[0]
    merged = [f"{d.path.removeprefix(path + '/')}: {_text(d.suffix)}" for d in old
              if covers(path, d.path) and _text(d.suffix) and d.suffix != EVERY_RUN_COMMENT]
    if merged:
        return f"   # {'; '.join(merged)}"
    for d in old:
        if covers(d.path, path) and d.path != path:
            parts = dict(part.split(": ", 1) for part in _text(d.suffix).split("; ") if ": " in part)
            if why := parts.get(path.removeprefix(d.path + "/")):
                return f"   # {why}"
    return ""


def _text(suffix: str) -> str:
    """The comment of a dep line's suffix, without its ``#``."""
    return suffix.strip().removeprefix("#").strip() if suffix.strip().startswith("#") else ""


def _judge_params(stage: Stage, needs: Needs) -> tuple[dict, dict, dict]:
    """(missing, unused, fixed) params, each parameters file -> keys."""
    missing: dict[str, list[str]] = {}
    unused: dict[str, list[str]] = {}
    fixed: dict[str, list[str]] = {}
    for file in [*stage.params, *(f for f in needs.params if f not in stage.params)]:
        declared, needed = stage.params.get(file, []), needs.params.get(file, [])
        lacking = [k for k in needed if not any(key_covers(e, k) for e in declared)]
        kept = [e for e in declared if any(key_covers(e, k) for k in needed)]
        if lacking:
            missing[file] = lacking
        if extra := [e for e in declared if e not in kept]:
            unused[file] = extra
        if keys := kept + [k for k in lacking if k not in kept]:
            fixed[file] = keys
    return missing, unused, fixed


def judge(root: Path, stage: Stage, needs: Needs) -> Verdict:
    declared = [d.path for d in stage.deps]
    missing_sources = [f for f in needs.sources if not any(covers(d, f) for d in declared)]
    missing_paths = [p for p in needs.paths if not any(covers(d, p) for d in declared)]
    unused = [d.path for d in stage.deps if d.path.startswith(SOURCES) and not d.keep
              and not any(covers(d.path, f) for f in needs.sources)]
    missing_params, unused_params, fixed_params = _judge_params(stage, needs)

    # The fixed deps: data, sources, conf, others. Source deps are derived afresh (so a refactor that shrinks
    # what a stage imports shrinks its deps too), the stage's own first, then what every `kedro run` executes
    # (the first of those with a comment saying so); a line that stays keeps its comment; data and conf deps
    # keep their order, new ones go last.
    sources = [Dep(p, _comment_for(p, stage.deps)) for p in source_entries(set(needs.sources), root)]
    sources += [d for d in stage.deps if d.path.startswith(SOURCES) and d.keep
                and not any(covers(s.path, d.path) for s in sources)]
    common = [d for d in sources if (covered := [f for f in needs.sources if covers(d.path, f)])
              and all(f in needs.every_run for f in covered)]
    own = sorted((d for d in sources if d not in common), key=lambda d: d.path)
    common = sorted((Dep(d.path, "" if d.suffix == EVERY_RUN_COMMENT else d.suffix) for d in common),
                    key=lambda d: d.path)
    if common and not common[0].suffix:
        common[0] = Dep(common[0].path, EVERY_RUN_COMMENT)
    rest = [d for d in stage.deps if not d.path.startswith(SOURCES) and d.path not in unused]
    rest += [Dep(p) for p in missing_paths]
    deps = ([d for d in rest if d.path.startswith("data/")] + own + common
            + [d for d in rest if d.path.startswith("conf/")] + [d for d in rest if not d.path.startswith(KNOWN)])
    derived = {d.path for d in sources}
    broad = {}
    for d in stage.deps:
        if d.path.startswith(SOURCES) and d.path not in derived and d.path not in unused and not d.keep:
            if extra := [p for p in _python_files(root / d.path) if relative(p, root) not in needs.sources]:
                broad[d.path] = len(extra)
    return Verdict(stage, needs, missing_sources, missing_paths, missing_params, unused, unused_params, deps,
                   fixed_params, broad)



def check(root: Path, dvc_file: Path | None = None) -> list[Verdict]:
    """Judge every Kedro stage of ``dvc_file`` (default ``root/dvc.yaml``) against the code under ``root``."""
    root = root.resolve()
    stages = read_stages(dvc_file or root / "dvc.yaml")
    inputs = pipeline_inputs(root, [s.pipeline for s in stages]) if stages else {}
    return [judge(root, s, stage_needs(root, s.pipeline, inputs[s.pipeline])) for s in stages]


def deps_lines(deps: list[Dep]) -> list[str]:
    return [f"{DEPS_INDENT}- {d.path}{d.suffix}" for d in deps]


def params_lines(params: dict[str, list[str]]) -> list[str]:
    out = []
    for file, keys in params.items():
        out.append(f"{DEPS_INDENT}- {file}:")
        out += [f"{PARAMS_KEY_INDENT}- {k}" for k in keys]
    return out


def report(verdicts: list[Verdict]) -> str:
    """The --check message: per failing stage, what is missing (with why) and the lines to add or remove."""
    out = []
    for v in verdicts:
        if v.ok:
            continue
        out.append(f"stage {v.stage.name} (kedro run --pipelines {v.stage.pipeline}):")
        if v.missing_sources or v.missing_paths:
            out.append("  deps do not cover what the stage executes or reads:")
            out += [f"    {f}   (reached by {' -> '.join(v.needs.sources[f])})" for f in v.missing_sources]
            out += [f"    {p}   (a catalog input or conf file of the pipeline)" for p in v.missing_paths]
            missing = v.missing_sources + v.missing_paths
            out.append("  add under `deps:`:")
            out += deps_lines([d for d in v.deps if any(covers(d.path, m) for m in missing)])
        if v.missing_params:
            out.append("  params the pipeline reads that `params:` does not cover; add:")
            out += params_lines(v.missing_params)
        if v.unused_deps:
            out.append(f"  deps that cover nothing the stage uses (remove them, or mark the line `# {KEEP_MARK}`"
                       " with the reason):")
            out += deps_lines([Dep(p) for p in v.unused_deps])
        if v.unused_params:
            out.append("  params keys the pipeline does not read (remove them):")
            out += params_lines(v.unused_params)
    return "\n".join(out)


def warnings(verdicts: list[Verdict]) -> str:
    """Source deps wider than the stage needs: correct (nothing is missed), but they rerun it for nothing."""
    return "\n".join(f"warning: stage {v.stage.name}: {dep} covers {n} .py file(s) the stage cannot execute"
                     " (`--fix` narrows it)" for v in verdicts for dep, n in v.broad.items())


def fix(dvc_file: Path, verdicts: list[Verdict]) -> list[str]:
    """Rewrite every stage's deps and params blocks to the derived ones; the names of the stages that changed."""
    text = dvc_file.read_text(encoding="utf-8")
    lines = text.splitlines()
    changed = []
    for v in verdicts:
        before = list(lines)
        for key, new in (("params", params_lines(v.params)), ("deps", deps_lines(v.deps))):
            start, end = stage_lines(lines, v.stage.name)
            items = block(lines, start, end, key)
            if items is None:  # no such key yet: insert it after the cmd line
                at = next(i for i in range(start, end) if lines[i].startswith("    cmd:")) + 1
                lines[at:at] = [f"    {key}:"]
                items = (at + 1, at + 1)
            lines[items[0]:items[1]] = new
        if lines != before:
            changed.append(v.stage.name)
    if changed:
        dvc_file.write_text("\n".join(lines) + ("\n" if text.endswith("\n") else ""), encoding="utf-8")
    return changed


def _say(text: str) -> None:
    print(text)  # noqa: T201 - this command's output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmforge.dvc_deps",
                                     description="Check (or fix) that dvc.yaml's deps cover what each stage runs.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail (exit 1) when dvc.yaml drifted (the default)")
    mode.add_argument("--fix", action="store_true", help="rewrite every stage's deps/params blocks as derived")
    mode.add_argument("--print", action="store_true", help="print every stage's derived deps/params blocks")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root (default: the current folder)")
    parser.add_argument("--dvc-file", type=Path, default=None, help="default: <root>/dvc.yaml")
    args = parser.parse_args(argv)
    dvc_file = args.dvc_file or args.root / "dvc.yaml"
    verdicts = check(args.root, dvc_file)
    if args.print:
        for v in verdicts:
            _say("\n".join([f"  {v.stage.name}:", "    deps:", *deps_lines(v.deps), "    params:",
                            *params_lines(v.params)]))
        return 0
    if args.fix:
        changed = fix(dvc_file, verdicts)
        _say(f"{dvc_file}: rewrote the deps/params of {', '.join(changed)}" if changed else f"{dvc_file}: as derived")
        return 0
    if warned := warnings(verdicts):
        _say(warned)
    if drifted := [v.stage.name for v in verdicts if not v.ok]:
        _say(f"{dvc_file}: deps of {', '.join(drifted)} drifted from the code (`python -m lmforge.dvc_deps --fix`"
             " rewrites them)\n" + report(verdicts))
        return 1
    _say(f"{dvc_file}: the deps and params of {len(verdicts)} stages cover what they execute and read")
    return 0
