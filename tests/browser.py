"""Headless Chromium for the browser tests (report card, explorer page, serve's chat page):
Debian's `chromium`, which `.ci/run` installs. Missing, a test skips locally and fails in CI
(CI=true), like the shared-data tests."""

from __future__ import annotations

import os
import shutil

import pytest

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
"""What this machine's closed network and a root user need (no sandbox, no background
connections, no first-run work)."""


def chromium() -> str:
    """The Chromium executable, or skip (fail in CI)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    msg = "headless Chromium is missing (Debian: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)
