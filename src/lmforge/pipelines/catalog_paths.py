"""Where a catalog dataset lives on disk, read from the project's Kedro config (``conf/base/catalog.yml``).

The catalog owns the ``data/0x_...`` paths. Library code takes paths as arguments; the few command-line
tools that need a default (``python -m lmforge.results``, the server and the load test) ask this module
instead of writing a literal, so moving a dataset in ``catalog.yml`` moves it everywhere.

The config is read with Kedro's ``OmegaConfigLoader`` and the project's own settings
(``settings.CONFIG_LOADER_ARGS``: environments ``base`` + ``local``, the ``project_root`` resolver), so
``conf/local`` overrides and interpolations resolve as they do in ``kedro run``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=8)
def _catalog_config(conf_source: str) -> Mapping[str, Any]:
    """The project's resolved catalog config (cached: the CLIs ask for several datasets)."""
    from kedro.config import OmegaConfigLoader

    from lmforge.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(conf_source=conf_source, **CONFIG_LOADER_ARGS)
    return loader["catalog"]


def dataset_filepath(entry: Mapping[str, Any]) -> str | None:
    """The on-disk location of one catalog entry, or None for an in-memory dataset.

    ``filepath`` for file datasets, ``path`` for ``PartitionedDataset``, and the wrapped dataset's
    location for wrappers such as ``kedro_mlflow``'s ``MlflowArtifactDataset``.
    """
    for key in ("filepath", "path"):
        if key in entry:
            return str(entry[key])
    inner = entry.get("dataset")
    return dataset_filepath(inner) if isinstance(inner, Mapping) else None


def catalog_path(name: str, project_root: str | Path = ".") -> str:
    """The filepath of catalog dataset ``name``, as written in the catalog (relative to ``project_root``).

    Args:
        name: a dataset name of ``conf/base/catalog.yml``, e.g. ``"packaged_model"``.
        project_root: the Kedro project whose ``conf/`` is read.

    Raises:
        KeyError: ``name`` is not in the catalog, or it has no location on disk (a ``MemoryDataset``).
    """
    catalog = _catalog_config(str(Path(project_root, "conf").resolve()))
    if name not in catalog:
        raise KeyError(f"{name!r} is not a dataset of the catalog ({Path(project_root, 'conf')})")
    path = dataset_filepath(catalog[name])
    if path is None:
        raise KeyError(f"catalog dataset {name!r} has no filepath (it is not stored on disk)")
    return path
