"""Model card (README.md) of a packaged model: what it is, what it was trained on, how it scored.

The card is rendered from one typed record, `ModelCardInfo`, filled by the pipeline from its
resolved config, data manifests, evaluation metrics and git state, so every published package says
which commit and which data (by hash) produced it. The YAML front matter follows the Hugging Face
model-card convention (``library_name``, ``license``, ``tags``) so hub tooling reads it.

`build_model_card_info` fills the record from what the packaging stage has: its `PackagingConfig`
(name, license), the stage metrics, the resolved ``params:pretrain`` / ``params:sft`` (key
hyperparameters), the checkpoint's weights (parameter counts, read from the safetensors headers without
loading a tensor) and ``dvc.lock`` (the DVC hashes of the data, tokenizer and checkpoints, whose paths the
caller passes: the catalog owns them).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.packaging.card_sections import (
    list_training_sources,
    render_gate,
    render_sources_table,
    render_usage,
    summarize_alignment,
)

if TYPE_CHECKING:
    from lmforge.packaging.config import PackagingConfig
    from lmforge.packaging.gate import GateCheck
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

# What the card says the model is, for the chain's own pretrained model.
DEFAULT_DESCRIPTION = ("A Llama-architecture causal language model, pretrained and then supervised-fine-tuned "
                       "for chat by the lmforge pipeline on the sources listed under Training data.")

HASH_KEY_MARKERS = ("hash", "sha", "md5", "checksum")
"""A data-summary entry whose flattened key contains one of these is listed under Lineage."""

DEFAULT_TAGS = ("lmforge", "causal-lm", "text-generation", "code", "chat")
"""Tags always written to the front matter."""

HYPERPARAMETER_KEYS = ("model.preset", "model.overrides", "base_model", "finetuning", "packing", "max_length",
                       "train.max_steps", "train.micro_batch_size", "train.gradient_accumulation_steps",
                       "train.lr", "train.min_lr_ratio", "train.warmup_steps", "train.weight_decay", "train.betas",
                       "train.grad_clip", "train.precision", "train.seed", "deepspeed.zero_stage",
                       "deepspeed.offload_optimizer", "launch.launcher", "launch.nnodes", "launch.nproc_per_node")
"""Dotted keys of ``params:pretrain`` / ``params:sft`` shown as the card's key hyperparameters (when set)."""

EMBEDDING_TENSOR_SUFFIXES = ("embed_tokens.weight", "lm_head.weight", "wte.weight")
"""Weights counted as "embedding" parameters (input embedding and untied output head)."""


@dataclass
class ModelCardInfo:
    """Everything the model card says about a packaged model."""

    model_name: str
    """Name of the package (also the folder name used in the usage snippet)."""
    preset: str = ""
    """Model-size preset the architecture came from (see ``lmforge.model.presets``)."""
    parameter_counts: dict[str, int] = field(default_factory=dict)
    """Parameter counts, e.g. ``{"total": ..., "embedding": ..., "non_embedding": ...}``."""
    base_model: str = ""
    """What SFT started from: a pretraining run id, path or hub name."""
    description: str = DEFAULT_DESCRIPTION
    """One sentence under "Model": what the model is."""
    chat: dict[str, Any] = field(default_factory=dict)
    """The chat format the package serves with: template (name or origin) and sha256, end-of-turn token,
    stop ids (the generation config's ``eos_token_id``), BOS and pad (`describe_chat_format`)."""
    training: dict[str, Any] = field(default_factory=dict)
    """Key hyperparameters (flat or nested), e.g. ``{"pretrain.steps": 1000, "sft.lr": 2e-5}``."""
    data: dict[str, Any] = field(default_factory=dict)
    """Data summary: records, tokens and data hashes (keys containing "hash"/"sha"/"md5")."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Each pretraining source with its licence, documents, tokens and share (`card_sections.list_training_sources`)."""
    evaluation: dict[str, float] = field(default_factory=dict)
    """Evaluation metrics, e.g. the flat dict of ``lmforge.evaluation.report.summarize_evaluation``."""
    git_commit: str = "unknown"
    """Commit of the code that trained and packaged the model."""
    hardware: str = ""
    """What it was trained on, e.g. ``"1x H100 80GB"`` or ``"2 CPU cores"``."""
    license: str = "apache-2.0"
    """SPDX-style license id written to the front matter."""
    evaluation_file: str = ""
    """Where all the evaluation metrics are (the catalog's ``evaluation_metrics`` file), named under Evaluation."""
    gate: list[GateCheck] = field(default_factory=list)
    """The quality gate's checks this model passed (``lmforge.packaging.gate``): each bound, its value and outcome."""
    align: dict[str, Any] = field(default_factory=dict)
    """The align run behind the package, or that align was off (`card_sections.summarize_alignment`); {}: no align."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth recording; rendered under "Additional information"."""


