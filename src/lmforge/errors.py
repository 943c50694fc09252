"""How lmforge's commands report failure: one line for a user's mistake, the full traceback kept for a bug.

A newcomer who mistypes a path or a pipeline name should read what went wrong and what to do next, on
one line of stderr, not the last line of a 100-line traceback. A bug, on the other hand, needs its
traceback. So every command line (``python -m lmforge.packaging.serve|chat|loadtest``, ``python -m
lmforge.results``, ``python -m lmforge.model``, ``python -m lmforge.dvc_deps`` and ``kedro run`` through
``lmforge.error_hooks``) ends the same way:

- an **expected** error (``UserError``, a missing file, and our own error types named in
  ``EXPECTED``: a refused quality gate, a failed training job...) prints ``error: <message> (<next
  step>)`` on stderr and exits 1;
- an **unexpected** one prints one line naming its type and a log file holding the full traceback
  (under the temporary directory, never in the project), or the traceback itself with ``--verbose``
  (or ``LMFORGE_VERBOSE=1``).

This module is a leaf: it imports no lmforge module, so any module may raise ``UserError`` without an
import circle. Our older error types are recognised by qualified name (``EXPECTED``) for the same reason.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "LMFORGE_VERBOSE"


class UserError(Exception):
    """A mistake the user can fix: ``message`` says what is wrong, ``next_step`` what to do about it."""

    def __init__(self, message: str, next_step: str | None = None):
        super().__init__(message)
        self.message = message
        self.next_step = next_step

    def __str__(self) -> str:
        return f"{self.message} ({self.next_step})" if self.next_step else self.message


DISK_FULL_FREE_BYTES = 1 << 20
"""Below this much free space a failed write counts as a full disk (see ``is_disk_full``)."""


def is_disk_full(exc: BaseException, path: str | os.PathLike) -> bool:
    """Whether ``exc``, raised while writing under ``path``, is a full disk (or quota).

    ``ENOSPC``/``EDQUOT`` anywhere in the exception's cause chain; or any error while less than
    ``DISK_FULL_FREE_BYTES`` are free there: ``torch.save`` reports a full disk as
    ``RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534`` (torch 2.x,
    measured on a full 256 KiB tmpfs), no errno at all.
    """
    import errno
    import shutil

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        return shutil.disk_usage(where).free < DISK_FULL_FREE_BYTES
    except OSError:
        return False


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n // 1024} KiB"


def disk_full_error(path: str | os.PathLike, what: str, next_step: str) -> UserError:
    """The one line for a full disk: what could not be written where, how much is free, what to do."""
    import shutil

    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
        free = f"{_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        free = "free space unknown"
    return UserError(f"disk full while writing {what} {path} ({free})", f"free disk space there, or {next_step}")


EXPECTED: dict[str, str | None] = {
    "packaging.gate.GateError": None,  # its message ends with where the thresholds live
    "packaging.export.PackageVerificationError": "rebuild it: `kedro run --pipelines packaging`",
    "training.launch.TrainingError": "the job's full log is under the stage's run_dir",
    "tokenizer.export.ParityError": "the exported tokenizer is wrong: rerun `kedro run --pipelines tokenizer`",
    "data.validation.DataValidationError": "see the Data Docs under data/08_reporting/data_docs",
    "data.readers.SourceError": "check `data_processing.sources` in conf/base/parameters_data_processing.yml",
    "data.sft_formats.RecordError": "fix the record or drop it from the source",
    "packaging.chat_model.BadRequest": None,
    "model.base_model.RemoteCodeRefused": None,  # names the parameter that opts in, and the native port
    "tokenizer.chat_tokenizer.ChatTemplateError": None,  # says what is wrong with the template and what to set
    "tokenizer.template_audit.TemplateMismatchError": None,  # names the first differing token and the audits
    "engine.parity.TemplateParityError": None,  # names the format, conversation and first differing token
    "builtins.FileNotFoundError": None,  # our messages name the command that produces the file
}
"""Our error types (and builtins we raise for user mistakes) that are expected: qualified name -> next step
(None: the message already says it). Named, not imported, so this module stays a leaf; our own types
without the leading ``lmforge.``, because ``lmforge.dvc_deps`` reads a ``"lmforge.x.y"`` literal as a
module the code runs."""


def _qualified(exc_type: type) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}".removeprefix(__package__ + ".")


def is_expected(exc: BaseException) -> bool:
    """True for a user's mistake (one line is enough), False for a bug (keep the traceback)."""
    return isinstance(exc, UserError) or any(_qualified(t) in EXPECTED for t in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    """``<message> (<next step>)`` on one line: newlines of a long message are folded."""
    if isinstance(exc, UserError):
        text = str(exc)
    else:
        step = next((EXPECTED[name] for t in type(exc).__mro__ if (name := _qualified(t)) in EXPECTED), None)
        text = str(exc) or type(exc).__name__
        if step:
            text = f"{text} ({step})"
    return " ".join(text.split())


def write_traceback(exc: BaseException, prog: str) -> Path:
    """The full traceback in ``<tmp>/lmforge-errors/<prog>-<time>-<pid>.log`` (outside the project)."""
    folder = Path(tempfile.gettempdir()) / "lmforge-errors"
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in prog)
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    return path


def report(exc: BaseException, prog: str, *, verbose: bool = False) -> int:
    """Print ``exc`` the way this module's docstring says; returns the exit status (1)."""
    if is_expected(exc):
        if verbose:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)  # noqa: T201 - the command's error line
        return 1
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
        return 1
    log = write_traceback(exc, prog)
    print(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (full traceback in {log}; "  # noqa: T201
          f"rerun with {VERBOSE_FLAG} to see it here)", file=sys.stderr, flush=True)
    return 1


def flush_logs() -> None:
    """Flush the root logger's handlers (not close them: a test may run the command in process)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def pop_verbose(argv: Sequence[str] | None) -> tuple[list[str], bool]:
    """(``argv`` without ``--verbose``, whether it was there or ``LMFORGE_VERBOSE`` is set)."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in args or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    return [a for a in args if a != VERBOSE_FLAG], verbose


def run_cli(main: Callable[[list[str]], Any], prog: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Run a command's ``main(argv)`` and exit: 0, or 1 with one line on stderr (see the module docstring).

    ``SystemExit`` passes through (argparse's usage errors, ``--help``, an explicit exit status);
    Ctrl-C exits 130 without a traceback.
    """
    args, verbose = pop_verbose(argv)
    try:
        result = main(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - this is the one place that decides how an error is shown
        flush_logs()  # what the command logged comes before the error line
        sys.exit(report(exc, prog, verbose=verbose))
    sys.exit(result if isinstance(result, int) else 0)
