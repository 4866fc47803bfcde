"""A booster's model folder: native files per fold and seed, and the registry entry that says how to
reload and apply them (:mod:`dermstack.saved`).

``models/<name>/fold{k}_seed{s}.{txt|json|cbm}`` (multi-label: ``fold{k}_seed{s}.<class>.<ext>``) and
``model.json`` (library, task, classes, feature columns with groups and categories, params,
sampling, files, ``needs``), plus the registry's predictions, ``metrics.json``, ``importance.parquet``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermstack.boosting.base import FeatureMatrix
from dermstack.boosting.registry import load_adapter
from dermstack.calibration import undo_prior
from dermstack.errors import DataError, reading
from dermstack.features.featureset import FeatureSet
from dermstack.saved import Inputs, SavedModel, model_folder, model_spec, read_spec, write_model


@dataclass
class ModelStore:
    """Saves a booster's fold/seed files while it trains (wherever the fit runs); :meth:`finish` writes
    the folder's registry entry listing them."""

    dir: Path
    spec: dict

    @classmethod
    def create(cls, directory: Path, name, model, task, matrix: FeatureMatrix, groups, params, sampling,
               needs: dict | None = None) -> ModelStore:
        model_folder(directory)
        for old in directory.glob("fold*_seed*.*"):
            old.unlink()
        spec = model_spec(
            name, model.kind, task, needs,
            features=matrix.to_json() | {"groups": {c: groups.get(c) for c in matrix.columns},
                                         "requested_groups": model.features},
            params=params, sampling=dataclasses.asdict(sampling) if sampling else None, seeds=list(model.seeds))
        return cls(directory, spec)

    def save(self, adapter, fold: int, seed: int, prior_factor: np.ndarray | None = None) -> dict:
        """Save one fitted adapter; its entry for :meth:`finish`. ``prior_factor``: what its scores are
        divided by (dermstack.calibration)."""
        stem = self.dir / f"fold{fold}_seed{seed}"
        paths = adapter.save(stem)
        return {"fold": fold, "seed": seed, "stem": stem.name, "files": [p.name for p in paths],
                "prior_factor": None if prior_factor is None else np.asarray(prior_factor).tolist()}

    def finish(self, result, files: list[dict]) -> None:
        write_model(self.dir, self.spec | {"models": files}, result)


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
    # a model.json whose feature list was edited, or a native file from another model, fails in the library
    with reading(Path(model_dir) / "model.json", "model: its native files do not fit its model.json"):
        return np.mean([undo_prior(spec["task"], a.predict_proba(X), e.get("prior_factor"))
                        for a, e in zip(adapters, spec["models"])], axis=0)


class SavedBoosters(SavedModel):
    """A booster's folds and seeds, averaged. A booster trained with another model's feature group
    gets it in ``inputs.features`` (:func:`dermstack.saved.inputs_for`)."""

    def predict(self, inputs: Inputs) -> np.ndarray:
        return predict_saved(self.dir, inputs.features)