def count_checkpoint_parameters(checkpoint_dir: str | Path) -> dict[str, int]:
    """``{"total", "embedding", "non_embedding"}`` parameter counts of a saved model, from its safetensors headers.

    Reads only the JSON header of each ``model*.safetensors`` file (shapes, no tensor data), so it is
    instant for any size and needs no torch. Empty when the folder holds no full model (a LoRA adapter).
    """
    files = sorted(Path(checkpoint_dir).glob("model*.safetensors"))
    total = embedding = 0
    for path in files:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            count = math.prod(tensor["shape"])
            total += count
            if name.endswith(EMBEDDING_TENSOR_SUFFIXES):
                embedding += count
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding} if files else {}


def lookup_dvc_hashes(project_path: str | Path, artifacts: Mapping[str, str]) -> dict[str, str]:
    """``{name: "<out path>:<md5>"}`` from ``dvc.lock``, saying why where a hash is absent (never hiding it).

    ``artifacts`` is ``{name: DVC output path}``, the outputs the card lists as ``<name>.dvc_md5`` (the
    packaging node takes the paths from the catalog).
    """
    from lmforge.tracking import dvc_hashes

    if not (Path(project_path) / "dvc.lock").exists():
        return {name: f"absent: no dvc.lock in {project_path} (run `dvc repro` to record {path})"
                for name, path in artifacts.items()}
    found = dvc_hashes(project_path, artifacts)
    return {name: found.get(f"dvc.{name}", f"absent: {path} is not a DVC output in dvc.lock")
            for name, path in artifacts.items()}


