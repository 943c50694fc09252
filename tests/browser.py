"""Headless Chromium for the browser tests: Debian's build (`make browser`), driven by Playwright, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No background traffic: this machine's network is closed, and a test must not need it.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-quic", "--no-first-run", "--disable-sync"]


def require_chromium() -> Path:
    """Debian's chromium with playwright, or a skip; a failure when $CI is set (CI must run the browser tests)."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} missing: `make browser` installs Debian's chromium"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as err:
            missing = f"playwright missing ({err}): pip install -e '.[dev]'"
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {missing}")
    if missing:
        pytest.skip(missing)
    return CHROMIUM
