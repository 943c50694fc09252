"""``python -m lmforge.engine.build``: the stamp makes a second run free; missing compilers are one clear line.

The real build (~15 min on 2 cores) runs in ``make install``, not here.
"""

from __future__ import annotations

import json

import pytest

from lmforge.engine.build import CMAKE_FLAGS, LLAMA_CPP_PYTHON_VERSION, TARGETS, build_llama_cpp, main
from lmforge.engine.llama_cpp import ENV_VAR, converter, engine_dir, tool
from lmforge.errors import UserError


def fake_build(prefix, flags=CMAKE_FLAGS):
    """A prefix as a finished build leaves it: both programs and a stamp."""
    (prefix / "bin").mkdir(parents=True)
    for target in TARGETS:
        (prefix / "bin" / target).write_text("#!/bin/sh\n")
        (prefix / "bin" / target).chmod(0o755)
    stamp = {"version": LLAMA_CPP_PYTHON_VERSION, "cmake_flags": list(flags), "seconds": 1.0}
    (prefix / "BUILD.json").write_text(json.dumps(stamp))
    return stamp


@pytest.fixture
def no_build_tools(tmp_path, monkeypatch):
    """A PATH without cmake, make or a compiler: reaching the real build fails at once."""
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_a_matching_stamp_skips_the_build(tmp_path, no_build_tools, caplog):
    stamp = fake_build(tmp_path / "llama.cpp")
    caplog.set_level("INFO")
    assert build_llama_cpp(tmp_path / "llama.cpp") == stamp
    assert "already built" in caplog.text


@pytest.mark.parametrize("change", ["flags", "version", "program"])
def test_a_stale_build_is_rebuilt_and_missing_tools_are_named(tmp_path, no_build_tools, change, capsys):
    prefix = tmp_path / "llama.cpp"
    fake_build(prefix, flags=CMAKE_FLAGS[:-1] if change == "flags" else CMAKE_FLAGS)
    if change == "version":
        (prefix / "BUILD.json").write_text(json.dumps({"version": "0.0.1", "cmake_flags": list(CMAKE_FLAGS)}))
    if change == "program":
        (prefix / "bin" / "llama-server").unlink()
    with pytest.raises(UserError, match="needs cmake, g\\+\\+, make.*apt-get install -y cmake g\\+\\+ make"):
        build_llama_cpp(prefix)
    with pytest.raises(SystemExit) as exit_info:  # the command: one line on stderr, exit 1
        from lmforge.errors import run_cli
        run_cli(main, "python -m lmforge.engine.build", ["--prefix", str(prefix)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: building llama.cpp needs") and "\n" not in err


def test_the_engine_is_found_by_variable_or_in_the_venv(tmp_path, monkeypatch):
    import sys

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert engine_dir() == type(engine_dir())(sys.prefix) / "llama.cpp"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "llama.cpp"))
    assert engine_dir() == tmp_path / "llama.cpp"
    with pytest.raises(UserError, match="llama-server not found.*make install"):
        tool("llama-server")
    with pytest.raises(UserError, match="converter incomplete.*make install"):
        converter()
    fake_build(tmp_path / "llama.cpp")
    assert tool("llama-quantize") == tmp_path / "llama.cpp" / "bin" / "llama-quantize"


def small_sdist(cache):
    """An sdist shaped like llama-cpp-python's (``vendor/llama.cpp`` with a CMake project building both targets,
    and the converter files) but seconds to build: the build's real path (extract, cmake with our flags, install,
    stamp) on a small source tree."""
    import io
    import tarfile

    root = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    src = f"{root}/vendor/llama.cpp"
    files = {
        f"{src}/CMakeLists.txt": "cmake_minimum_required(VERSION 3.14)\nproject(tiny CXX)\n"
                                 "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)\n"
                                 + "".join(f"add_executable({t} main.cpp)\ntarget_compile_definitions({t} PRIVATE "
                                           f'NAME="{t}")\n' for t in TARGETS),
        f"{src}/main.cpp": '#include <cstdio>\nint main() { std::puts(NAME); return 0; }\n',
        f"{src}/convert_hf_to_gguf.py": "", f"{src}/conversion/__init__.py": "",
        f"{src}/gguf-py/gguf/__init__.py": "", f"{src}/LICENSE": "MIT\n",
        f"{root}/setup.py": "raise SystemExit('not extracted')\n",
    }
    cache.mkdir(parents=True)
    with tarfile.open(cache / f"{root}.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))


def test_the_build_installs_the_layout_and_stamps_it(tmp_path, monkeypatch, caplog):
    import shutil
    import subprocess

    import lmforge.engine.build as build

    if not all(shutil.which(p) for p in build.REQUIRED_TOOLS):
        pytest.skip("cmake, make and a C++ compiler are needed (make install checks them)")
    small_sdist(tmp_path / "cache")
    monkeypatch.setattr(build, "sdist_cache", lambda: tmp_path / "cache")  # the pip download is skipped: cached
    caplog.set_level("INFO")
    stamp = build_llama_cpp(tmp_path / "llama.cpp", jobs=2)
    assert stamp["cmake_flags"] == list(CMAKE_FLAGS) and stamp["version"] == LLAMA_CPP_PYTHON_VERSION
    assert json.loads((tmp_path / "llama.cpp" / "BUILD.json").read_text()) == stamp
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "llama.cpp"))
    for target in TARGETS:
        assert subprocess.run([tool(target)], capture_output=True, text=True).stdout.strip() == target
    assert converter() == (tmp_path / "llama.cpp" / "convert_hf_to_gguf.py", tmp_path / "llama.cpp" / "gguf-py")
    assert not (tmp_path / "llama.cpp" / "setup.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "llama.cpp"]  # no build folder left behind
    assert "cmake build: 100%" in caplog.text
    caplog.clear()
    assert build_llama_cpp(tmp_path / "llama.cpp") == stamp and "already built" in caplog.text
