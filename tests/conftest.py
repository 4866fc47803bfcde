"""Shared test fixtures: where the real development data lives, tiny runs (tiny_runs.py), embeddings (extract_fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dermstack.testing import shared_data_dir

# the embedding fixtures (images, table, test_weights), the tiny configs and runs (tiny) and the
# external-validation run and data (ham_run, archive) for every module that asks for them by name
pytest_plugins = ["extract_fixtures", "tiny_runs", "external_fixtures"]



@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared development data not found (set DERMSTACK_SHARED_DATA)")
    return d
