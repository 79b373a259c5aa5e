"""Headless Debian Chromium driven by playwright, for the tests that check pages in a real browser
(tests/test_ui.py: the frontend; tests/test_photomaker_batch.py: the batch contact sheet)."""
from __future__ import annotations

import os
import shutil

import pytest

# Headless flags for a root sandbox without network or GPU (playwright adds --headless and its own
# fresh --user-data-dir).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def unavailable(reason: str):
    """Missing browser tooling: a failure in CI (CI=true), a skip with the reason elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"UI test prerequisites missing in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (run scripts/setup_env.sh as root to install it)")


def chromium() -> str:
    """$PM_CHROMIUM if set (only it), else Debian's /usr/bin/chromium or a chromium on PATH."""
    override = os.environ.get("PM_CHROMIUM")
    cands = [override] if override else ["/usr/bin/chromium", shutil.which("chromium"),
                                         shutil.which("chromium-browser")]
    for cand in cands:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    unavailable(f"chromium not found ({override or '/usr/bin/chromium'}; apt-get install chromium)")


def require_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("python playwright is not installed (requirements-dev.txt)")


def launch(pw, executable: str | None = None):
    """A headless Chromium from a started sync_playwright()."""
    return pw.chromium.launch(executable_path=executable or chromium(), args=CHROMIUM_ARGS, headless=True)
