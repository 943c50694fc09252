"""One-line errors: lmforge.errors decides how a command fails, and every command line goes through it.

Expected errors (ours, a missing file) print ``error: <message> (<next step>)`` and exit 1; unexpected
ones print one line naming a log file that holds the traceback, or the traceback with ``--verbose``.
The commands run as real subprocesses; ``kedro run`` with an unknown pipeline name runs in the project
root (against a temporary MLflow store) and must leave the project as it found it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_error_line
from mlflow_helpers import migrated_store

from lmforge.errors import UserError, is_expected, one_line, report, run_cli

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KEDRO = Path(sys.executable).parent / "kedro"


def _git_status() -> list[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, check=True).stdout
    return sorted(line for line in out.splitlines() if "__pycache__" not in line)


# --- the presentation layer ---


def test_user_error_is_its_message_and_next_step():
    err = UserError("port 8000 is taken", "pass --port")
    assert str(err) == "port 8000 is taken (pass --port)" and is_expected(err)
    assert str(UserError("just this")) == "just this"


def test_our_error_types_are_expected_and_bugs_are_not():
    from lmforge.packaging.gate import GateError
    from lmforge.tokenizer.export import ParityError
    from lmforge.training.launch import TrainingError

    for exc in (GateError("refused"), TrainingError("rank 0 failed"), ParityError("differs"),
                FileNotFoundError("no such file")):
        assert is_expected(exc), exc
    for exc in (RuntimeError("bug"), KeyError("x"), ZeroDivisionError()):
        assert not is_expected(exc), exc
    assert one_line(TrainingError("rank 0:\n  boom\n")) == (
        "rank 0: boom (the job's full log is under the stage's run_dir)")


def test_an_expected_error_is_one_line(capsys):
    assert report(UserError("bad", "do this"), "prog") == 1
    assert capsys.readouterr().err == "error: bad (do this)\n"


def test_an_unexpected_error_names_the_log_holding_its_traceback(capsys):
    def broken(argv):
        return {}["missing"]

    with pytest.raises(SystemExit) as info:
        run_cli(broken, "test-prog", [])
    assert info.value.code == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: unexpected KeyError: 'missing' (full traceback in ") and "--verbose" in line
    log = Path(line.split("full traceback in ")[1].split(";")[0])
    try:
        assert "Traceback" in log.read_text() and "broken" in log.read_text()
        assert PROJECT_ROOT not in log.parents  # never in the project
    finally:
        log.unlink()


def test_verbose_shows_the_traceback(capsys):
    def broken(argv):
        assert argv == ["--x"]  # --verbose is taken out before the command sees its arguments
        raise RuntimeError("boom")

    with pytest.raises(SystemExit):
        run_cli(broken, "test-prog", ["--verbose", "--x"])
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_system_exit_and_success_pass_through():
    with pytest.raises(SystemExit) as info:
        run_cli(lambda argv: None, "p", [])
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        run_cli(lambda argv: 3, "p", [])
    assert info.value.code == 3


# --- the commands, as a user runs them ---


def _command(*args: str, cwd: Path = PROJECT_ROOT, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_results_outside_the_project_is_one_line(tmp_path):
    line = assert_one_error_line(_command("lmforge.results", "--project", str(tmp_path / "nowhere")))
    assert "not the lmforge project" in line and "--project" in line


def test_dvc_deps_without_a_dvc_yaml_is_one_line(tmp_path):
    line = assert_one_error_line(_command("lmforge.dvc_deps", "--check", "--root", str(tmp_path)))
    assert "dvc.yaml" in line


def test_model_presets_with_a_bad_flag_is_argparse_usage_not_a_traceback():
    proc = _command("lmforge.model", "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--pipeline", "--pipelines"])
def test_kedro_run_of_an_unknown_pipeline_lists_the_valid_names(flag, tmp_path):
    import mlflow

    from lmforge.pipeline_registry import CHAIN

    # the store a user has after `make run` (a fresh one logs its table creation once: MLflow's INFO lines)
    uri = migrated_store(tmp_path / "mlflow.db")
    mlflow.MlflowClient(uri).search_experiments()
    before = _git_status()
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([str(KEDRO), "run", flag, "nonexistent"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    line = assert_one_error_line(proc)
    assert "no pipeline named 'nonexistent'" in line and all(name in line for name in CHAIN)
    assert _git_status() == before, "kedro run left files in the project"


def test_kedro_hook_turns_an_expected_node_error_into_one_line(monkeypatch):
    from lmforge.error_hooks import ErrorPresentationHooks
    from lmforge.packaging.gate import GateError

    hook = ErrorPresentationHooks()
    with pytest.raises(SystemExit) as info:
        hook.on_pipeline_error(GateError("sft_pairs.perplexity_ratio 1.3 > max 1.0\n(thresholds: `gate:`)"),
                               {}, None, None)
    assert info.value.code == "error: sft_pairs.perplexity_ratio 1.3 > max 1.0 (thresholds: `gate:`)"
    assert hook.on_pipeline_error(RuntimeError("a bug"), {}, None, None) is None  # Kedro shows its traceback
    monkeypatch.setenv("LMFORGE_VERBOSE", "1")
    assert hook.on_pipeline_error(GateError("refused"), {}, None, None) is None  # asked for the traceback
