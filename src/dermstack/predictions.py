"""The one predictions contract every model kind produces and consumes.

``Predictions`` is a long table (image_id, model, seed, fold, class, score): one row per image,
fitted model and score column. OOF rows carry the seed and fold of the model that scored them; test
rows are already averaged over folds and seeds (seed and fold null). ``matrix(ids, classes)`` turns
it into what numeric code wants: (n,) for a binary task (class "target"), else (n, C), averaged over
seeds (and folds), rows in ``ids`` order.

``ModelResult`` is a cross-validated model: its OOF and test predictions, its metrics and the
folder that holds it (``models/<name>/``, see :mod:`dermstack.saved`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import atomic_path, read_json, write_json
from dermstack.errors import DataError, reading

SCHEMA = {"image_id": pl.String, "model": pl.String, "seed": pl.Int32, "fold": pl.Int32, "class": pl.String,
          "score": pl.Float64}


@dataclass(frozen=True)
class Predictions:
    frame: pl.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in SCHEMA if c not in self.frame.columns]
        if missing:  # older files had no seed/fold on test rows
            object.__setattr__(self, "frame", self.frame.with_columns(
                [pl.lit(None, dtype=SCHEMA[c]).alias(c) for c in missing if c in ("seed", "fold")]))
            missing = [c for c in SCHEMA if c not in self.frame.columns]
        if missing:
            raise DataError(f"predictions lack column(s) {missing}")
        object.__setattr__(self, "frame", self.frame.select(pl.col(c).cast(t) for c, t in SCHEMA.items()))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Predictions:
        return cls(pl.DataFrame(schema=SCHEMA))

    @classmethod
    def from_scores(cls, model: str, ids: list[str], classes: list[str], scores: np.ndarray,
                    seed: int | None = None, fold: np.ndarray | int | None = None) -> Predictions:
        """``scores`` (n,) or (n, C) of one fitted model (or an average: seed/fold None)."""
        n = len(ids)
        scores = np.reshape(np.asarray(scores, dtype=np.float64), (n, len(classes)))
        folds = (pl.Series("fold", np.broadcast_to(fold, n), dtype=pl.Int32) if fold is not None
                 else pl.repeat(None, n, dtype=pl.Int32, eager=True))
        parts = [pl.DataFrame({
            "image_id": pl.Series(ids, dtype=pl.String), "model": pl.repeat(model, n, dtype=pl.String, eager=True),
            "seed": pl.repeat(seed, n, dtype=pl.Int32, eager=True), "fold": folds,
            "class": pl.repeat(c, n, dtype=pl.String, eager=True), "score": scores[:, j],
        }) for j, c in enumerate(classes)]
        return cls(pl.concat(parts)) if n else cls.empty()

    @classmethod
    def from_seeds(cls, model: str, ids: list[str], classes: list[str], seeds: list[int], oof: np.ndarray,
                   fold_of: np.ndarray) -> Predictions:
        """OOF predictions from an (S, n, C) array: seed ``seeds[s]``, row i scored by fold ``fold_of[i]``."""
        return cls.concat([cls.from_scores(model, ids, classes, oof[si], seed, fold_of) for si, seed in enumerate(seeds)])

    @classmethod
    def concat(cls, parts: list[Predictions]) -> Predictions:
        frames = [p.frame for p in parts if p.frame.height]
        return cls(pl.concat(frames)) if frames else cls.empty()

    # -- use ---------------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return self.frame.height

    @property
    def models(self) -> list[str]:
        return self.frame["model"].unique(maintain_order=True).to_list()

    def image_ids(self) -> list[str]:
        return self.frame["image_id"].unique(maintain_order=True).to_list()

    def for_model(self, name: str) -> Predictions:
        return Predictions(self.frame.filter(pl.col("model") == name))

    def matrix(self, ids: list[str], classes: list[str], require: bool = True, source: str = "predictions") -> np.ndarray:
        """Scores averaged over seeds and folds, rows in ``ids`` order: (n,) when ``classes == ["target"]``,
        else (n, C). A row or class without a score is a DataError (``require``) or NaN."""
        wide = (self.frame.group_by("image_id", "class").agg(pl.col("score").mean())
                .pivot(on="class", index="image_id", values="score"))
        absent = [c for c in classes if c not in wide.columns]
        if absent and require and len(ids):  # no rows (no test split) need no class
            raise DataError(f"{source}: no scores for class(es) {absent}")
        wide = wide.with_columns([pl.lit(None, dtype=pl.Float64).alias(c) for c in absent])
        order = pl.DataFrame({"image_id": pl.Series(ids, dtype=pl.String)})
        mat = order.join(wide, on="image_id", how="left", maintain_order="left").select(classes).to_numpy().astype(float)
        if require and np.isnan(mat).any():
            bad = np.flatnonzero(np.isnan(mat).any(axis=1))
            raise DataError(f"{source}: {len(bad)} of {len(ids)} rows have no score, e.g. {[ids[i] for i in bad[:5]]}")
        return mat[:, 0] if list(classes) == ["target"] else mat

    def wide(self, ids: list[str], classes: list[str]) -> pl.DataFrame:
        """``image_id``, then one column per model, rows in ``ids`` order: its score averaged over seeds and
        folds (:meth:`matrix`; null where it has none), a float for a binary task (class "target"), else a
        struct of one field per class. :meth:`from_wide` reads it back."""
        cols = [pl.Series("image_id", ids, dtype=pl.String)]
        for m in self.models:
            mat = self.for_model(m).matrix(ids, classes, require=False)
            cols.append(pl.Series(m, mat).fill_nan(None) if mat.ndim == 1 else
                        pl.DataFrame(mat, schema=list(classes), orient="row").fill_nan(None).to_struct(m))
        return pl.DataFrame(cols)

    @classmethod
    def from_wide(cls, df: pl.DataFrame) -> Predictions:
        """The predictions of a :meth:`wide` frame: each float column a binary model's, each struct column
        a model's of one score per class; ``image_id`` the rows, any other column (a label) left out."""
        if "image_id" not in df.columns:
            raise DataError("predictions lack column 'image_id'")
        ids, parts = df["image_id"].cast(pl.String).to_list(), []
        for name, dtype in df.schema.items():
            if dtype.is_float():
                parts.append(cls.from_scores(name, ids, ["target"], df[name].cast(pl.Float64).to_numpy()))
            elif isinstance(dtype, pl.Struct):
                parts.append(cls.from_scores(name, ids, [f.name for f in dtype.fields],
                                             df[name].struct.unnest().cast(pl.Float64).to_numpy()))
        if not parts:
            raise DataError(f"no score columns among {df.columns} (a model's column is a float, or a struct of one score per class)")
        return cls(pl.concat([p.frame for p in parts]))

    def write(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp:
            self.frame.write_parquet(tmp)
        return Path(path)

    @classmethod
    def read(cls, path: str | Path) -> Predictions:
        path = Path(path)
        if not path.exists():
            raise DataError("no predictions file", file=str(path))
        try:
            with reading(path, "predictions"):
                return cls(pl.read_parquet(path))
        except DataError as e:
            raise DataError(e.reason, file=str(path)) from None


@dataclass
class ModelResult:
    """A cross-validated model: OOF and test predictions, metrics (task metrics of the seed-averaged
    OOF scores, ``ci95``, ``folds``, ...), gain importance where it has one, and its folder."""

    name: str
    oof: Predictions
    test: Predictions
    metrics: dict = field(default_factory=dict)
    importance: pl.DataFrame | None = None
    dir: Path | None = None

    FILES = ("oof.parquet", "test.parquet", "metrics.json")

    def write(self, directory: str | Path) -> ModelResult:
        """The predictions, metrics and importance in ``directory`` (the model.json is the registry's)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.oof.write(d / "oof.parquet")
        self.test.write(d / "test.parquet")
        write_json(d / "metrics.json", self.metrics)
        if self.importance is not None:
            with atomic_path(d / "importance.parquet") as tmp:
                self.importance.write_parquet(tmp)
        self.dir = d
        return self

    @classmethod
    def read(cls, directory: str | Path, name: str | None = None) -> ModelResult:
        d = Path(directory)
        metrics = read_json(d / "metrics.json", "model metrics") if (d / "metrics.json").exists() else {}
        with reading(d / "importance.parquet", "feature importance"):
            imp = pl.read_parquet(d / "importance.parquet") if (d / "importance.parquet").exists() else None
        test = Predictions.read(d / "test.parquet") if (d / "test.parquet").exists() else Predictions.empty()
        oof = Predictions.read(d / "oof.parquet")
        for what, p in (("models", lambda x: x.models), ("classes", lambda x: x.frame["class"].unique().sort().to_list())):
            if test.height and oof.height and p(test) != p(oof):
                raise DataError(f"test predictions of {what} {p(test)} do not match its partner oof.parquet ({p(oof)}): "
                                "the two files come from different models", file=str(d / "test.parquet"))
        return cls(name or d.name, oof, test, metrics, imp, d)
