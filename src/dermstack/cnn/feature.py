"""CNN scores as the ``cnn`` feature group of a booster: the per-booster views of the pair CNNs
(:class:`CNNViews`, made by :func:`dermstack.cnn.nested.nested_cnn_views`) and the columns
built from them (the score, its z-score and rank within the patient)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import write_parquet
from dermstack.data.table import LesionTable
from dermstack.errors import reading
from dermstack.task import as_columns

#: the FeatureSet group a CNN's scores become for the boosters that read them
GROUP = "cnn"


def views_file(model_dir: Path) -> Path:
    """Where the views of the CNN saved in ``model_dir`` are (:func:`dermstack.cnn.nested.nested_cnn_views`)."""
    return Path(model_dir) / "nested" / "views.parquet"


@dataclass
class CNNViews:
    """``views[k]``: (n, C) scores booster k sees for the training rows; ``test``: (n_test, C)."""

    name: str
    classes: list[str]
    image_ids: list[str]
    views: np.ndarray
    test_ids: list[str]
    test: np.ndarray

    def to_frame(self) -> pl.DataFrame:
        """Long: image_id, view (-1 for test rows), class, score."""
        parts = []
        for j, c in enumerate(self.classes):
            for k, v in enumerate(self.views):
                parts.append(pl.DataFrame({"image_id": self.image_ids, "view": k, "class": c, "score": v[:, j]}))
            parts.append(pl.DataFrame({"image_id": self.test_ids, "view": -1, "class": c, "score": self.test[:, j]},
                                      schema={"image_id": pl.String, "view": pl.Int64, "class": pl.String, "score": pl.Float64}))
        return pl.concat(parts, how="vertical_relaxed")

    def write(self, path: Path) -> Path:
        return write_parquet(path, self.to_frame())

    @classmethod
    def read(cls, path: Path, name: str) -> CNNViews:
        """The views written by :meth:`write` (rows and classes in their written order)."""
        with reading(path, "nested CNN views"):
            long = pl.read_parquet(path)
        classes = long["class"].unique(maintain_order=True).to_list()

        def block(frame: pl.DataFrame) -> tuple[list[str], np.ndarray]:
            wide = frame.pivot(on="class", index="image_id", values="score")
            return wide["image_id"].to_list(), wide.select(classes).to_numpy()

        train = long.filter(pl.col("view") >= 0)
        n_views = int(train["view"].max()) + 1
        blocks = [block(train.filter(pl.col("view") == k)) for k in range(n_views)]
        test_ids, test = block(long.filter(pl.col("view") == -1)) if (long["view"] == -1).any() else ([], np.zeros((0, len(classes))))
        return cls(name, classes, blocks[0][0], np.stack([b[1] for b in blocks]), test_ids, test)


def patient_key(table: LesionTable) -> pl.DataFrame:
    """image_id, split, patient: patient_id, else lesion_id, else the image itself."""
    return table.df.select("image_id", "split", pl.coalesce("patient_id", "lesion_id", "image_id").alias("patient"))


def cnn_feature_frame(views: CNNViews, view: int, patients: pl.DataFrame) -> pl.DataFrame:
    """image_id + the ``cnn`` group columns of booster ``view`` for training and test rows: the score,
    its z-score within the patient (0 for a patient's only lesion) and its rank in [0, 1] within the
    patient (0.5 alone)."""
    ids = views.image_ids + views.test_ids
    scores = np.concatenate([views.views[view], views.test])
    cols = [f"{views.name}_score"] if views.classes == ["target"] else [f"{views.name}_{c}" for c in views.classes]
    df = pl.DataFrame({"image_id": ids, **{c: scores[:, j] for j, c in enumerate(cols)}})
    df = df.join(patients, on="image_id", how="left", maintain_order="left")
    by = ["split", "patient"]
    rel = []
    for c in cols:
        n = pl.len().over(by)
        std = pl.col(c).std(ddof=0).over(by)
        rel += [
            pl.when(std > 0).then((pl.col(c) - pl.col(c).mean().over(by)) / std).otherwise(0.0).alias(f"{c}_pz"),
            pl.when(n > 1).then((pl.col(c).rank("average").over(by) - 1) / (n - 1)).otherwise(0.5).alias(f"{c}_prank"),
        ]
    return df.with_columns(rel).drop(by)


def oof_cnn_frame(views: CNNViews, fold_of: np.ndarray, patients: pl.DataFrame) -> pl.DataFrame:
    """image_id + ``cnn`` columns as each row's own booster saw them: a training row of fold k from
    view k (what booster k scored it with), a test row from the mean of every pair CNN."""
    frames = [cnn_feature_frame(views, k, patients) for k in range(len(views.views))]
    own = pl.DataFrame({"image_id": views.image_ids, "fold": np.asarray(fold_of, dtype=np.int64)})
    parts = [f.join(own.filter(pl.col("fold") == k), on="image_id", how="semi") for k, f in enumerate(frames)]
    parts.append(frames[0].filter(pl.col("image_id").is_in(views.test_ids)))
    return pl.concat(parts)


def new_rows_frame(name: str, classes: list[str], ids: list[str], table: LesionTable, nested_mean: np.ndarray) -> pl.DataFrame:
    """image_id + the ``cnn`` group columns of new rows ``ids`` (``table``: their LesionTable rows) from
    the mean score of the CNN's pair models, as the stacked booster's test rows had them."""
    scores = as_columns(nested_mean)
    views = CNNViews(name, list(classes), [], np.zeros((1, 0, scores.shape[1])), list(ids), scores)
    return cnn_feature_frame(views, 0, patient_key(table))
