"""Shared fixtures. Shared data is found through $OLMO2_DATA_DIR (default ../shared/data);
in CI (CI=true) a test that needs it fails instead of skipping when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("OLMO2_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not d.is_dir():
        msg = f"shared data directory {d} is missing (set OLMO2_DATA_DIR)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def dolma2_path(data_dir: Path) -> Path:
    return data_dir / "tokenizers" / "allenai_dolma2.json"
