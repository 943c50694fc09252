"""Where the Kedro catalog puts a dataset: the default paths of the command-line tools.

The serving tools (``python -m lmforge.packaging.serve``, ``...loadtest``) run outside ``kedro run``
but read and write the chain's artifacts (the packaged model, the feedback table, the load report).
Their defaults come from conf/base/catalog.yml (with conf/local overrides, as ``kedro run`` sees
them) through this helper, so a path is written once, in the catalog; the library functions they
call take the path as an argument.
"""

from __future__ import annotations

from pathlib import Path

CATALOG = Path("conf/base/catalog.yml")


def find_project_root(start: str | Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: the working directory) holding conf/base/catalog.yml.

    Falls back to the checkout this package was imported from (src/lmforge/pipelines -> the root).
    """
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents, Path(__file__).resolve().parents[3]):
        if (candidate / CATALOG).is_file():
            return candidate
    raise FileNotFoundError(f"no {CATALOG} at or above {here}: run from the lmforge project, or pass the path")


def catalog_filepath(name: str, project_root: str | Path | None = None, env: str = "local") -> str:
    """The ``filepath`` (or ``path``) of catalog entry ``name``, relative to the project root as written there.

    A wrapped dataset (``dataset: {filepath: ...}``, e.g. an MLflow artifact dataset) gives the inner
    one's path. KeyError names the entry when the catalog lacks it.
    """
    from kedro.config import OmegaConfigLoader

    root = find_project_root(project_root)
    catalog = OmegaConfigLoader(conf_source=str(root / "conf"), base_env="base", default_run_env=env)["catalog"]
    if name not in catalog:
        raise KeyError(f"{name!r} is not an entry of {root / CATALOG}")
    entry = catalog[name]
    for spec in (entry, entry.get("dataset") if isinstance(entry.get("dataset"), dict) else {}):
        for key in ("filepath", "path"):
            if spec.get(key):
                return str(spec[key])
    raise KeyError(f"catalog entry {name!r} has no filepath")
