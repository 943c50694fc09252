"""Assemble a release: the packaged model, its model card, the logits round-trip check and the quality gate.

The card records the preset, parameter counts, data summary, key hyperparameters, evaluation
results and lineage (git commit, tokenizer hash), so the package is traceable without the project.

The package carries the checkpoint's own tokenizer and chat template (an SFT checkpoint saves them;
else the tokenizer stage's: ``ChatTokenizer.for_model``) and every stop id in its
generation config (``ChatTokenizer.stop_ids``: the template's end-of-turn, the tokenizer's and the
checkpoint's EOS ids).

Four checks stand between a checkpoint and the model registry:

- the round trip (`compare_logits`): the packaged model must produce the checkpoint's logits on
  fixed inputs (within ``LOGITS_ATOL``), so re-saving, dtype or config alignment changed nothing;
- the quality gate (`lmforge.packaging.gate`): ``{metric: GateBound}`` bounds on the flat keys of
  the evaluation metrics (``sft_pairs.perplexity_ratio``, ``sft.heldout.perplexity``...). A model
  outside a bound is refused with the metric, its observed value and the bound;
- the template audit (``lmforge.tokenizer.template_audit``): the packaged model's prompt as its server
  encodes it (``lmforge.packaging.chat_model.serving_audit``) must be the prompt sft trained it to
  answer, with the same template and stop ids; else ``TemplateMismatchError`` names the first
  differing token and nothing is registered;
- the engine parity (``packaging.engine``, `lmforge.packaging.gguf_release`): the evaluation stage's GGUF
  files, shipped beside the package, each served by llama-server, must prompt with our ids, generate our
  greedy tokens (full precision) and stop at the end of turn; else ``TemplateParityError`` names the
  format, the conversation and the first differing token, and nothing is registered.

Everything is configured by one `PackagingConfig` (built once at the node) and the paths it is given:
the DVC outputs whose hashes go on the card and the registered version are arguments, named by the
caller (the catalog owns them), as is the list of the chain's stages.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.locks import owned_tempdir
from lmforge.packaging.config import PackagingConfig
from lmforge.packaging.export import PackageVerificationError, package_model, verify_package
from lmforge.packaging.gate import GateCheck, check_gate, enforce_gate, gate_for_model
from lmforge.packaging.model_card import build_model_card_info, lookup_dvc_hashes

logger = logging.getLogger(__name__)

LOGITS_ATOL = 1e-5
"""Largest absolute logit difference allowed between the checkpoint and its package."""

PROBE_INPUT_IDS = ((1, 5, 17, 42, 99, 7, 3, 250, 11, 64), (2, 9, 9, 120, 33, 48, 5, 6, 200, 13))
"""Fixed token ids the round trip scores (clipped to the vocabulary); two rows, so batching is exercised."""

def compare_logits(source_dir: str | Path, package_dir: str | Path,
                   input_ids: Sequence[Sequence[int]] = PROBE_INPUT_IDS) -> float:
    """Largest absolute difference between the logits of two saved models on ``input_ids`` (fp32, eval)."""
    import torch
    from transformers import AutoModelForCausalLM

    models = [AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, local_files_only=True).eval()
              for d in (source_dir, package_dir)]
    vocab = min(m.get_input_embeddings().weight.shape[0] for m in models)
    ids = torch.tensor([[i % vocab for i in row] for row in input_ids])
    with torch.no_grad():
        source, packaged = (m(ids).logits for m in models)
    if source.shape != packaged.shape:
        raise PackageVerificationError(f"logits shapes differ: checkpoint {tuple(source.shape)}, "
                                       f"package {tuple(packaged.shape)}")
    return float((source - packaged).abs().max())


def check_roundtrip(source_dir: str | Path, package_dir: str | Path, atol: float = LOGITS_ATOL) -> float:
    """`compare_logits`, raising `PackageVerificationError` when the difference exceeds ``atol``."""
    diff = compare_logits(source_dir, package_dir)
    if not diff <= atol:
        raise PackageVerificationError(f"package {package_dir} does not reproduce checkpoint {source_dir}: "
                                       f"max |logit difference| {diff:.3g} > {atol:g}")
    logger.info("round trip: max |logit difference| %.3g <= %g", diff, atol)
    return diff


def describe_hardware() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"{os.cpu_count()} CPU cores ({platform.machine()})"


def build_release(sft_checkpoint: str, tokenizer_dir: str, metrics: Mapping[str, Mapping[str, Any]],
                  config: PackagingConfig, *, git_commit: str, card_artifacts: Mapping[str, str],
                  evaluation_file: str = "", project_path: str | Path = ".",
                  hyperparameters: Mapping[str, Mapping[str, Any] | None] | None = None,
                  gate: Sequence[GateCheck] = (), packaged: str = "sft", align_run_id: str = "") -> tuple[str, dict]:
    """Package ``sft_checkpoint`` + its tokenizer into a staging dir; returns (dir, packaging metrics).

    The tokenizer is the checkpoint's own when it holds one, else ``tokenizer_dir`` (the tokenizer stage's).

    ``card_artifacts`` is ``{name: DVC output path}``: the outputs whose ``dvc.lock`` hashes the model
    card lists; ``evaluation_file`` (the evaluation metrics file) is named on the card. The package is verified by loading and generating, and (for a full checkpoint; a LoRA
    adapter is merged first, so there is no plain source to compare with) by the logits round trip.
    """
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer
    from lmforge.training.lora import is_adapter_dir

    chat = ChatTokenizer.for_model(sft_checkpoint, tokenizer_dir)
    card = build_model_card_info(metrics, config, git_commit=git_commit, host=describe_hardware(),
                                 checkpoint_dir=sft_checkpoint, hyperparameters=hyperparameters,
                                 dvc_hashes=lookup_dvc_hashes(project_path, card_artifacts),
                                 evaluation_file=evaluation_file, gate=list(gate), chat=chat, packaged=packaged,
                                 align_run_id=align_run_id)
    out_dir = owned_tempdir("lmforge-package-") / card.model_name
    package_model(sft_checkpoint, chat.source, out_dir, card=card, stop_ids=chat.stop_ids)
    check = verify_package(out_dir, prompt=config.verify_prompt)
    result = {"loads": bool(check.get("loads")), "generated_tokens": check.get("generated_tokens", 0)}
    if is_adapter_dir(Path(sft_checkpoint)):
        logger.info("round trip skipped: %s is a LoRA adapter (merged before packaging)", sft_checkpoint)
    else:
        result["max_logit_diff"] = check_roundtrip(sft_checkpoint, out_dir)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return str(out_dir), {**result, "package_bytes": size, "sample": check.get("sample", "")}


def gate_record(checks: Sequence[GateCheck]) -> dict[str, float]:
    """The gate's decision per bound for packaging.json: ``gate.<metric>.<min|max>.{value,limit,passed}``.

    The evaluation report does not read the bounds (a threshold change must rerun packaging only), so
    packaging.json is where a reader finds each bound's value, limit and outcome.
    """
    out: dict[str, float] = {}
    for c in checks:
        key = f"gate.{c.metric}.{c.bound}"
        out.update({f"{key}.value": c.observed, f"{key}.limit": c.limit, f"{key}.passed": float(c.passed)})
    return out


def release_model(sft_checkpoint: str, tokenizer_dir: str, metrics: Mapping[str, Mapping[str, Any]],
                  config: PackagingConfig, *, git_commit: str, stages: Sequence[str],
                  card_artifacts: Mapping[str, str], lineage_artifacts: Mapping[str, str],
                  evaluation_file: str = "", project_path: str | Path = ".",
                  hyperparameters: Mapping[str, Mapping[str, Any] | None] | None = None,
                  template_audit: Mapping[str, Any] | None = None, packaged: str = "sft",
                  gguf_dir: str | None = None,
                  held_out: Sequence[Mapping[str, Any]] = ()) -> tuple[str, dict, dict, str, dict]:
    """The packaging stage: quality gate, package (+ round trip), template audit, GGUF packages checked on the
    engine, then the Model Registry.

    The gate (``config.gate``) is checked first, so a refused model costs no packaging time; the
    registry step follows ``config.registry``. ``stages`` is the chain, upstream first (each stage's
    latest run id tags the registered version); ``card_artifacts`` / ``lineage_artifacts`` are
    ``{name: DVC output path}`` for the model card and the version's ``dvc.<name>`` tags;
    ``evaluation_file`` is the evaluation metrics file the card points to; ``template_audit`` is sft's
    (``template_audit_sft``): the package's serving prompt is checked against it before registering.
    ``gguf_dir`` is the evaluation stage's GGUF folder: with ``config.engine.enabled`` its files are shipped
    and each checked on llama-server against the package (`lmforge.packaging.gguf_release.release_gguf`, on the
    audit conversation and ``held_out`` chat conversations) before anything is registered; None or
    ``engine.enabled: false``: skipped. Returns (package dir, packaging metrics incl. ``gate_passed``,
    ``registered_version`` and the ``engine.*`` numbers, the template audit of the serving path, the GGUF
    package folder, the engine audit).

    ``packaged`` says which model ``sft_checkpoint`` is: ``"sft"``, or ``"aligned"`` when align ran
    (``lmforge.align.chat_model.resolve_chat_model``): then the gate checks the aligned model's numbers
    (`lmforge.packaging.gate.gate_for_model`), and the card and the registered version record the align run
    (``metrics["align"]``, its MLflow run id, ``align.*`` tags); an SFT package is tagged ``align.enabled=false``
    when the align stage's metrics are given (``"align" in metrics``). ``packaged_aligned`` (1/0) in the
    packaging metrics says which it was.
    """
    evaluation = metrics.get("evaluation", {})
    checks = check_gate(evaluation, gate_for_model(config.gate, evaluation, packaged))
    enforce_gate(checks)
    align_run_id = ""
    if packaged == "aligned":
        from lmforge.packaging.registry import find_stage_run_id

        align_run_id = find_stage_run_id("align")
    package_dir, result = build_release(sft_checkpoint, tokenizer_dir, metrics, config, git_commit=git_commit,
                                        card_artifacts=card_artifacts, evaluation_file=evaluation_file,
                                        project_path=project_path,
                                        hyperparameters=hyperparameters, gate=checks, packaged=packaged,
                                        align_run_id=align_run_id)
    from lmforge.packaging.chat_model import serving_audit

    audit = serving_audit(package_dir)
    if template_audit is not None:
        from lmforge.tokenizer.template_audit import check_audits

        check_audits(template_audit, audit)
    from lmforge.packaging.gguf_release import disabled_release, release_gguf

    if config.engine.enabled and gguf_dir is not None:
        gguf_package, engine, engine_audit = release_gguf(package_dir, gguf_dir, config.engine,
                                                          model_name=config.model_name, held_out=held_out)
    else:
        gguf_package, engine, engine_audit = disabled_release(
            "packaging.engine.enabled is false" if not config.engine.enabled else "no GGUF folder was given")
    result = {**result, "gate_passed": True, "gate_bounds": len(checks), "packaged_aligned": float(packaged == "aligned"),
              **gate_record(checks), **engine}
    if config.registry.enabled:
        from lmforge.packaging.registry import align_tags, dvc_lineage, register_package

        aligned = align_tags(packaged, metrics.get("align"), align_run_id) if "align" in metrics else {}
        registered = register_package(package_dir, model_name=config.registered_model_name, gate=checks,
                                      stages=stages,
                                      lineage={**dvc_lineage(project_path, lineage_artifacts), "git.commit": git_commit,
                                               **aligned},
                                      promote=config.registry.promote, max_new_tokens=config.registry.max_new_tokens)
        result.update(registered_model=registered["model_name"], registered_version=registered["version"],
                      registered_aliases=",".join(registered["aliases"]))
    return package_dir, result, audit, gguf_package, engine_audit
