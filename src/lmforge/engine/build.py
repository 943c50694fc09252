"""Build llama.cpp (the CPU inference engine) into ``<sys.prefix>/llama.cpp``, once: ``python -m lmforge.engine.build``.

The source is the llama.cpp vendored in the ``llama-cpp-python==0.3.36`` sdist (a pinned, reviewed snapshot
on the ordinary package registry: ``pip download --no-deps --no-binary :all:``, the only network access;
the sdist is kept in ``<sys.prefix>/cache/`` so a rebuild fetches nothing). We build only the two programs
we run, ``llama-server`` and ``llama-quantize``, statically linked, and copy the HF -> GGUF converter
(``convert_hf_to_gguf.py``, ``conversion/``, ``gguf-py/``) beside them: the layout ``lmforge.engine.llama_cpp``
resolves. ``BUILD.json`` stamps the result (version, cmake flags, seconds): a second run with the same
version and flags does nothing.

``-DGGML_NATIVE=ON`` compiles for *this* CPU (its AVX2/AVX-512 etc.): the binaries may crash with an illegal
instruction on an older CPU, so build on the machine that serves (``make install`` does). A GPU machine
builds with ``--cmake-flag=-DGGML_CUDA=ON`` (needs the CUDA toolkit; not used here). The web UI stays off
(``LLAMA_USE_PREBUILT_UI=ON`` would download it at build time), as do curl/OpenSSL (no model downloads).
Measured here (g++ 12, these flags): 1678 s (28 min) on 2 cores shared with other work, 22 MB of programs
(llama-server 15 MB, llama-quantize 7 MB, statically linked but for libgomp/libstdc++).

``pip download`` of an sdist first prepares its metadata, which installs the sdist's build backend
(scikit-build-core) in an isolated environment: that is fetched from the registry too, once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lmforge.engine.llama_cpp import engine_dir
from lmforge.errors import UserError, run_cli

__all__ = ["CMAKE_FLAGS", "LLAMA_CPP_PYTHON_VERSION", "build_llama_cpp", "main"]

logger = logging.getLogger(__name__)

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The llama-cpp-python sdist whose vendored llama.cpp we build (its gguf-py is gguf 0.19.0, our pin)."""

CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
)
"""The configuration measured to build here (add ``-DGGML_CUDA=ON`` for an NVIDIA GPU)."""

TARGETS = ("llama-server", "llama-quantize")
CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")
STAMP = "BUILD.json"
REQUIRED_TOOLS = {"cmake": "cmake", "make": "make", "c++": "g++"}
"""Programs the build runs -> the Debian/Ubuntu package that provides them."""


def sdist_cache() -> Path:
    """Where the downloaded sdist is kept: ``<sys.prefix>/cache/llama-cpp-python``."""
    return Path(sys.prefix) / "cache" / "llama-cpp-python"


