"""DVC deps derived from the code, not remembered: check (and fix) that dvc.yaml covers what each stage runs.

``dvc repro`` reruns a stage only when one of its declared deps changed, so a source file a stage
executes but does not declare is a stale-artifact bug waiting to happen: edit it, and DVC calls the
old outputs up to date. This tool derives, for every stage whose command is
``kedro run --pipelines <name>``, what the stage can read and execute, and compares it with dvc.yaml:

- **source files**: the transitive closure, over ``lmforge.*`` modules, of the imports of
  ``src/lmforge/pipelines/<name>/`` and of the modules every ``kedro run`` executes
  (``lmforge.settings`` -> ``hooks`` -> ..., ``lmforge.pipeline_registry``, and the ``lmforge.*``
  dataset classes that ``conf/base/catalog.yml`` names). Every ``import``/``from ... import`` anywhere
  in a module counts, including those inside function bodies (the heavy ones are lazy) and relative
  ones; ``from pkg import name`` follows ``pkg.name`` when it is a module; importing ``a.b.c`` also
  executes ``a/__init__.py`` and ``a/b/__init__.py``. Imports under ``if TYPE_CHECKING:`` never run
  and are skipped. Worker processes count too: a string literal naming a module (``"lmforge.x.y"``,
  or ``"lmforge.x.y.Class"``) is an edge to it, and an f-string (or ``"..." + x``) with a constant
  prefix such as ``f"lmforge.training.{kind}"`` (how ``training/launch.py`` builds
  ``python -m lmforge.training.pretrain``/``sft``) is an edge to every *runnable* module of that
  package whose name fits the prefix (one with an ``if __name__ == "__main__":`` block).
- **data and conf**: ``conf/base/catalog.yml`` (Kedro reads it on every run) and the paths
  (``filepath``/``path``) the catalog gives the pipeline's free inputs, e.g. ``data/06_models/tokenizer``
  or ``conf/base/deepspeed`` (the ``deepspeed_templates`` input of the training stages).
- **params**: every ``params:<key>`` input of the pipeline must be covered by a ``params:`` entry of
  the stage (``sft`` covers ``sft.identity``) in the ``conf/base/parameters*.yml`` file holding its
  top-level key. The pipeline is built in a subprocess (``create_pipeline().inputs()``), so the
  inputs are Kedro's own answer, not a parse of ``pipeline.py``.

``--check`` (the default) exits 1 when a stage lacks a dep or a params key, printing per stage the
YAML lines to add and, for each missing source file, the import chain that reaches it. It also
fails on a source dep (under ``src/``) or a params key that covers nothing the stage uses: a stale
leftover of a move or rename (a path that no longer exists makes ``dvc repro`` fail outright, and
code the stage does not run reruns it, training included, for nothing). A failure rather than a
warning, because the only causes are drift, which ``--fix`` repairs, or a use this tool cannot see,
which must then be said where it is declared: a dep line whose comment contains ``dvc-deps: keep``
is never reported. Extra data and conf deps are allowed (your own SFT files, which parameters name,
belong under the sft stage's deps); deps outside ``src/``, ``conf/`` and ``data/`` are left alone.
A source dep wider than the stage needs (a directory of which it executes few files) is only a
warning: nothing is missed, it merely reruns the stage more often than needed. ``--fix`` rewrites
every stage's ``deps:`` and ``params:`` blocks as derived: source deps afresh (a package directory
when the stage executes more than half of its .py files, the files otherwise; the stage's own first,
then what every ``kedro run`` executes), other deps kept in their order, comments kept (a directory
that replaces commented file deps collects their comments, and gives them back when narrowed);
``--print`` shows the blocks ``--fix`` would write.

Not derived, on purpose: ``conf/base/mlflow.yml`` (where runs are logged, not what a stage computes;
as a dep, renaming the experiment would retrain the chain) and ``conf/local`` (git-ignored personal
overrides; a ``dvc repro`` with one is not reproducible anyway).

Limits, all toward covering too much rather than too little, except the first three:
- imports the code hides (``importlib.import_module(name)`` with a computed name, ``__import__``,
  pickles that name a class) are not seen; ``pipeline_registry.build_stage`` imports other stages'
  pipelines that way, only to name the producer of a missing input before the run stops;
- files read as data by code (templates, JSON next to a module) are covered only by a directory dep;
- third-party code (the venv) is not a dep: pinned versions in ``pyproject.toml`` are its contract;
- the unit is the module: a stage that calls one function of a module depends on the whole module
  and on every module that module imports anywhere, even in functions the stage never calls.

Modules: ``graph`` (the import graph), ``stages`` (what a stage executes and reads; dvc.yaml as it is),
``check`` (the verdict per stage, the report, ``--fix`` and the command line).
"""

from lmforge.dvc_deps.check import Verdict, check, fix, main, report
from lmforge.dvc_deps.graph import ModuleGraph
from lmforge.dvc_deps.stages import stage_sources

__all__ = ["ModuleGraph", "Verdict", "check", "fix", "main", "report", "stage_sources"]
