"""A model directory: native booster files plus ``model.json`` that says how to reload and apply them.

``models/<name>/fold{k}_seed{s}.{txt|json|cbm}`` (multi-label: ``fold{k}_seed{s}.<class>.<ext>``),
``model.json`` (library, task, classes, feature columns with groups and categories, params,
sampling, versions, files), ``metrics.json``, ``importance.parquet``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermstack.atomic import write_json
from dermstack.boosting.base import FeatureMatrix
from dermstack.boosting.registry import load_adapter
from dermstack.errors import DataError
from dermstack.features.featureset import FeatureSet
from dermstack.provenance import versions

FORMAT_VERSION = 1


@dataclass
class ModelStore:
    dir: Path
    spec: dict
    files: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, name, model, task, matrix: FeatureMatrix, groups, params, sampling) -> "ModelStore":
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("fold*_seed*.*"):
            old.unlink()
        spec = {
            "format_version": FORMAT_VERSION, "name": name, "kind": model.kind, "task": task.kind,
            "classes": list(task.classes), "target_name": task.target_name,
            "features": matrix.to_json() | {"groups": {c: groups.get(c) for c in matrix.columns},
                                            "requested_groups": model.features},
            "params": params, "sampling": dataclasses.asdict(sampling) if sampling else None,
            "seeds": list(model.seeds), "versions": versions(),
        }
        return cls(directory, spec)

    def add(self, adapter, fold: int, seed: int) -> None:
        stem = self.dir / f"fold{fold}_seed{seed}"
        paths = adapter.save(stem)
        self.files.append({"fold": fold, "seed": seed, "stem": stem.name, "files": [p.name for p in paths]})

    def finish(self, result) -> None:
        write_json(self.dir / "model.json", self.spec | {"models": self.files})
        write_json(self.dir / "metrics.json", result.metrics)
        result.importance.write_parquet(self.dir / "importance.parquet")


def read_spec(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "model.json"
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError("no model.json: not a trained dermstack model directory", file=str(path)) from None
    if spec.get("format_version") != FORMAT_VERSION:
        raise DataError(f"model format version {spec.get('format_version')} is not {FORMAT_VERSION}", file=str(path))
    return spec


def load_models(model_dir: str | Path) -> list:
    """Every fold/seed adapter of a model directory, in training order."""
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    cats = list(spec["features"]["categories"])
    for entry in spec["models"]:
        for f in entry["files"]:
            if not (model_dir / f).exists():
                raise DataError("model file listed in model.json is missing", file=str(model_dir / f))
    return [load_adapter(spec["kind"], spec["task"], spec["classes"], model_dir / e["stem"], cats) for e in spec["models"]]


def predict_saved(model_dir: str | Path, features: FeatureSet) -> np.ndarray:
    """Scores of every row of ``features`` averaged over the saved folds and seeds: (n,) or (n, C).

    Categories are mapped to the ones seen in training (unseen values become missing, with a warning)."""
    spec = read_spec(model_dir)
    matrix = FeatureMatrix.from_json(spec["features"])
    X = matrix.to_pandas(features.df, source=str(model_dir))
    adapters = load_models(model_dir)
    return np.mean([a.predict_proba(X) for a in adapters], axis=0)
