"""Model card (README.md) of a packaged model: what it is, what it was trained on, how it scored.

The card is rendered from one typed record, `ModelCardInfo`, filled by the pipeline from its
resolved config, data manifests, evaluation metrics and git state, so every published package says
which commit and which data (by hash) produced it. The YAML front matter follows the Hugging Face
model-card convention (``library_name``, ``license``, ``tags``) so hub tooling reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HASH_KEY_MARKERS = ("hash", "sha", "md5", "checksum")
"""A data-summary entry whose flattened key contains one of these is listed under Lineage."""

DEFAULT_TAGS = ("lmforge", "causal-lm", "text-generation", "code", "chat")
"""Tags always written to the front matter."""


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
    training: dict[str, Any] = field(default_factory=dict)
    """Key hyperparameters (flat or nested), e.g. ``{"pretrain.steps": 1000, "sft.lr": 2e-5}``."""
    data: dict[str, Any] = field(default_factory=dict)
    """Data summary: records, tokens and data hashes (keys containing "hash"/"sha"/"md5")."""
    evaluation: dict[str, float] = field(default_factory=dict)
    """Evaluation metrics, e.g. the flat dict of ``lmforge.evaluation.report.summarize_evaluation``."""
    git_commit: str = "unknown"
    """Commit of the code that trained and packaged the model."""
    hardware: str = ""
    """What it was trained on, e.g. ``"1x H100 80GB"`` or ``"2 CPU cores"``."""
    license: str = "apache-2.0"
    """SPDX-style license id written to the front matter."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth recording; rendered under "Additional information"."""


def render_model_card(info: ModelCardInfo) -> str:
    """Markdown model card with YAML front matter for ``info``."""
    sections = [
        _render_front_matter(info),
        f"# {info.model_name}\n",
        "## Model\n\n"
        + "A Llama-architecture causal language model for code, pretrained and then "
        + "supervised-fine-tuned for chat by the lmforge pipeline.\n\n"
        + _render_table(
            {
                "preset": info.preset,
                "base model": info.base_model,
                **{f"parameters.{k}": v for k, v in info.parameter_counts.items()},
            }
        ),
        "## Training data\n\n" + _render_table(info.data),
        "## Training\n\n" + _render_table({**info.training, "hardware": info.hardware}),
        "## Evaluation\n\n" + _render_table(info.evaluation, header=("metric", "value")),
        "## How to use\n\n" + _render_usage(info.model_name),
        "## Lineage\n\n" + _render_lineage(info),
        "## Limitations\n\n" + _LIMITATIONS,
    ]
    if info.extra:
        sections.append("## Additional information\n\n" + _render_table(info.extra))
    return "\n".join(sections)


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


def _render_usage(model_name: str) -> str:
    return (
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "\n"
        f"model_dir = {json.dumps(model_name)}  # path to this folder\n"
        "tokenizer = AutoTokenizer.from_pretrained(model_dir)\n"
        "model = AutoModelForCausalLM.from_pretrained(model_dir)\n"
        "\n"
        'messages = [{"role": "user", "content": "Write a function that adds two numbers."}]\n'
        "text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)\n"
        "# the chat template already adds BOS\n"
        'inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)\n'
        "output = model.generate(**inputs, max_new_tokens=64)\n"
        'completion = output[0, inputs["input_ids"].shape[1]:]\n'
        "print(tokenizer.decode(completion, skip_special_tokens=True))\n"
        "```\n"
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
