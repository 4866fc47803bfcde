"""The tiny configs and run directories the tests share: the session-scoped fixture ``tiny``.

A config is the :data:`BASE` run (synthetic ISIC 2024, 150 lesions with 16 px images, 3 folds) with
each section's keys laid over it (a ``data`` section of another format replaces it); ``models`` is
the model list. ``tiny.run(...)`` makes a run
directory once per session for each config and hands out the same folder to every test that asks for
that config; a test that changes a run works on ``tiny.copy(run, dest)``.

    run = tiny.run(models=[booster("lightgbm"), booster("xgboost")], ensemble={"method": "mean"})
    path = tiny.write(tmp_path / "run.toml", data={"lesions": 300}, cv={"repeats": 2})
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import tomli_w

from dermstack.config import RunConfig
from dermstack.run import Run
from extract_fixtures import TEST_MODEL

#: the smallest run every tiny config starts from
BASE = {
    "data": {"format": "synthetic-isic2024", "lesions": 150, "test_lesions": 10, "positive_rate": 0.1, "image_size": 16},
    "cv": {"n_splits": 3},
}


def booster(kind: str = "lightgbm", rounds: int = 10, **entry) -> dict:
    """A ``[[models]]`` entry of a booster, small and on one thread (``entry``: other keys, ``params`` merged)."""
    return {"kind": kind, **entry, "params": {"n_estimators": rounds, "threads": 1, **entry.get("params", {})}}


def cnn_entry(epochs: int = 1, **params) -> dict:
    """A ``[[models]] kind = "cnn"`` entry of timm's test backbone at 32 px, not pretrained (``params`` merged)."""
    return {"kind": "cnn", "name": "cnn", "backbone": TEST_MODEL, "epochs": epochs, "image_size": 32,
            "params": {"pretrained": False, "samples_per_epoch": 64, "batch_size": 32, "lr": 0.003, "freeze_fraction": 0.0,
                       **params}}


def embedded(weights: Path, **extract) -> dict:
    """An ``[extract]`` section of timm's test backbone with the weights of the ``test_weights`` fixture."""
    return {"backbones": [TEST_MODEL], "image_size": 32, "pca_components": 4, "weights": {TEST_MODEL: str(weights)}, **extract}


def tiny_config(models: list[dict] | None = None, **sections: dict) -> dict:
    """:data:`BASE` with ``sections``' keys laid over it and ``models``; a ``data`` section of another
    format replaces BASE's (the synthetic data's keys do not apply to it)."""
    raw = copy.deepcopy(BASE)
    for name, keys in sections.items():
        other_format = name == "data" and keys.get("format", BASE["data"]["format"]) != BASE["data"]["format"]
        raw[name] = dict(keys) if other_format else {**raw.get(name, {}), **keys}
    if models is not None:
        raw["models"] = [dict(m) for m in models]
    return raw


class TinyRuns:
    """Tiny configs written to TOML, and finished run directories made once per config (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        self._runs: dict[str, Path] = {}

    raw = staticmethod(tiny_config)

    @staticmethod
    def write(path: Path, models: list[dict] | None = None, check: bool = True, **sections: dict) -> Path:
        """The config as a TOML file at ``path``, checked by RunConfig first unless ``check`` is false
        (a config for another process: a plugin's kind this one does not know)."""
        raw = tiny_config(models, **sections)
        if check:
            RunConfig.from_dict(raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tomli_w.dumps(raw))
        return path

    def run(self, models: list[dict] | None = None, **sections: dict) -> Path:
        """The run directory of this config (``<dir>/out``, its config beside it as ``<dir>/run.toml``), made on first use."""
        key = json.dumps(tiny_config(models, **sections), sort_keys=True)
        if key not in self._runs:
            where = self.root / f"run{len(self._runs)}"
            config = self.write(where / "run.toml", models, **sections)
            Run(RunConfig.from_toml(config), where / "out").execute()
            self._runs[key] = where / "out"
        return self._runs[key]

    @staticmethod
    def copy(run: Path, dest: Path) -> Path:
        """A private copy of a shared run directory, to change or damage."""
        shutil.copytree(run, dest, symlinks=True)
        return dest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyRuns:
    return TinyRuns(tmp_path_factory.mktemp("tiny"))