def read_stamp(prefix: Path) -> dict | None:
    try:
        return json.loads((prefix / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_built(prefix: Path, cmake_flags: Sequence[str]) -> bool:
    """The stamp matches this version and these flags, and the programs are there."""
    stamp = read_stamp(prefix)
    return bool(stamp) and stamp.get("version") == LLAMA_CPP_PYTHON_VERSION \
        and stamp.get("cmake_flags") == list(cmake_flags) \
        and all(os.access(prefix / "bin" / t, os.X_OK) for t in TARGETS)


def check_tools() -> None:
    """One line naming what to ``apt-get install`` when cmake, make or a C++ compiler is missing."""
    missing = sorted({pkg for prog, pkg in REQUIRED_TOOLS.items() if shutil.which(prog) is None})
    if missing:
        raise UserError(f"building llama.cpp needs {', '.join(missing)}, not found on PATH",
                        f"sudo apt-get install -y {' '.join(missing)}, then rerun `make install`")


def fetch_sdist(cache: Path) -> Path:
    """The sdist from the cache, else ``pip download``ed into it (the build's only network access)."""
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    sdist = cache / name
    if sdist.is_file():
        logger.info("llama.cpp source: %s (cached)", sdist)
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("downloading llama-cpp-python==%s (sdist, ~76 MB) into %s", LLAMA_CPP_PYTHON_VERSION, cache)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "--dest", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not sdist.is_file():
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise UserError(f"could not download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}: {tail}",
                        f"check the network, or put {name} into {cache}")
    return sdist


def extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract the sdist's ``vendor/llama.cpp`` into ``dest``; returns the llama.cpp source folder."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise UserError(f"{sdist} has no {prefix}", f"delete it and rerun: {sys.argv[0]} downloads it again")
        tar.extractall(dest, members=members, filter="data")
    return dest / prefix.rstrip("/")


def _run_logged(cmd: Sequence[str], log: Path, what: str) -> None:
    """Run ``cmd``, its output appended to ``log``; log the build's ``[ NN%]`` progress every 10%."""
    logger.info("%s: %s", what, " ".join(cmd))
    shown = -10
    with log.open("a", encoding="utf-8") as out:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        for line in proc.stdout:
            out.write(line)
            match = re.match(r"\[\s*(\d+)%\]", line)
            if match and int(match.group(1)) >= shown + 10:
                shown = int(match.group(1))
                logger.info("%s: %d%%", what, shown)
        code = proc.wait()
    if code != 0:
        tail = " | ".join(log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:])
        raise UserError(f"{what} failed (exit {code}): {tail}", f"full log: {log}")


def build_llama_cpp(prefix: str | Path | None = None, *, cmake_flags: Sequence[str] = CMAKE_FLAGS,
                    jobs: int | None = None, force: bool = False) -> dict:
    """Build llama.cpp into ``prefix`` (default ``engine_dir()``) unless its stamp matches; returns the stamp."""
    prefix = Path(prefix) if prefix else engine_dir()
    cmake_flags = list(cmake_flags)
    if not force and is_built(prefix, cmake_flags):
        stamp = read_stamp(prefix)
        logger.info("llama.cpp %s already built in %s (%s)", LLAMA_CPP_PYTHON_VERSION, prefix, STAMP)
        return stamp
    check_tools()
    started = time.perf_counter()
    jobs = jobs or os.cpu_count() or 1
    sdist = fetch_sdist(sdist_cache())
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llama.cpp-build-", dir=prefix.parent) as tmp:
        work = Path(tmp)
        source = extract_llama_cpp(sdist, work / "src")
        build, log = work / "build", work / "build.log"
        try:
            _run_logged(["cmake", "-S", str(source), "-B", str(build), *cmake_flags], log, "cmake configure")
            _run_logged(["cmake", "--build", str(build), f"-j{jobs}", "--target", *TARGETS], log, "cmake build")
        except UserError:
            kept = prefix.parent / "llama.cpp-build.log"
            shutil.copyfile(log, kept)
            raise UserError(f"building llama.cpp failed: {_tail(kept)}", f"full log: {kept}") from None

        staging = work / "install"
        (staging / "bin").mkdir(parents=True)
        for target in TARGETS:
            shutil.copy2(build / "bin" / target, staging / "bin" / target)
        for name in CONVERTER_FILES:
            src = source / name
            if src.is_dir():
                shutil.copytree(src, staging / name, ignore=shutil.ignore_patterns("__pycache__", "tests"))
            else:
                shutil.copy2(src, staging / name)
        stamp = {"version": LLAMA_CPP_PYTHON_VERSION, "cmake_flags": cmake_flags, "targets": list(TARGETS),
                 "jobs": jobs, "seconds": round(time.perf_counter() - started, 1), "sdist": sdist.name}
        (staging / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        if prefix.exists():
            shutil.rmtree(prefix)
        staging.rename(prefix)
    logger.info("llama.cpp %s built into %s in %.0f s", LLAMA_CPP_PYTHON_VERSION, prefix, stamp["seconds"])
    return stamp


def _tail(log: Path, lines: int = 5) -> str:
    return " | ".join(log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmforge.engine.build", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=None,
                        help="install folder (default: $LMFORGE_LLAMA_CPP, else <sys.prefix>/llama.cpp)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: all cores)")
    parser.add_argument("--cmake-flag", action="append", default=[], dest="cmake_flags",
                        help="an extra cmake flag, e.g. --cmake-flag=-DGGML_CUDA=ON (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even when BUILD.json matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_llama_cpp(args.prefix, cmake_flags=[*CMAKE_FLAGS, *args.cmake_flags], jobs=args.jobs, force=args.force)


if __name__ == "__main__":
    run_cli(main, "python -m lmforge.engine.build")
