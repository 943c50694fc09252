"""Where the built llama.cpp lives: ``$LMFORGE_LLAMA_CPP``, else ``<sys.prefix>/llama.cpp`` (``.venv/llama.cpp``).

``python -m lmforge.engine.build`` (run by ``make install``) builds it there from the vendored llama.cpp
of the llama-cpp-python sdist; the layout is::

    bin/llama-server  bin/llama-quantize     # the OpenAI-compatible server and the quantizer
    convert_hf_to_gguf.py  conversion/       # the HF -> GGUF converter (run with PYTHONPATH=gguf-py)
    gguf-py/                                 # the converter's own gguf package
    BUILD.json                               # version, cmake flags, seconds (the build's stamp)

The variable points a checkout at another build (a CUDA one, or one shared between clones).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lmforge.errors import UserError

ENV_VAR = "LMFORGE_LLAMA_CPP"
BUILD_HINT = "run `make install` (python -m lmforge.engine.build), or point $LMFORGE_LLAMA_CPP at a built llama.cpp"


def engine_dir() -> Path:
    """``$LMFORGE_LLAMA_CPP`` when set, else ``<sys.prefix>/llama.cpp``."""
    override = os.environ.get(ENV_VAR, "").strip()
    return Path(override).expanduser() if override else Path(sys.prefix) / "llama.cpp"


def tool(name: str) -> Path:
    """``engine_dir()/bin/<name>`` (``llama-server``, ``llama-quantize``); UserError when it is not built."""
    path = engine_dir() / "bin" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise UserError(f"llama.cpp tool {name} not found at {path}", BUILD_HINT)
    return path


def converter() -> tuple[Path, Path]:
    """``(convert_hf_to_gguf.py, gguf-py dir)``; UserError when they are not there."""
    root = engine_dir()
    script, gguf_py = root / "convert_hf_to_gguf.py", root / "gguf-py"
    for path in (script, gguf_py / "gguf", root / "conversion"):
        if not path.exists():
            raise UserError(f"llama.cpp converter incomplete: {path} not found", BUILD_HINT)
    return script, gguf_py
