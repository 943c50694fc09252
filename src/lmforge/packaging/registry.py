"""Log a packaged model to MLflow and register it in the Model Registry with its lineage.

Framework-free: plain ``mlflow`` / ``MlflowClient`` calls, runnable from a REPL. One call,
`register_package`, does the whole release step:

1. logs the package as a pyfunc model (prompt -> completion, greedy, through the chat template)
   with a signature and an input example, into the active run (or a new ``packaging`` run);
2. registers a new version under ``model_name`` and tags it with lineage: the run id of every
   stage of the chain (``run_id.<stage>``), the DVC hashes of the data, tokenizer and checkpoint
   (from ``dvc.lock``; the tag says so when there is none), the git commit and the gate report, and
   the align run behind the model (``align.enabled``, ``align.method``, ``align.pairs_sha256``,
   ``align.run_id``: `align_tags`, passed in with the lineage);
3. gives the version the model card (the package's ``README.md``) as its description, so the
   registry page of a version says what the model is, how it was trained and what it scored;
4. points the ``candidate`` alias at the new version, and ``champion`` too when ``promote`` is set.

A model that failed the quality gate is refused before anything is logged (`GateError`): it never
gets a version, so it can never become ``champion``.

The chain's stage list and the DVC output paths are arguments: ``lmforge.pipeline_registry`` owns the
stages and the Kedro catalog owns the paths; the packaging node passes both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.packaging.export import CARD_FILENAME
from lmforge.packaging.gate import GATE_HINT, GateCheck, GateError
from lmforge.tracking import EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND

logger = logging.getLogger(__name__)

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
INPUT_EXAMPLE = ["Write a Python function that returns the sum of a list of numbers."]
PIPELINE_TAG = "lmforge.pipelines"
"""Run tag set by ``lmforge.hooks.LineageHooks``: the pipelines a ``kedro run`` ran, joined by '+'."""


def stage_run_ids(client: Any, experiment_ids: Sequence[str], stages: Sequence[str],
                  current_run_id: str | None = None) -> dict[str, str]:
    """``{"run_id.<stage>": id}`` of the latest run of each of ``stages`` ("absent" when a stage has none).

    A run belongs to a stage when its ``lmforge.pipelines`` tag (or, failing that, its run name,
    which kedro-mlflow sets to the pipeline name) names it; a whole-chain run (``__default__``)
    stands for every stage. ``current_run_id`` is the run doing the packaging.
    """
    runs = client.search_runs(list(experiment_ids), order_by=["attributes.start_time DESC"], max_results=1000)
    found: dict[str, str] = {}
    for run in runs:
        names = set((run.data.tags.get(PIPELINE_TAG) or run.data.tags.get("mlflow.runName") or "").split("+"))
        for stage in stages:
            if stage in names or "__default__" in names:
                found.setdefault(stage, run.info.run_id)
    if current_run_id:
        found["packaging"] = current_run_id
    return {f"run_id.{stage}": found.get(stage, "absent: no MLflow run of this stage") for stage in stages}


def find_stage_run_id(stage: str, experiment_name: str = "lmforge") -> str:
    """The latest run id of ``stage`` (as `stage_run_ids` finds it), in the active run's experiment or else
    ``experiment_name``; ``"absent: ..."`` when there is none or no tracking store answers."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    active = mlflow.active_run()
    experiment = None if active else client.get_experiment_by_name(experiment_name)
    ids = [active.info.experiment_id] if active else [experiment.experiment_id] if experiment else []
    if not ids:
        return f"absent: no MLflow experiment {experiment_name!r}"
    return stage_run_ids(client, ids, [stage])[f"run_id.{stage}"]


def align_tags(packaged: str, align_metrics: Mapping[str, Any] | None, run_id: str) -> dict[str, str]:
    """The registered version's ``align.*`` tags: ``align.enabled``, and for an aligned package its
    ``align.method``, ``align.pairs_sha256`` and ``align.run_id`` (the align stage's MLflow run)."""
    if packaged != "aligned":
        return {"align.enabled": "false"}
    metrics = align_metrics or {}
    return {"align.enabled": "true", "align.method": str(metrics.get("method", "absent: not in align.json")),
            "align.pairs_sha256": str(metrics.get("pairs_sha256", "absent: not in align.json")), "align.run_id": run_id}


def dvc_lineage(project_path: str | Path, artifacts: Mapping[str, str]) -> dict[str, str]:
    """``{"dvc.<name>": "<out path>:<md5>"}`` from ``dvc.lock``; explains what is missing instead of hiding it.

    ``artifacts`` is ``{name: DVC output path}`` (the packaging node names the data, tokenizer and
    checkpoint datasets and takes their paths from the catalog).
    """
    from lmforge.tracking import dvc_hashes

    if not (Path(project_path) / "dvc.lock").exists():
        return {f"dvc.{name}": f"absent: no dvc.lock in {project_path} (run `dvc repro` to record {path})"
                for name, path in artifacts.items()}
    hashes = dvc_hashes(project_path, artifacts)
    return {f"dvc.{name}": hashes.get(f"dvc.{name}", f"absent: {path} is not a DVC output in dvc.lock")
            for name, path in artifacts.items()}


MAX_DESCRIPTION_CHARS = 5000
"""MLflow's column for a model version's description is VARCHAR(5000): SQLite ignores the length, other
databases refuse a longer text."""


