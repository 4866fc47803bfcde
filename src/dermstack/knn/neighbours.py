"""The nearest training rows of every query row, fold by fold, and the labels' weighted mean over them.

Rows are compared by cosine similarity of their embeddings, each dimension first standardised over the
training rows (``scale = "standard"``, scikit-learn's ``StandardScaler``; the linear probe standardises them too), then
L2-normalised. :func:`candidates` finds, in
one pass, each query row's ``n_neighbors`` most similar training rows *within each fold* of the
FoldPlan (blocked float32 matrix products: memory is one block of queries by the training rows, at
most :data:`BLOCK_BYTES`). Any model "fitted" on a union of folds (a fold model: every fold but k;
a pair model of the feature group: every fold but j and k; each fold model again in ``predict``) is
then exact from those lists (:meth:`Candidates.scores`), because the nearest n rows of a union of
folds are among the nearest n of each of its folds. So the fold models and the 10 pair models cost
one pass of (training + test rows) x training rows x dimensions, not fifteen.

A row without an embedding (its image failed) is nobody's neighbour, and is scored with the label
mean of the training rows its model may use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dermstack.config.limits import Neighbours
from dermstack.config.problems import schema
from dermstack.config.types import PosInt, Str, one_of
from dermstack.taskkind import TaskKind

#: the most bytes of one block of similarities (query rows x training rows, float32)
BLOCK_BYTES = 256 * 2**20
#: the smallest distance a neighbour is weighted by (``weights = "distance"``): a duplicate of the
#: query (distance 0 up to float32 rounding, about 3e-4) weighs 1,000 times a row at distance 1
MIN_DISTANCE = 1e-3
#: training rows up to which the kind fits by default (``params.max_rows``); measured cost in docs/results.md
MAX_ROWS = 100_000


@schema("[[models]] params", frozen=True)
class KNNParams:
    """The ``params`` a ``kind = "knn"`` model accepts: ``n_neighbors``; ``weights``: ``distance`` (each
    neighbour by 1 / its Euclidean distance between the L2-normalised embeddings, sklearn's
    ``weights="distance"`` on them) or ``uniform``; ``scale``: ``standard`` (each embedding dimension
    centred and divided by its standard deviation over the training rows before the cosine) or ``none``
    (the raw embeddings' cosine, where a few large ReLU channels dominate); ``backbone``: whose embeddings
    (unset: the run's first); ``max_rows``: the most training rows it fits (the cost grows with their square)."""

    n_neighbors: Neighbours = 25
    weights: one_of("weights", ("distance", "uniform")) = "distance"
    scale: one_of("scale", ("standard", "none")) = "standard"
    backbone: Str | None = None
    max_rows: PosInt = MAX_ROWS

    def to_dict(self) -> dict:
        return {"n_neighbors": self.n_neighbors, "weights": self.weights, "scale": self.scale,
                "backbone": self.backbone, "max_rows": self.max_rows}



def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` (n, d) as float32 rows of length 1; a row with no finite embedding (NaN) becomes zeros."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def label_matrix(y: np.ndarray, kind: TaskKind, n_classes: int) -> np.ndarray:
    """(n, outputs) 0/1 labels whose mean is a score: the positive class (binary), one column per
    class (multiclass, one-hot), the label columns (multi-label)."""
    kind, y = TaskKind(kind), np.asarray(y)
    if kind.binary:
        return (y == 1).astype(np.float32)[:, None]
    if kind.multilabel:
        return y.astype(np.float32)
    return np.eye(n_classes, dtype=np.float32)[y.astype(np.int64)]


@dataclass
class Candidates:
    """For each query row and fold: its ``k`` most similar training rows of that fold, ``sim`` (q, F, k)
    float32 (-inf: none) and ``index`` (q, F, k) int32 into the training rows (-1: none)."""

    sim: np.ndarray
    index: np.ndarray
    #: the training rows' folds and labels (n, outputs), and which queries had an embedding
    fold_of: np.ndarray
    labels: np.ndarray
    has_query: np.ndarray

    def scores(self, rows: np.ndarray, folds, k: int, weights: str) -> np.ndarray:
        """(len(rows), outputs) label means of the query ``rows``' ``k`` nearest training rows in ``folds``."""
        rows, folds = np.asarray(rows, dtype=np.int64), sorted(int(f) for f in folds)
        allowed = np.isin(self.fold_of, folds)
        prior = self.labels[allowed].mean(axis=0) if allowed.any() else np.zeros(self.labels.shape[1], np.float32)
        width = len(folds) * self.sim.shape[2]
        sim = self.sim[rows][:, folds].reshape(len(rows), width)
        index = self.index[rows][:, folds].reshape(len(rows), width)
        if sim.shape[1] > k:
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            sim, index = np.take_along_axis(sim, top, 1), np.take_along_axis(index, top, 1)
        found = (index >= 0) & np.isfinite(sim)
        if weights == "uniform":
            w = found.astype(np.float64)
        else:
            distance = np.sqrt(np.clip(2.0 - 2.0 * sim.astype(np.float64), 0.0, None))
            w = np.where(found, 1.0 / np.maximum(distance, MIN_DISTANCE), 0.0)
        total = w.sum(axis=1, keepdims=True)
        out = np.einsum("qk,qkc->qc", w, self.labels[np.where(found, index, 0)]) / np.where(total > 0, total, 1.0)
        out[(total[:, 0] == 0) | ~self.has_query[rows]] = prior
        return out


def candidates(train: np.ndarray, fold_of: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int,
               n_splits: int | None = None) -> Candidates:
    """Each of ``queries``' (unit rows) ``k`` most similar rows of ``train`` (unit rows) within each fold
    (``fold_of``: 0..n_splits-1), by blocks of at most :data:`BLOCK_BYTES`."""
    fold_of = np.asarray(fold_of)
    n_splits = int(fold_of.max()) + 1 if n_splits is None else n_splits
    order = np.argsort(fold_of, kind="stable")
    bounds = np.searchsorted(fold_of[order], np.arange(n_splits + 1))
    has_train = np.any(train != 0, axis=1)[order]
    ref = np.ascontiguousarray(train[order])
    q = len(queries)
    sim = np.full((q, n_splits, k), -np.inf, np.float32)
    index = np.full((q, n_splits, k), -1, np.int32)
    block = max(1, BLOCK_BYTES // (4 * max(1, len(ref))))
    for start in range(0, q, block):
        s = queries[start:start + block] @ ref.T
        s[:, ~has_train] = -np.inf
        for f in range(n_splits):
            a, b = bounds[f], bounds[f + 1]
            kk = min(k, b - a)
            if kk == 0:
                continue
            part = s[:, a:b]
            top = np.argpartition(-part, kk - 1, axis=1)[:, :kk] if kk < b - a else np.broadcast_to(np.arange(kk), (len(part), kk))
            sim[start:start + block, f, :kk] = np.take_along_axis(part, top, 1)
            index[start:start + block, f, :kk] = order[a + top]
    return Candidates(sim, index, fold_of, labels, np.any(queries != 0, axis=1))
