"""A real browser for the console tests: Playwright driving Debian's chromium.

Never ``playwright install`` (it downloads browsers): ``make install`` installs the
``chromium`` package, and tests skip with one clear message where it or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("MODELEDIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_path() -> str | None:
    """The chromium executable, or None when it is not installed."""
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def unavailable(reason: str) -> None:
    """Skip with ``reason``; fail instead on CI (``MODELEDIT_REQUIRE_BROWSER=1``)."""
    if os.environ.get("MODELEDIT_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (MODELEDIT_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@contextmanager
def launched() -> Iterator[Any]:
    """Yield a Playwright ``Browser``; skip (with the reason) if it cannot be had."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        unavailable("chromium is not installed (make install, or apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
