"""Out-of-fold SHAP values of the boosters of a run, averaged over seeds, grouped by feature group.

Each fold's boosters explain only that fold's validation rows, so every explanation is
out-of-fold. Values are raw-score (margin / log-odds) contributions: per row,
``values.sum(features) + base == raw output`` of the seed-averaged model. Stored as ``.npz``
(numeric and unicode arrays only; never pickle).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import atomic_path
from dermstack.errors import DataError, reading
from dermstack.features.featureset import GROUPS
from dermstack.progress import progress_bar
from dermstack.registry import FoldExplainer

log = logging.getLogger(__name__)


@dataclass
class ShapValues:
    """SHAP values of one model: ``values`` (n, F) for one output or (n, F, C) for several, ``base`` (n,) / (n, C).

    ``data`` holds the explained feature values as float (categoricals as category codes, NaN =
    missing; ``categories`` names the codes) for plots."""

    model: str
    image_ids: np.ndarray
    folds: np.ndarray
    features: list[str]
    values: np.ndarray
    base: np.ndarray
    data: np.ndarray
    classes: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    n_seeds: int = 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def output(self, cls: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(values (n, F), base (n,)) of one output class (the only one when ``values`` is 2-D)."""
        if self.values.ndim == 2:
            return self.values, self.base
        k = self.classes.index(cls) if cls is not None else 0
        return self.values[:, :, k], self.base[:, k]

    def top_features_by_class(self, k: int = 5) -> pl.DataFrame:
        """class, rank, feature, mean_abs_shap: each output class's ``k`` features of largest mean |SHAP|."""
        rows = []
        for cls in self.classes if self.values.ndim == 3 else [None]:
            mean_abs = np.abs(self.output(cls)[0]).mean(axis=0)
            for rank, j in enumerate(np.argsort(-mean_abs, kind="stable")[:k], start=1):
                rows.append({"class": cls or "target", "rank": rank, "feature": self.features[j],
                             "mean_abs_shap": float(mean_abs[j])})
        return pl.DataFrame(rows, schema={"class": pl.String, "rank": pl.Int64, "feature": pl.String,
                                          "mean_abs_shap": pl.Float64})

    def abs_by_feature(self) -> np.ndarray:
        """|SHAP| per row and feature, summed over output classes: (n, F)."""
        a = np.abs(self.values)
        return a if a.ndim == 2 else a.sum(axis=2)

    # -- io ---------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.model, "classes": self.classes, "categories": self.categories, "n_seeds": self.n_seeds}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, image_id=self.image_ids.astype(str), fold=self.folds, feature=np.array(self.features, dtype=str),
                                values=self.values.astype(np.float32), base=self.base.astype(np.float64),
                                data=self.data.astype(np.float32), meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def read(cls, path: str | Path) -> ShapValues:
        with reading(path, "SHAP values"), np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(meta["model"], z["image_id"], z["fold"], z["feature"].tolist(), z["values"], z["base"],
                       z["data"], meta["classes"], meta["categories"], meta["n_seeds"])


# -- which rows ----------------------------------------------------------------
def sample_rows(y: np.ndarray, folds: np.ndarray, size: int | None, seed: int = 0) -> np.ndarray:
    """Indices to explain: every row when ``size`` is None or covers them all; otherwise all
    positives plus negatives sampled per fold in proportion to the fold's negatives (multi-class:
    a sample stratified by class and fold)."""
    n = len(folds)
    if size is None or size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    if y.ndim == 1 and set(np.unique(y)) <= {0, 1}:
        keep = [np.flatnonzero(y == 1)]
        strata = np.where(y == 1, -1, folds)
        budget = max(size - len(keep[0]), 0)
    else:
        keep = []
        label = y.argmax(axis=1) if y.ndim == 2 else y
        strata = label.astype(np.int64) * 1000 + folds
        budget = size
    pool = np.flatnonzero(strata >= 0) if keep else np.arange(n)
    for s in np.unique(strata[pool]):
        members = pool[strata[pool] == s]
        take = int(round(budget * len(members) / len(pool)))
        keep.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


