"""How `make serve` serves: the engine switch and its settings, with every default written once, here.

``python -m lmforge.packaging.serve`` reads its defaults from `ServingConfig` (the command line only
overrides them), and ``make serve`` passes ``SERVE_ENGINE`` / ``SERVE_FORMAT`` through. Serving is not a
Kedro stage, so there is no parameters YAML: this dataclass is the one typed place.

- ``torch``: today's server, the package in fp32 through ``lmforge.generation``, one request at a time.
- ``llama.cpp``: our gateway in front of ``llama-server`` (``lmforge.engine.server.LlamaServer``) on the
  package's GGUF of ``format`` (catalog entry ``packaged_gguf``, files ``<model_name>-<format>.gguf``),
  ``parallel`` slots batched continuously. q8_0 by default: about half of f16's bytes, and the evaluation
  stage holds it within 1% of the full-precision model's bits per byte.
- ``vllm``: our gateway in front of ``vllm serve <package dir>`` (GPU machines; vLLM in its own environment).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.engine.gguf import GGUF_FORMATS

ENGINES = ("torch", "llama.cpp", "vllm")
FORMATS = GGUF_FORMATS
"""The GGUF formats the packaging stage exports."""
GGUF_ENTRY = "packaged_gguf"
"""Catalog entry whose filepath is the folder of the package's GGUF files and Ollama Modelfile."""


@dataclass(frozen=True)
class ServingConfig:
    """The serving command's settings (``python -m lmforge.packaging.serve --help`` lists the flags)."""

    engine: str = "llama.cpp"
    """What generates: ``torch`` (in-process, one request at a time), ``llama.cpp`` or ``vllm`` (an engine
    child process behind our gateway)."""
    format: str = "q8_0"
    """GGUF format for llama.cpp: ``f32``, ``f16``, ``q8_0`` or ``q4_k_m``."""
    host: str = "127.0.0.1"
    """Bind address of the gateway (the engine always listens on 127.0.0.1 only)."""
    port: int = 8000
    """Port of the gateway; the engine gets a free loopback port of its own."""
    parallel: int = 8
    """llama.cpp slots: requests decoded together in one batch (continuous batching)."""
    engine_threads: int | None = None
    """CPU threads of llama.cpp; None: half the logical CPUs, at least 1 (`lmforge.engine.server.default_threads`,
    where the measurement that chose it is)."""
    max_tokens_limit: int = 256
    """Largest ``max_tokens`` a request may ask."""
    device: str = "auto"
    """torch engine only: ``auto`` (first GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    engine_timeout_s: float = 300.0
    """Seconds the gateway waits for the engine's next bytes before answering 503."""
    engine_startup_s: float = 120.0
    """Seconds the engine may take to load the model (vLLM on a GPU needs more: ``--engine-startup-s``)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {self.parallel}")
