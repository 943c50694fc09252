"""What a user sees when a command fails: the one-line error contract of lmforge.errors, as a test assertion."""

from __future__ import annotations

import subprocess


def assert_one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Non-zero exit, exactly one line on stderr, ``error: ...``, no traceback; returns the line."""
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]
