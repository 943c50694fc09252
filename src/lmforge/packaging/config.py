"""The packaging stage's typed config: ``params:packaging`` plus the quality gate, parsed once at the node.

`build_packaging_config` is the one place the stage's parameters become an object: ``packaging:`` of
``conf/base/parameters_packaging.yml`` through ``build_dataclass`` (typos rejected by dotted path) and
``gate:`` of ``conf/base/parameters_evaluation.yml`` through `lmforge.packaging.gate.parse_gate`. The gate
stays a top-level key of the evaluation parameters so that changing a threshold reruns only packaging
(``dvc.yaml`` lists it among packaging's params), but it travels in the same object as the rest.

Every default is written here once; the YAML shows the same values (a test holds them equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lmforge.packaging.gate import DEFAULT_GATE, GateBound, parse_gate


@dataclass(frozen=True)
class RegistryConfig:
    """The MLflow Model Registry step (`lmforge.packaging.registry.register_package`)."""

    enabled: bool = True
    """Log the package as a pyfunc model and register it; false: package only."""
    model_name: str | None = None
    """Registered model name; None (the default) registers under ``packaging.model_name``, so the package
    and its registered model share one name unless this says otherwise."""
    promote: bool = True
    """Point the ``champion`` alias at the new version too (``candidate`` always); false: promote by hand."""
    max_new_tokens: int = 32
    """Generation length of the registered pyfunc model."""


@dataclass(frozen=True)
class EngineConfig:
    """The GGUF packages and their template-parity check on llama.cpp (`lmforge.packaging.gguf_release`)."""

    enabled: bool = True
    """Ship the evaluation stage's GGUF files beside the HF package and check each on llama-server; false: skip
    (the ``packaged_gguf`` folder then holds only a note saying so)."""
    formats: list[str] = field(default_factory=lambda: ["f32", "f16", "q8_0", "q4_k_m"])
    """GGUF formats shipped and checked (``lmforge.engine.gguf.GGUF_FORMATS``); each must be in ``quantized_models``."""
    reference_format: str = "f32"
    """The full-precision file whose greedy tokens must equal ours; the others report their agreeing prefix."""
    ollama_format: str = "q4_k_m"
    """The file the Ollama ``Modelfile`` loads (``FROM ./<name>-<format>.gguf``)."""
    conversations: int = 4
    """Held-out chat conversations checked besides the template audit's (zh and ja ones first when present)."""
    n_tokens: int = 16
    """Greedy tokens compared per conversation."""
    tie_tolerance: float = 1e-3
    """A greedy difference of ``reference_format`` is a tie, not a failure, where our logits of the two tokens are
    this close (the engine's f32 log-probs differ from ours by <= 7e-5, measured: ``lmforge.engine.parity``)."""
    threads: int = 2
    """llama-server threads per format (``--threads``); the servers run one after the other."""
    startup_timeout_s: float = 120.0
    """How long llama-server may take to load a file and answer ``/health``."""

    def __post_init__(self) -> None:
        for name in ("reference_format", "ollama_format"):
            if self.enabled and getattr(self, name) not in self.formats:
                raise ValueError(f"packaging.engine.{name}: {getattr(self, name)!r} is not one of "
                                 f"packaging.engine.formats {list(self.formats)}")
        if self.n_tokens < 1 or self.conversations < 0:
            raise ValueError("packaging.engine: n_tokens must be >= 1 and conversations >= 0")


@dataclass(frozen=True)
class PackagingConfig:
    """Everything the packaging stage is configured by (``params:packaging`` + ``params:gate``)."""

    model_name: str = "lmforge-chat-tiny"
    """Name of the package: the model card's title and usage snippet, and the registered model's name."""
    license: str = "apache-2.0"
    """SPDX-style license id written to the model card's front matter."""
    verify_prompt: str = "def add(a, b):"
    """Prompt the packaged model must load and generate from (`lmforge.packaging.export.verify_package`)."""
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    """The Model Registry step."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """GGUF packages for llama.cpp / Ollama and their template-parity check."""
    gate: dict[str, GateBound] = field(default_factory=lambda: dict(DEFAULT_GATE))
    """Quality gate: ``{evaluation metric: GateBound}``, from ``gate:`` in parameters_evaluation.yml."""

    @property
    def registered_model_name(self) -> str:
        """The name the model is registered under: ``registry.model_name``, else ``model_name``."""
        return self.registry.model_name or self.model_name


def build_packaging_config(params: Mapping[str, Any], gate: Mapping[str, Any] | None) -> PackagingConfig:
    """`PackagingConfig` from ``params:packaging`` and ``params:gate``; ValueError names a typo by dotted path."""
    from lmforge.config import build_dataclass, replace

    if "gate" in params:
        raise ValueError("packaging.gate: the quality gate is `gate:` in conf/base/parameters_evaluation.yml, "
                         "not a key of packaging")
    config = build_dataclass(PackagingConfig, params, path="packaging")
    return replace(config, gate=parse_gate(gate, path="gate"))
