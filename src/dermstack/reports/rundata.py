"""What a report reads from a run directory: table, task, folds, features, OOF scores, metrics.

The models and their OOF scores come from the registry (``models/<name>/``, :mod:`dermstack.saved`),
so a folder the stage-by-stage CLI wrote reports like a ``dermstack run`` directory."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import read_json
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.errors import DataError
from dermstack.features.featureset import FeatureSet
from dermstack.predictions import Predictions
from dermstack.registry import Explainer, FoldExplainer, ModelKind, model_kind, model_kinds
from dermstack.saved import dependency_order, group_source, load, model_dirs, read_spec
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)
OOF_COLUMNS = ("image_id", "model", "seed", "fold", "class", "score")


@dataclass
class RunData:
    """The artifacts of one run that reports use; features and folds are read on first use."""

    root: Path
    table: LesionTable
    task: TaskSpec
    oof: pl.DataFrame
    metrics: dict

    @classmethod
    def load(cls, run_dir: str | Path) -> RunData:
        from dermstack.rundir import check_current

        root = Path(run_dir)
        check_current(root)
        if not (root / "lesions.parquet").exists():
            raise DataError("run directory lacks lesions.parquet (has the run finished?)", file=str(root / "lesions.parquet"))
        dirs = dependency_order(root / "models")
        if not dirs:
            raise DataError("no saved model (models/<name>/model.json): has the run finished?", file=str(root / "models"))
        table = LesionTable.read(root / "lesions.parquet")
        metrics_path = root / "metrics.json"
        metrics = read_json(metrics_path, "run metrics") if metrics_path.exists() else {}
        spec = read_spec(dirs[-1])
        kind = metrics.get("task") or spec["task"]
        target = metrics.get("target") or spec.get("target_name") or "malignant"
        table, _ = TaskSpec.labelled(table, kind, target)
        task = TaskSpec.from_table(table, kind, target)
        oof = Predictions.concat([Predictions.read(d / "oof.parquet") for d in dirs])
        if "oof_model" not in metrics:  # stage-by-stage folder: the last model in dependency order
            metrics["oof_model"] = spec["name"]
        return cls(root, table, task, oof.frame, metrics)

    @property
    def model_names(self) -> list[str]:
        """Models with OOF scores: base models in file order, ensembles ("ensemble", "mean", "stack"...) as stored."""
        return list(dict.fromkeys(self.oof["model"].to_list()))

    @property
    def final_model(self) -> str:
        """The run's final prediction (metrics.json ``oof_model``; else "ensemble" or the first model)."""
        names = self.model_names
        for cand in (self.metrics.get("oof_model"), "ensemble"):
            if cand in names:
                return cand
        return names[0]

    @property
    def explained_class(self) -> str | None:
        """The class whose SHAP values single-class plots show: None for binary, else the first
        positive (malignant) class of the table, or the first class."""
        if self.task.kind.binary:
            return None
        positive = [c for c in self.table.meta.positive_classes if c in self.task.classes]
        return (positive or self.task.classes)[0]

    def scores(self, model: str) -> np.ndarray:
        """OOF scores of ``model`` for the task's training rows (NaN where it has none)."""
        return Predictions(self.oof).for_model(model).matrix(self.task.image_ids, self.task.classes, require=False)

    def scored(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row indices, y, scores) of the training rows that ``model`` scored."""
        s = self.scores(model)
        keep = ~np.isnan(s.reshape(len(s), -1)).any(axis=1)
        if not keep.all():
            log.warning("model %s: %d of %d training rows have no OOF score; its metrics are of the others", model,
                        (~keep).sum(), len(keep))
        idx = np.flatnonzero(keep)
        return idx, self.task.y[idx], s[idx]

    def nested_calibrated(self, model: str = "calibrated") -> tuple[np.ndarray, np.ndarray] | None:
        """(y, scores) of a calibrated model's nested-CV calibrated OOF scores, what its Brier score and
        ECE are of (:func:`dermstack.calibration.calibrated_model`); None for a run saved without them."""
        from dermstack.calibration import NESTED_OOF

        path = self.models_dir / model / NESTED_OOF
        if not path.exists():
            return None
        s = Predictions.read(path).matrix(self.task.image_ids, self.task.classes, source=str(path))
        return self.task.y, s

    @cached_property
    def train(self) -> pl.DataFrame:
        """Training rows of the LesionTable in the task's order."""
        ids = pl.DataFrame({"image_id": self.task.image_ids})
        return ids.join(self.table.df, on="image_id", how="left", maintain_order="left")

    @cached_property
    def folds(self) -> FoldPlan | None:
        path = self.root / "folds.parquet"
        return FoldPlan.read(path) if path.exists() else None

    @cached_property
    def features(self) -> FeatureSet | None:
        path = self.root / "features.parquet"
        return FeatureSet.read(path) if path.exists() else None

    def features_for(self, model_dir: Path) -> pl.DataFrame:
        """The feature rows a model directory's boosters were trained on: ``features.parquet``, plus,
        for a model that reads another's feature group (``<booster>+<cnn>``), that group's columns as
        each row's own fold model saw them."""
        df = self.features.df
        source = group_source(load(model_dir))
        if source is None:
            return df
        frame = source.oof_feature_frame(self.table, self.folds)
        return df.join(frame, on="image_id", how="left", maintain_order="left")

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def _kinds_of_models(self) -> dict[Path, ModelKind | None]:
        kinds = model_kinds()
        return {d: kinds.get(read_spec(d)["kind"]) for d in model_dirs(self.models_dir).values()}

    @property
    def explained_dirs(self) -> list[Path]:
        """The folders of the models whose kind explains them feature by feature (an :class:`~dermstack.registry.Explainer`:
        boosters, linear probes, MLPs)."""
        return [d for d, k in self._kinds_of_models().items() if k is not None and isinstance(k.explainer, Explainer)]

    @property
    def unexplained(self) -> dict[str, str]:
        """model -> kind of the saved models whose kind declares no explainer (ensembles have their own step)."""
        return {d.name: k.name for d, k in self._kinds_of_models().items() if k is not None and k.explainer is None}

    def fold_models(self, model_dir: Path) -> tuple[Sequence[FoldExplainer], dict[str, str]]:
        """(the per fold/seed models :func:`~dermstack.reports.shap_.explain_model` explains, feature -> group),
        from the kind's explainer in the registry."""
        return model_kind(read_spec(model_dir)["kind"]).explainer(self, model_dir)
