"""`read_code_folder`: the documents of a code folder, read the simplest way, for tests only.

The stage reads folders with `lmforge.data.ingest` (listing once, shards read lazily by workers);
this reader does the same walk eagerly from the same building blocks (`list_files`,
`read_file_document`), so tests can build corpora and check the listing rules with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from lmforge.data.documents import Document
from lmforge.data.sources import list_files, read_file_document

logger = logging.getLogger(__name__)


def read_code_folder(
    root: str | Path,
    patterns: Sequence[str] = ("**/*.py",),
    *,
    source: str,
    license: str,
    exclude: Sequence[str] = (),
) -> Iterator[Document]:
    """Yield one Document per file under root matching patterns, in sorted path order.

    Args:
        root: folder to walk.
        patterns: globs over paths relative to root (`**/*.py` includes top-level files).
        source: corpus name stored on each record and mixed into its id.
        license: license of the corpus, stored in each record's metadata.
        exclude: globs of relative paths to leave out (e.g. `default_stdlib_excludes`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder does not exist: {root}")
    paths = list_files(root, patterns, exclude)
    logger.info("Reading %d files from %s (source=%s)", len(paths), root, source)
    for relative_path in paths:
        yield read_file_document(root, relative_path, source=source, license=license)
