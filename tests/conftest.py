"""Shared test fixtures: where the real development data lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_data_dir() -> Path | None:
    """``$DERMSTACK_SHARED_DATA`` or ``<repo>/../shared/data`` (CI puts shared/ beside the clone)."""
    for cand in (os.environ.get("DERMSTACK_SHARED_DATA"), REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared development data not found (set DERMSTACK_SHARED_DATA)")
    return d
