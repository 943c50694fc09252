"""The evaluation stage's typed config: ``EvaluationConfig`` and its small sections, built once at the node.

``build_dataclass(EvaluationConfig, params["evaluation"], path="evaluation")`` (``EvaluationConfig.from_dict``)
rejects a typo by its dotted path; the node passes the object down whole, so every setting has one
default: the field here, which conf/base/parameters_evaluation.yml repeats (a test holds them equal).
The serving file paths of ``report`` have no default: paths belong to the project's configuration,
not to the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lmforge.evaluation.humaneval import HumanEvalConfig

DEFAULT_SAMPLE_PROMPTS = (
    "Write a Python function that returns the sum of a list of numbers.",
    'def parse_header(line):\n    """Split an HTTP header line into name and value."""',
    "Who are you?",
    "你是谁？",
)


@dataclass
class GenerationConfig:
    """Greedy sample generations of both models (generations.json)."""

    max_new_tokens: int = 48
    """Tokens generated per prompt."""
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_SAMPLE_PROMPTS))
    """Prompts asked through the chat template."""


@dataclass
class IdentityProbeConfig:
    """The identity probe (lmforge.evaluation.identity_probe): P/R/F1 of claiming the configured identity."""

    enabled: bool = True
    """Run the probe (it also needs ``sft.identity``)."""
    max_new_tokens: int = 32
    """Tokens generated per answer."""


@dataclass
class HeldoutPairsConfig:
    """Exact match and token F1 of greedy answers to held-out instruction pairs (lmforge.evaluation.exact_match)."""

    enabled: bool = True
    """Score the pairs at all."""
    max_examples: int = 10
    """Pairs scored per model (the first single-turn pairs whose reference fits)."""
    max_new_tokens: int = 32
    """Tokens generated per answer; only references of at most ``max_new_tokens - 1`` tokens are scored."""


@dataclass
class ByLanguageConfig:
    """Perplexity and bits per byte per language group on the validation documents (lmforge.evaluation.by_language)."""

    enabled: bool = True
    """Score the groups at all."""
    languages: list[str] = field(default_factory=lambda: ["en", "zh", "ja", "code"])
    """Groups scored (``lmforge.data.documents.language_group`` of each document's metadata); others are left out."""
    max_chars: int = 1500
    """Characters of validation text per group (the same text for every model; more: less noise, more time)."""
    seq_len: int = 256
    """Longest piece a document is cut into (capped by the model's context)."""


@dataclass
class TranslationConfig:
    """chrF and BLEU (sacrebleu) of greedy translations of held-out pairs, per direction (lmforge.evaluation.translation)."""

    enabled: bool = True
    """Translate at all (needs records of category ``translation`` in sft_validation_conversations)."""
    max_pairs_per_direction: int = 8
    """Pairs translated per direction (en_zh, en_ja, zh_en, ja_en), the first in input order."""
    max_new_tokens: int = 48
    """Tokens generated per translation (a longer reference is scored against a cut hypothesis, for both models)."""
    batch_size: int = 8
    """Prompts generated together (faster; padding can change float rounding, so 1 = each prompt alone)."""


@dataclass
class SpeedConfig:
    """Generation speed of the SFT model on held-out prompts (lmforge.evaluation.speed: both engines)."""

    enabled: bool = True
    """Measure it at all."""
    prompts: int = 8
    """Held-out prompts timed."""
    max_new_tokens: int = 16
    """Tokens generated per prompt (both engines generate exactly this many)."""
    batch_size: int = 8
    """Prompts per batch."""
    rounds: int = 5
    """Alternating rounds; each engine keeps its best (one round is at the mercy of a busy core)."""


@dataclass
class OperationsConfig:
    """Operations metrics read back from the earlier stages' MLflow runs (lmforge.evaluation.operations)."""

    enabled: bool = True
    """Gather them at all."""
    experiment: str = "lmforge"
    """MLflow experiment of the chain (``tracking.experiment.name`` of conf/base/mlflow.yml)."""


@dataclass
class QuantizationConfig:
    """Quantized GGUF packages of the chat model and their held-out bits per byte (lmforge.evaluation.quantization)."""

    enabled: bool = True
    """Export and score them at all (off: ``data/06_models/gguf`` holds only ``quantization.json`` saying so)."""
    formats: list[str] = field(default_factory=lambda: ["f32", "f16", "q8_0", "q4_k_m"])
    """GGUF formats exported and scored (``lmforge.engine.gguf.GGUF_FORMATS``); f32 is the full-precision reference."""
    budgets_pct: dict[str, float] = field(default_factory=lambda: {"q8_0": 1.0, "q4_k_m": 5.0})
    """Largest held-out bits-per-byte increase over full precision, in percent, shown pass/fail in the report."""


@dataclass
class ReportConfig:
    """Serving results shown in the HTML report when the files exist (never part of evaluation.json)."""

    serving_load: str | None
    """JSON report of `make loadtest` (catalog entry ``serving_load``); None: not shown."""
    serving_feedback: str | None
    """SQLite feedback table of the server (catalog entry ``serving_feedback``); None: not shown."""


@dataclass
class EvaluationConfig:
    """What the evaluation stage measures."""

    batch_size: int = 8
    """Batch size for scoring."""
    max_heldout_blocks: int = 64
    """Validation token blocks scored per model."""
    max_sft_examples: int = 200
    """Held-out instruction conversations scored per model."""
    max_example_tokens: int = 512
    """Longer held-out conversations are skipped (the models' context is finite)."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """Greedy sample generations."""
    humaneval: HumanEvalConfig = field(default_factory=HumanEvalConfig)
    """HumanEval pass@k in the sandbox (lmforge.evaluation.humaneval)."""
    identity_probe: IdentityProbeConfig = field(default_factory=IdentityProbeConfig)
    """The identity probe."""
    heldout_pairs: HeldoutPairsConfig = field(default_factory=HeldoutPairsConfig)
    """Exact match / token F1 on held-out instruction pairs."""
    by_language: ByLanguageConfig = field(default_factory=ByLanguageConfig)
    """Bits per byte per language group (en, zh, ja, code)."""
    translation: TranslationConfig = field(default_factory=TranslationConfig)
    """Translation chrF / BLEU per direction."""
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    """Generation speed of the SFT model."""
    operations: OperationsConfig = field(default_factory=OperationsConfig)
    """Operations metrics of the chain's MLflow runs."""
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    """Quantized GGUF packages of the chat model and their bits per byte."""
    report: ReportConfig = field(kw_only=True)
    """Serving files shown in the report: required, the YAML gives their paths (the library has none)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvaluationConfig:
        from lmforge.config import build_dataclass

        return build_dataclass(cls, d, path="evaluation")
