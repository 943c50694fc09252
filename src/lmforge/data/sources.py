"""Readers that turn raw sources into `Document`s, and sharding for storage.

The default raw corpus is the running interpreter's standard library: real code,
available offline. The reader never drops a file on its own: a file that is not
valid UTF-8, is binary or cannot be read is still yielded, flagged in its metadata,
so that the cleaning step quarantines it with a reason and the counts reconcile.
Files are visited in sorted order and ids are hashes of (source, relative path),
so two runs on two machines produce the same records in the same order.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

from lmforge.data.documents import Document

logger = logging.getLogger(__name__)

default_stdlib_excludes: tuple[str, ...] = (
    "site-packages/**",
    "test/**",
    "**/tests/**",
    "idlelib/idle_test/**",
    "lib2to3/tests/**",
    "**/__pycache__/**",
)
"""Globs (relative to the stdlib root) left out of the stdlib corpus: installed
third-party packages, caches, and test folders, which hold deliberately malformed files."""


def python_stdlib_root() -> Path:
    """Return the running interpreter's standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def make_document_id(source: str, relative_path: str) -> str:
    """Return a stable id: the first 16 hex chars of sha256("{source}:{relative_path}")."""
    return hashlib.sha256(f"{source}:{relative_path}".encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate a path glob into a regex over relative posix paths.

    `**/` matches zero or more folders, `**` anything, `*` and `?` stay within one
    path segment, `[...]` is a character class (`[!...]` negated).
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def match_glob(relative_path: str, pattern: str) -> bool:
    """Return whether a relative posix path matches a glob (see `_compile_glob`)."""
    return _compile_glob(pattern).match(relative_path) is not None


def _is_pruned(relative_dir: str, exclude: Sequence[str]) -> bool:
    """Return whether everything under a folder is excluded (a pattern `<prefix>/**` covers it)."""
    return any(pattern.endswith("/**") and match_glob(relative_dir, pattern[:-3]) for pattern in exclude)


def list_files(
    root: str | Path,
    patterns: Sequence[str] = ("**/*.py",),
    exclude: Sequence[str] = (),
) -> list[str]:
    """Return the sorted relative posix paths under root matching a pattern and no exclude.

    Symlinked folders are not followed (no cycles, no escaping the root).
    """
    root = Path(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        relative_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        dirnames[:] = [d for d in dirnames if not _is_pruned(prefix + d, exclude)]
        for name in filenames:
            path = prefix + name
            if any(match_glob(path, p) for p in patterns) and not any(match_glob(path, p) for p in exclude):
                found.append(path)
    return sorted(found)


def read_file_document(root: Path, relative_path: str, *, source: str, license: str) -> Document:
    """Read one file into a Document, flagging (never raising on) bad encodings and I/O errors."""
    metadata: dict[str, object] = {"path": relative_path, "license": license}
    doc_id = make_document_id(source, relative_path)
    try:
        data = (root / relative_path).read_bytes()
    except OSError as exc:
        metadata["size_bytes"] = 0
        metadata["read_error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
        return Document(id=doc_id, text="", source=source, metadata=metadata)
    metadata["size_bytes"] = len(data)
    if b"\x00" in data:
        metadata["binary"] = True
        return Document(id=doc_id, text="", source=source, metadata=metadata)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        metadata["encoding_error"] = True
    return Document(id=doc_id, text=text, source=source, metadata=metadata)


def shard_documents(docs: Iterable[Document], shard_size: int) -> dict[str, list[dict]]:
    """Group documents, in input order, into shards "shard-00000", ... of shard_size records."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards: dict[str, list[dict]] = {}
    current: list[dict] = []
    for doc in docs:
        current.append(doc.to_dict())
        if len(current) == shard_size:
            shards[f"shard-{len(shards):05d}"] = current
            current = []
    if current:
        shards[f"shard-{len(shards):05d}"] = current
    return shards
