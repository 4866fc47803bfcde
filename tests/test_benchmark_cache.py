"""The benchmarks' input cache: rebuilt when dermstack's code changes, never removing a user's folder."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import features_scale as fs  # noqa: E402


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "bench"
    monkeypatch.setattr(fs, "CACHE_ROOT", root)
    return root


def test_inputs_are_reused_only_when_built_by_this_code(cache_root):
    folder = cache_root / "boosting-1000"
    assert not fs.cached(folder, "k1")  # new: build it
    (folder / "features.parquet").write_text("built by k1")
    fs.stamp(folder, "k1")
    assert fs.cached(folder, "k1")
    assert (folder / "features.parquet").exists()
    assert not fs.cached(folder, "k2")  # the code changed: emptied for a rebuild
    assert list(folder.iterdir()) == []


def test_an_old_unstamped_cache_is_rebuilt_but_a_users_folder_is_read_as_it_is(cache_root, tmp_path):
    old = cache_root / "isic2024-1000"
    old.mkdir(parents=True)
    (old / "train-metadata.csv").write_text("old")
    assert not fs.cached(old, "k") and not (old / "train-metadata.csv").exists()
    mine = tmp_path / "my-layout"
    mine.mkdir()
    (mine / "train-metadata.csv").write_text("mine")
    assert fs.cached(mine, "k")
    assert (mine / "train-metadata.csv").read_text() == "mine"


def test_the_key_follows_the_source():
    assert fs.code_key() == fs.code_key() and len(fs.code_key()) == 16
    assert fs.code_key(*fs.SYNTH_CODE) != fs.code_key()
