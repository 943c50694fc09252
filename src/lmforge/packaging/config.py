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
