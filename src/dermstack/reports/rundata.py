"""What a report reads from a run directory: table, task, folds, features, OOF scores, metrics."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.errors import DataError
from dermstack.features.featureset import FeatureSet
from dermstack.run import scores_matrix
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
    def load(cls, run_dir: str | Path) -> "RunData":
        root = Path(run_dir)
        for name in ("lesions.parquet", "oof.parquet"):
            if not (root / name).exists():
                raise DataError(f"run directory lacks {name} (has the run finished?)", file=str(root / name))
        table = LesionTable.read(root / "lesions.parquet")
        metrics_path = root / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        task = TaskSpec.from_table(table, metrics.get("task", "binary"), metrics.get("target") or "malignant")
        oof = pl.read_parquet(root / "oof.parquet")
        missing = [c for c in OOF_COLUMNS if c not in oof.columns and c != "seed"]
        if missing:
            raise DataError(f"OOF predictions lack columns {missing}", file=str(root / "oof.parquet"))
        return cls(root, table, task, oof, metrics)

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
        if self.task.kind == "binary":
            return None
        positive = [c for c in self.table.meta.positive_classes if c in self.task.classes]
        return (positive or self.task.classes)[0]

    def scores(self, model: str) -> np.ndarray:
        """OOF scores of ``model`` for the task's training rows (NaN where it has none)."""
        return scores_matrix(self.oof.filter(pl.col("model") == model), self.task.image_ids, self.task.classes)

    def scored(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row indices, y, scores) of the training rows that ``model`` scored."""
        s = self.scores(model)
        keep = ~np.isnan(s.reshape(len(s), -1)).any(axis=1)
        if not keep.all():
            log.info("model %s: %d of %d training rows have no OOF score", model, (~keep).sum(), len(keep))
        idx = np.flatnonzero(keep)
        return idx, self.task.y[idx], s[idx]

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
        for a ``<booster>+<cnn>`` model, the ``cnn`` columns each row's own fold booster saw."""
        from dermstack.reports.boosters import feature_groups

        df = self.features.df
        missing = [c for c in feature_groups(model_dir) if c not in df.columns]
        if not missing or "+" not in model_dir.name:
            return df
        from dermstack.ensembles.stacking import CNNViews, oof_cnn_frame, patient_key

        cnn = model_dir.name.split("+", 1)[1]
        views = CNNViews.read(self.models_dir / cnn / "nested" / "views.parquet", cnn)
        frame = oof_cnn_frame(views, self.folds.fold_of(views.image_ids), patient_key(self.table))
        return df.join(frame, on="image_id", how="left", maintain_order="left")

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def booster_dirs(self) -> list[Path]:
        """Model directories of LightGBM/XGBoost/CatBoost boosters (what SHAP explains)."""
        from dermstack.reports.boosters import is_booster_dir

        return sorted(p for p in self.models_dir.iterdir() if is_booster_dir(p)) if self.models_dir.is_dir() else []