# -- computing -----------------------------------------------------------------
def explain_model(model: str, boosters: Sequence[FoldExplainer], features: pl.DataFrame, folds: np.ndarray,
                  classes: list[str], progress: bool = True, link=None) -> ShapValues:
    """SHAP values of ``features`` rows (image_id + feature columns), each row explained by the fold
    models of its own fold (``folds``; ``boosters``: what a kind's explainer gives, boosters or
    probes), averaged over seeds. Fold -1 (a test row) is explained
    by every booster, averaged, as the run predicts it. ``link(values, base) -> (values, base)``
    maps each booster's raw-score explanation to another space before the average (the final
    model's explanation averages in probability space, as the stored scores are averaged)."""
    if not boosters:
        raise DataError(f"model {model}: no boosters to explain")
    columns = boosters[0].columns
    n, F = features.height, len(columns)
    multi = boosters[0].n_outputs > 1
    values = np.zeros((n, F, boosters[0].n_outputs) if multi else (n, F))
    base = np.zeros((n, boosters[0].n_outputs) if multi else n)
    seeds = np.zeros(n)
    by_fold: dict[int, list[FoldExplainer]] = {}
    for b in boosters:
        by_fold.setdefault(b.fold, []).append(b)
    jobs = [(b, np.flatnonzero((folds == b.fold) | (folds == -1))) for b in boosters]
    unexplained = sorted(set(np.unique(folds).tolist()) - set(by_fold) - {-1})
    if unexplained:
        raise DataError(f"model {model}: no boosters for fold(s) {unexplained}")
    bar = progress_bar(jobs, enabled=progress, desc=f"SHAP {model}", unit="booster", leave=False)
    for b, idx in bar:
        if len(idx) == 0:
            continue
        bar.set_postfix(fold=b.fold, seed=b.seed, rows=len(idx))
        v, e = b.shap_values(features[idx])
        if link is not None:
            v, e = link(v, e)
        values[idx] += v
        base[idx] += e
        seeds[idx] += 1
    scale = seeds.reshape((-1,) + (1,) * (values.ndim - 1))
    data, categories = boosters[0].plot_matrix(features)
    return ShapValues(model, features["image_id"].to_numpy(), np.asarray(folds), list(columns), values / scale,
                      base / scale.reshape((-1,) + (1,) * (base.ndim - 1)), data, classes if multi else classes[:1],
                      categories, int(min(len(v) for v in by_fold.values())))


# -- summaries -----------------------------------------------------------------
def group_contributions(sv: ShapValues, groups: dict[str, str], positives: np.ndarray | None = None) -> pl.DataFrame:
    """Share of total |SHAP| carried by each feature group, over all explained rows and over the positives.

    Columns: model, rows ("all" / "positives"), n_rows, group, n_features, mean_abs_shap, share."""
    absval = sv.abs_by_feature()
    feat_group = np.array([groups.get(f, "other") for f in sv.features])
    subsets = {"all": np.ones(len(sv), dtype=bool)}
    if positives is not None and np.any(positives):
        subsets["positives"] = np.asarray(positives, dtype=bool)
    rows = []
    for name, mask in subsets.items():
        per_feature = absval[mask].mean(axis=0)
        total = per_feature.sum() or 1.0
        for g in [*GROUPS, "other"]:
            sel = feat_group == g
            if sel.any():
                rows.append({"model": sv.model, "rows": name, "n_rows": int(mask.sum()), "group": g,
                             "n_features": int(sel.sum()), "mean_abs_shap": float(per_feature[sel].sum()),
                             "share": float(per_feature[sel].sum() / total)})
    return pl.DataFrame(rows)


def feature_importance(sv: ShapValues, groups: dict[str, str]) -> pl.DataFrame:
    """Mean |SHAP| per feature (summed over classes), largest first, with the feature's group."""
    mean_abs = sv.abs_by_feature().mean(axis=0)
    return (pl.DataFrame({"model": sv.model, "feature": sv.features, "group": [groups.get(f, "other") for f in sv.features],
                          "mean_abs_shap": mean_abs})
            .sort("mean_abs_shap", descending=True))