def select_hyperparameters(stage_params: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """``{"<stage>.<key>": value}`` for every `HYPERPARAMETER_KEYS` entry set in each stage's params."""
    selected: dict[str, Any] = {}
    for stage, params in stage_params.items():
        for key in HYPERPARAMETER_KEYS:
            value = _lookup(params or {}, key)
            if value is None or value == {} or value == []:
                continue
            selected[f"{stage}.{key}"] = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
    return selected


def summarize_training_data(metrics: Mapping[str, Mapping[str, Any]], dvc_hashes: Mapping[str, str]) -> dict[str, Any]:
    """Records, tokens and SFT pairs from the stage metrics, plus ``<name>.dvc_md5`` per DVC output."""
    data = metrics.get("data_processing", {}) or {}
    tokenizer = metrics.get("tokenizer", {}) or {}
    sft_data = (metrics.get("sft", {}) or {}).get("data", {}) or {}
    dropped = data.get("dropped")
    summary = {
        "documents.records_in": data.get("records_in"),
        "documents.records_out": data.get("records_out"),
        "documents.dropped": sum(dropped.values()) if isinstance(dropped, Mapping) else dropped,
        "documents.bytes_out": data.get("bytes_out"),
        "pretrain.train_tokens": tokenizer.get("train_tokens"),
        "pretrain.validation_tokens": tokenizer.get("validation_tokens"),
        "pretrain.tokens_seen": (metrics.get("pretrain", {}) or {}).get("tokens"),
        "sft.train_pairs": sft_data.get("train_pairs"),
        "sft.validation_pairs": sft_data.get("validation_pairs"),
        "sft.identity_conversations": sft_data.get("identity_conversations"),
        "tokenizer.vocab_size": tokenizer.get("vocab_size"),
        "tokenizer_sha256": tokenizer.get("sha256"),
    }
    summary = {key: value for key, value in summary.items() if value is not None}
    summary.update({f"{name}.dvc_md5": value for name, value in dvc_hashes.items()})
    return summary


def describe_training_hardware(metrics: Mapping[str, Mapping[str, Any]], host: str = "") -> str:
    """E.g. ``"pretrain: 2 process(es) on cpu, ZeRO-2; sft: ...; packaged on 2 CPU cores (x86_64)"``."""
    parts = []
    for stage in ("pretrain", "sft", "align"):
        stage_metrics = metrics.get(stage, {}) or {}
        if "world_size" in stage_metrics:
            device = stage_metrics.get("device") or "unrecorded device"
            parts.append(f"{stage}: {stage_metrics['world_size']} process(es) on {device}, "
                         f"ZeRO-{stage_metrics.get('zero_stage', '?')}")
    if host:
        parts.append(f"packaged on {host}")
    return "; ".join(parts)


def build_model_card_info(metrics: Mapping[str, Mapping[str, Any]], config: PackagingConfig, *, git_commit: str,
                          host: str = "", checkpoint_dir: str | Path | None = None,
                          hyperparameters: Mapping[str, Mapping[str, Any] | None] | None = None,
                          dvc_hashes: Mapping[str, str] | None = None, evaluation_file: str = "",
                          gate: list[GateCheck] | None = None, chat: ChatTokenizer | None = None,
                          packaged: str = "sft", align_run_id: str = "") -> ModelCardInfo:
    """The card of a chain's model: ``metrics`` is ``{stage: metrics dict}`` of every stage before packaging.

    ``config`` gives the name and license; ``hyperparameters`` is ``{"pretrain": params:pretrain, "sft": ...}``;
    ``dvc_hashes`` is ``{name: "<path>:<md5>"}`` (`lookup_dvc_hashes`); ``host``
    describes the machine packaging runs on; ``evaluation_file`` is where the full evaluation metrics are; ``gate``
    the quality gate's checks (shown with their values and bounds); ``chat`` the package's tokenizer with its
    template (`describe_chat_format`). Parameter counts come from ``checkpoint_dir`` when it holds
    a full model, else from the pretrain metrics. ``packaged`` says which model the package holds (``"sft"`` or
    ``"aligned"``, ``lmforge.align.chat_model.resolve_chat_model``); the align run (``metrics["align"]``,
    ``hyperparameters["align"]``, ``align_run_id``) gets its own section.
    """
    from lmforge.tracking import flatten

    pretrain, sft = metrics.get("pretrain", {}) or {}, metrics.get("sft", {}) or {}
    counts = count_checkpoint_parameters(checkpoint_dir) if checkpoint_dir else {}
    if not counts and pretrain.get("model_params"):
        counts = {"total": int(pretrain["model_params"])}
    sft_params = (hyperparameters or {}).get("sft") or {}
    continued = _lookup((hyperparameters or {}).get("pretrain") or {}, "base_model")  # continued pretraining's base
    foreign = sft_params.get("base_model") or continued
    base_model = sft_params.get("base_model") or (f"{continued} (pretraining continued in this chain)" if continued
                                                  else "lmforge pretrain checkpoint (this chain)")
    description = DEFAULT_DESCRIPTION
    if foreign:
        config_file = Path(checkpoint_dir or "", "config.json")
        model_type = json.loads(config_file.read_text("utf-8")).get("model_type") if config_file.is_file() else ""
        description = (f"A causal language model{f' ({model_type})' if model_type else ''} supervised-fine-tuned "
                       f"for chat by the lmforge pipeline from the base model {foreign}, with that model's "
                       "tokenizer and chat template.")
    if packaged == "aligned":
        description = description.replace("supervised-fine-tuned", "supervised-fine-tuned and preference-aligned")
    training = {"pretrain.steps": pretrain.get("steps"), "pretrain.tokens": pretrain.get("tokens"),
                "pretrain.final_loss": pretrain.get("final_loss"), "sft.steps": sft.get("steps"),
                "sft.tokens": sft.get("tokens"), "sft.final_loss": sft.get("final_loss"),
                **select_hyperparameters(hyperparameters or {})}
    return ModelCardInfo(
        model_name=config.model_name,
        preset=str(pretrain.get("preset") or _lookup((hyperparameters or {}).get("pretrain") or {}, "model.preset")
                   or ""),
        parameter_counts=counts,
        base_model=str(base_model),
        description=description,
        chat=describe_chat_format(chat) if chat is not None else {},
        training={key: value for key, value in training.items() if value is not None},
        data=summarize_training_data(metrics, dvc_hashes or {}),
        sources=list_training_sources(metrics),
        evaluation=dict(flatten(metrics.get("evaluation", {}) or {})),
        git_commit=git_commit,
        hardware=describe_training_hardware(metrics, host),
        license=config.license,
        evaluation_file=evaluation_file,
        gate=list(gate or []),
        align=summarize_alignment(metrics.get("align"), (hyperparameters or {}).get("align"), packaged=packaged,
                                  run_id=align_run_id, pairs_md5=(dvc_hashes or {}).get("align_pairs", "")),
    )


def describe_chat_format(chat: ChatTokenizer) -> dict[str, Any]:
    """The card's chat-format rows: template name or origin and sha256, end-of-turn, stop ids, BOS and pad."""
    from lmforge.tokenizer.chat_tokenizer import BUILTIN_TEMPLATES

    builtin = chat.template_name or next((n for n, t in BUILTIN_TEMPLATES.items() if t == chat.template), None)
    tokens = chat.tokenizer.convert_ids_to_tokens(chat.stop_ids)
    return {"chat template": f"{builtin} (built-in)" if builtin else "the tokenizer's own",
            "chat template sha256": chat.template_sha256, "end-of-turn token": f"{chat.end_of_turn} (id {chat.end_of_turn_id})",
            "stop ids": ", ".join(f"{t} ({i})" for t, i in zip(tokens, chat.stop_ids, strict=True)),
            "bos": f"{chat.tokenizer.bos_token} ({chat.bos_id})" if chat.bos_id is not None else "none",
            "pad id": chat.pad_id}


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    """``values["a"]["b"]`` for ``"a.b"`` (lists and empty mappings included), None when absent."""
    current: Any = values
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def render_model_card(info: ModelCardInfo) -> str:
    """Markdown model card with YAML front matter for ``info``."""
    scores = _card_metrics(info.evaluation)
    n_ops = len(info.evaluation) - len(scores)
    sections = [
        _render_front_matter(info),
        f"# {info.model_name}\n",
        "## Model\n\n"
        + info.description + "\n\n"
        + _render_table(
            {
                "preset": info.preset,
                "base model": info.base_model,
                **{f"parameters.{k}": v for k, v in info.parameter_counts.items()},
                **info.chat,
            }
        ),
        "## Training data\n\n" + _render_table(info.data) + render_sources_table(info.sources, _format_value),
        "## Training\n\n" + _render_table({**info.training, "hardware": info.hardware}),
        *(["## Alignment\n\n" + _render_table(info.align)] if info.align else []),
        "## Evaluation\n\n" + _render_table(scores, header=("metric", "value"))
        + (f"\nThe other {n_ops} operations metrics (per-stage system metrics, durations, run counts) are in "
           + (f"`{info.evaluation_file}` and the evaluation's MLflow run.\n" if info.evaluation_file
              else "the evaluation's metrics file and MLflow run.\n") if n_ops else ""),
        "## Quality gate\n\n" + render_gate(info.gate),
        "## How to use\n\n" + render_usage(info.model_name),
        "## Lineage\n\n" + _render_lineage(info),
        "## Limitations\n\n" + _LIMITATIONS,
    ]
    if info.extra:
        sections.append("## Additional information\n\n" + _render_table(info.extra))
    return "\n".join(sections)


CARD_OPERATIONS = ("ops.chain.", "ops.pretrain.tokens_per_s", "ops.pretrain.time_per_epoch_s", "ops.sft.tokens_per_s",
                   "ops.sft.time_per_epoch_s", "ops.pretrain.peak_memory_mb", "ops.sft.peak_memory_mb",
                   "ops.align.tokens_per_s", "ops.align.peak_memory_mb")
"""The ``ops.*`` evaluation metrics a model card shows (chain totals, training speed and memory); the rest stay
in evaluation.json and MLflow."""


def _card_metrics(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The model's scores, and of the operations metrics only ``CARD_OPERATIONS``."""
    return {k: v for k, v in evaluation.items() if not k.startswith("ops.") or k.startswith(CARD_OPERATIONS)}


_LIMITATIONS = (
    "- A small model trained on a limited code corpus: it writes plausible code that is often wrong;\n"
    "  run and test anything it produces.\n"
    "- Generated code may be insecure or may reproduce fragments of its training data.\n"
    "- No safety tuning beyond supervised fine-tuning; not evaluated for harmful content.\n"
    "- Evaluation numbers above are measured on this project's own held-out splits and are not\n"
    "  comparable with public benchmarks.\n"
)


def _render_front_matter(info: ModelCardInfo) -> str:
    # JSON strings are valid YAML scalars: quoting this way needs no YAML library.
    tags = "\n".join(f"- {json.dumps(tag)}" for tag in DEFAULT_TAGS)
    return (
        "---\n"
        "library_name: transformers\n"
        f"license: {json.dumps(info.license)}\n"
        "pipeline_tag: text-generation\n"
        f"tags:\n{tags}\n"
        "---\n"
    )


def _render_lineage(info: ModelCardInfo) -> str:
    hashes = {
        key: value
        for key, value in _flatten(info.data).items()
        if any(marker in key.lower() for marker in HASH_KEY_MARKERS)
    }
    return _render_table({"git commit": info.git_commit, **hashes})


def _render_table(values: Mapping[str, Any], header: tuple[str, str] = ("key", "value")) -> str:
    """Two-column Markdown table of ``values`` (nested mappings flattened with dots)."""
    flat = _flatten(values)
    if not flat:
        return "_not recorded_\n"
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {_escape(key)} | {_escape(_format_value(value))} |" for key, value in flat.items()]
    return "\n".join(lines) + "\n"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _format_value(value: Any) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.6g}"
    return str(value)


def _escape(text: str) -> str:
    """Keep a cell inside its table cell: pipes escaped, newlines flattened."""
    return text.replace("|", "\\|").replace("\n", " ")
