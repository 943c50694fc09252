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
