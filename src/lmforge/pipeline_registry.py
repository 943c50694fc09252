"""Project pipelines: the seven stages of the chain, by name, and ``__default__`` = the whole chain.

``CHAIN`` is the one list of the chain's stages. Library code never imports it (it is Kedro-aware
code); the nodes that need the list pass it down (`stages_before` for "the stages whose runs are done").

A pipeline name that does not exist (``kedro run --pipelines nonexistent``) stops here with one line
listing the valid names: Kedro 1.7 asks this function for only the requested pipelines, before any
hook runs, and would otherwise fail with an ImportError traceback of a hundred lines.
"""

from __future__ import annotations

import importlib

from kedro.pipeline import Pipeline

# The chain, upstream first. Each stage's inputs are outputs of the stages before it.
CHAIN = ("data_processing", "tokenizer", "pretrain", "sft", "align", "evaluation", "packaging")


def stages_before(stage: str) -> tuple[str, ...]:
    """The stages upstream of ``stage``, in chain order (``stages_before("evaluation")``: the five before it)."""
    return CHAIN[:CHAIN.index(stage)]


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Kedro 1.7 discovers only the pipelines a ``kedro run --pipelines`` asked for; the full set (and
    ``__default__``, the whole chain in chain order) is registered otherwise.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    # imported here: kedro.framework.project configures logging on import, which `python -m lmforge.results`
    # (it reads CHAIN) must not do
    from kedro.framework.project import find_pipelines
    from kedro.framework.project import pipelines as registry

    check_pipeline_names(getattr(registry, "_requested_pipelines", None))  # what `kedro run --pipelines` asked
    found = find_pipelines(raise_errors=True)
    pipelines = {name: found[name] for name in CHAIN if name in found}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines


def check_pipeline_names(requested: list[str] | None) -> None:
    """``SystemExit`` with one line naming the valid pipelines when a requested name is not one of them."""
    unknown = sorted(set(requested or ()) - {*CHAIN, "__default__"})
    if unknown:
        raise SystemExit(f"error: no pipeline named {', '.join(map(repr, unknown))} (the pipelines are: "
                         f"{', '.join(CHAIN)}; `kedro run` without --pipelines runs them all, in that order)")


def build_stage(name: str) -> Pipeline:
    """One stage's pipeline, built directly (whatever the CLI asked Kedro to discover)."""
    return importlib.import_module(f"lmforge.pipelines.{name}").create_pipeline()
