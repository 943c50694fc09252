"""Manual pages (troff) as plain text, rendered by groff, one document per page.

Man pages are a macro language (``man`` and ``mdoc``): stripping the markup with regexes loses the
arguments of mdoc macros, tables and escapes. So each page is rendered by groff, the typesetter
``man`` itself uses, to UTF-8 text without overstrike, colour or hyphenation, on 2000-column lines
(one paragraph per line):

    zcat page.1.gz | groff -k -mandoc -Tutf8 -P-cbou -rLL=2000n -rHY=0

(``-k`` runs preconv, which detects the page's encoding; ~24 ms per page). The decompression is done
here and the page piped into groff through ``subprocess`` with a timeout; the pages of one shard
render in a thread pool (each groff is its own process).

What is skipped, before reading: symlinked pages (another name for a page already read). What is
skipped after reading: ``.so`` pages (one line that includes another page, the troff form of a
symlink). What is quarantined (yielded with ``metadata["read_error"]``, reason ``read_error`` in
cleaning, the message naming groff's exit status and last stderr line): a page that cannot be
decompressed, that groff rejects or times out on, or that renders to nothing.

Known limits: tables (``tbl``) are not preprocessed (``-t`` would double the time), so a table's
cells come out as their troff source lines; equations (``eqn``) likewise.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

GROFF_COMMAND = ("groff", "-k", "-mandoc", "-Tutf8", "-P-cbou", "-rLL=2000n", "-rHY=0")
"""How a page is rendered (reads the page on stdin)."""
GROFF_TIMEOUT_S = 30.0
_WIDE_GAP = re.compile(r"(?<=\S) {8,}")  # the header/footer padding of a 2000-column line
_BLANK_RUNS = re.compile(r"\n{3,}")


class RenderError(Exception):
    """A page that could not be rendered; the message says why (quarantined as ``read_error``)."""


def is_so_page(source: bytes) -> bool:
    """True for a page that only includes another one (``.so man1/other.1``), comments aside."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith((b'.\\"', b"'\\\""))]
    return len(lines) == 1 and lines[0].startswith(b".so ")


def read_page_source(path: Path) -> bytes:
    """The page's troff bytes (``.gz`` decompressed); raises RenderError when it cannot be read."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise RenderError(f"cannot read {path.name}: {exc}") from exc


def tidy_rendered(text: str) -> str:
    """Rendered text, tidied: header/footer padding to one space, trailing spaces and blank runs trimmed."""
    lines = [_WIDE_GAP.sub(" ", line.rstrip()) for line in text.splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


def render_troff(source: bytes, *, timeout: float = GROFF_TIMEOUT_S) -> str:
    """Render troff source with groff (see the module docstring); raises RenderError on any failure."""
    try:
        proc = subprocess.run(GROFF_COMMAND, input=source, capture_output=True, timeout=timeout,
                              env={**os.environ, "LC_ALL": "C.UTF-8"})
    except FileNotFoundError as exc:
        raise RenderError("groff is not installed (apt-get install groff-base)") from exc
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"groff did not finish in {timeout:g} s") from exc
    stderr = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise RenderError(f"groff exit {proc.returncode}: {stderr[-1] if stderr else 'no message'}")
    text = proc.stdout.decode("utf-8", errors="replace")
    if not text.strip():
        raise RenderError(f"groff rendered nothing{': ' + stderr[-1] if stderr else ''}")
    return tidy_rendered(text)


def render_page(path: Path, *, timeout: float = GROFF_TIMEOUT_S) -> str | None:
    """The page's rendered text; None for a ``.so`` page; raises RenderError when it cannot be rendered."""
    source = read_page_source(path)
    if is_so_page(source):
        return None
    return render_troff(source, timeout=timeout)


def page_name(relative_path: str) -> tuple[str, str]:
    """(name, section) of a page path: ``man1/ls.1.gz`` -> ("ls", "1")."""
    base = Path(relative_path).name.removesuffix(".gz")
    name, _, section = base.rpartition(".")
    return (name, section) if name else (base, "")


def render_pages(root: Path, paths: Sequence[str], *, workers: int | None = None,
                 timeout: float = GROFF_TIMEOUT_S) -> Iterator[tuple[str, str | None, str | None]]:
    """``(path, text or None, error or None)`` for each page, in the order given, rendered in parallel.

    text None and error None: a ``.so`` page (skipped by the caller).
    """
    def one(relative_path: str) -> tuple[str, str | None, str | None]:
        try:
            return relative_path, render_page(root / relative_path, timeout=timeout), None
        except RenderError as exc:
            return relative_path, None, str(exc)

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(one, paths)