def card_description(card: str, registry_uri: str) -> str:
    """A version's description: the whole model card, or on a registry other than SQLite (whose column
    holds at most ``MAX_DESCRIPTION_CHARS``) its beginning and where the whole card is."""
    if registry_uri.startswith("sqlite:") or len(card) <= MAX_DESCRIPTION_CHARS:
        return card
    note = f"\n\n(cut: the whole card is {CARD_FILENAME} in the model's artifacts)"
    head = card[:MAX_DESCRIPTION_CHARS - len(note)]
    return head[:head.rfind("\n")] + note if "\n" in head else head + note


def register_package(package_dir: str | Path, *, model_name: str, gate: Sequence[GateCheck],
                     stages: Sequence[str], max_new_tokens: int, lineage: Mapping[str, str] | None = None,
                     promote: bool = True, experiment_name: str = "lmforge") -> dict[str, Any]:
    """Log ``package_dir`` to MLflow, register it as a new version of ``model_name``, alias and tag it.

    ``gate`` is the quality gate report (`lmforge.packaging.gate.check_gate`); any failed bound
    raises `GateError` and nothing is logged. ``stages`` is the chain, upstream first (each stage's
    latest run id becomes a ``run_id.<stage>`` tag); ``max_new_tokens`` is the pyfunc model's
    generation length. ``lineage`` adds tags (DVC hashes, git commit).
    Uses the active MLflow run, or starts one named ``packaging`` in ``experiment_name`` (the
    experiment kedro-mlflow uses, conf/base/mlflow.yml). Returns
    ``{"model_name", "version", "aliases", "model_uri", "run_id", "tags"}``.
    """
    import mlflow
    from mlflow import MlflowClient

    failed = [c for c in gate if not c.passed]
    if failed:
        raise GateError(f"refusing to register {model_name}: "
                        + "; ".join(c.describe() for c in failed)
                        + f" ({GATE_HINT})")
    package_dir = Path(package_dir)
    if not (package_dir / "config.json").is_file():
        raise FileNotFoundError(f"not a packaged model (no config.json): {package_dir}")

    client = MlflowClient()
    own_run = mlflow.active_run() is None
    if own_run:
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            experiment_name, tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND})
        run = mlflow.start_run(run_name="packaging", experiment_id=experiment_id,
                               tags={"lmforge.pipelines": "packaging"})
    else:
        run = mlflow.active_run()
    try:
        info = _log_pyfunc(package_dir, max_new_tokens)
        version = mlflow.register_model(info.model_uri, model_name).version
        card = package_dir / CARD_FILENAME
        if card.is_file():
            description = card_description(card.read_text(encoding="utf-8"), mlflow.get_registry_uri())
            client.update_model_version(model_name, version, description=description)
        else:
            logger.warning("%s has no %s: version %s of %s has no description", package_dir, CARD_FILENAME, version,
                           model_name)
        tags = {**stage_run_ids(client, [run.info.experiment_id], stages, current_run_id=run.info.run_id),
                **(lineage or {}), "gate.passed": "true",
                **{f"gate.{c.metric}.{c.bound}": f"{c.observed:.6g} vs {c.limit:g}" for c in gate}}
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, str(value)[:5000])
        aliases = [CANDIDATE_ALIAS, *([CHAMPION_ALIAS] if promote else [])]
        for alias in aliases:
            client.set_registered_model_alias(model_name, alias, version)
    finally:
        if own_run:
            mlflow.end_run()
    logger.info("registered %s version %s (aliases: %s) from run %s", model_name, version, ", ".join(aliases),
                run.info.run_id)
    return {"model_name": model_name, "version": str(version), "aliases": aliases, "model_uri": info.model_uri,
            "run_id": run.info.run_id, "tags": tags}


def _log_pyfunc(package_dir: Path, max_new_tokens: int) -> Any:
    """Log the package as a pyfunc model (the HF folder is an artifact) with signature and input example."""
    from importlib.metadata import version

    import cloudpickle
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    import lmforge.generation

    signature = ModelSignature(inputs=Schema([ColSpec("string", "prompt")]),
                               outputs=Schema([ColSpec("string", "completion")]))
    # lmforge.generation travels inside the pickled model (by value), so the registered model generates
    # exactly as the project does and still loads where lmforge is not installed.
    cloudpickle.register_pickle_by_value(lmforge.generation)
    try:
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=_chat_model(max_new_tokens),
            artifacts={"package": str(package_dir)},
            signature=signature,
            input_example=pd.DataFrame({"prompt": INPUT_EXAMPLE}),
            # explicit: inferring requirements starts a subprocess that re-imports the model (slow)
            pip_requirements=[f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "transformers", "pandas")],
        )
    finally:
        cloudpickle.unregister_pickle_by_value(lmforge.generation)


def _chat_model(max_new_tokens: int) -> Any:
    """A pyfunc model: a DataFrame of prompts -> greedy chat completions from the packaged HF folder.

    It loads and generates with ``lmforge.generation`` (the project's one chat template, stop rule
    EOS + ``<|im_end|>`` with the stop token left out of the text, and engine), held as attributes so
    that cloudpickle stores them by value (`_log_pyfunc` registers the module for that): loading the
    model does not need lmforge. The class is defined inside a function so that importing this module
    does not import mlflow.
    """
    import mlflow.pyfunc

    from lmforge.generation import generate, load_model_and_tokenizer

    class PackagedChatModel(mlflow.pyfunc.PythonModel):
        def __init__(self, max_new_tokens: int):
            self.max_new_tokens = max_new_tokens
            self.load = load_model_and_tokenizer
            self.generate = generate

        def load_context(self, context):
            self.model, self.tokenizer = self.load(context.artifacts["package"])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            prompts = [str(p) for p in model_input["prompt"]]
            completions = self.generate(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens)
            return pd.DataFrame({"completion": [c.text for c in completions]})

    return PackagedChatModel(max_new_tokens)
