"""Level-2 learners on the OOF scores of base models: logistic regression on logits, or a weighted
mean of probabilities or of ranks with weights chosen on OOF (Caruana ensemble selection). Stored as
JSON (no pickle).

Every learner maps ``X``: (n, M, C) scores of M base models for C score columns (C = 1 binary) to
(n, C) scores in [0, 1]; multiclass outputs sum to one.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from dermstack.errors import ConfigError
from dermstack.metrics import PRIMARY_METRIC, TASK_METRICS
from dermstack.task import as_columns
from dermstack.taskkind import TaskKind

EPS = 1e-6
C_GRID = (0.01, 0.1, 1.0, 10.0)
QUANTILES = 1001


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def task_score(task_kind: str, y: np.ndarray, s: np.ndarray, metric: str | None = None) -> float:
    """The task's metric (primary by default) of (n, C) scores; NaN counts as the worst."""
    kind = TaskKind(task_kind)
    fn = TASK_METRICS[kind][metric or PRIMARY_METRIC[kind]]
    try:
        v = fn(y, kind.squeeze(s))
    except ValueError:
        return -np.inf
    return -np.inf if np.isnan(v) else float(v)


class Level2(ABC):
    method: ClassVar[str]

    def __init__(self, task_kind: str, models: list[str]):
        self.task_kind, self.models = TaskKind(task_kind), list(models)

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Level2:
        """Fit on OOF scores; ``groups`` (the rows' folds) drive any inner cross-validation."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n, C) scores."""

    @abstractmethod
    def params(self) -> dict:
        """JSON-able fitted state."""

    @abstractmethod
    def weights(self) -> dict[str, float]:
        """Contribution of each base model (for reports)."""

    def to_json(self) -> dict:
        return {"method": self.method, "task": self.task_kind, "models": self.models, **self.params()}

    @staticmethod
    def from_json(d: dict) -> Level2:
        cls = LEARNERS[d["method"]]
        obj = cls(d["task"], d["models"])
        obj.load(d)
        return obj

    @abstractmethod
    def load(self, d: dict) -> None:
        ...


class LogisticStack(Level2):
    """Logistic regression on base-model logits (binary / per class for multi-label; multinomial on
    every model's log-probabilities for multiclass); C chosen by inner leave-one-fold-out CV."""

    method = "stack"

    def _design(self, X: np.ndarray, j: int | None) -> np.ndarray:
        if self.task_kind.exclusive:
            return as_columns(np.log(np.clip(X, EPS, 1)))
        return logit(X[:, :, j])

    def _fit_one(self, Z: np.ndarray, t: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
        """(coef, intercept) of a class-balanced logistic regression (multinomial for multiclass); a
        target with one value only (a rare class absent from these rows) gets that value as a constant."""
        present = np.unique(t)
        if len(present) < 2:
            if self.task_kind.exclusive:
                icpt = np.full(self.n_classes, -30.0)
                icpt[int(present[0])] = 0.0
                return np.zeros((self.n_classes, Z.shape[1])), icpt
            return np.zeros((1, Z.shape[1])), np.array([30.0 if present[0] else -30.0])
        f = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(Z, t)
        if self.task_kind.exclusive and len(f.classes_) != self.n_classes:
            coef, icpt = np.zeros((self.n_classes, Z.shape[1])), np.full(self.n_classes, -30.0)
            coef[f.classes_], icpt[f.classes_] = f.coef_, f.intercept_
            return coef, icpt
        return f.coef_, f.intercept_

    def _targets(self, y: np.ndarray) -> list[np.ndarray]:
        if self.task_kind.multilabel:
            return [y[:, j] for j in range(y.shape[1])]
        return [y]

    def _predict_with(self, fits: list[tuple[np.ndarray, np.ndarray]], X: np.ndarray) -> np.ndarray:
        if self.task_kind.exclusive:
            coef, icpt = fits[0]
            return softmax(self._design(X, None) @ coef.T + icpt)
        return np.column_stack([1 / (1 + np.exp(-(self._design(X, j) @ c[0] + b[0]))) for j, (c, b) in enumerate(fits)])

    def fit(self, X, y, groups):
        # a few columns of member scores: BLAS threads have nothing to share and only spin (lbfgs took
        # 60 s of wall for 5 s of CPU on HAM10000 dev with the other core busy)
        with threadpool_limits(1, user_api="blas"):
            return self._fit(X, y, groups)

    def _fit(self, X, y, groups):
        self.n_classes = X.shape[2]
        best_C, best = C_GRID[0], -np.inf
        folds = np.unique(groups)
        if len(folds) > 1:
            for C in C_GRID:
                inner = np.full((len(X), X.shape[2]), np.nan)
                for g in folds:
                    tr, va = groups != g, groups == g
                    fits = [self._fit_one(self._design(X[tr], j), t[tr], C) for j, t in enumerate(self._targets(y))]
                    inner[va] = self._predict_with(fits, X[va])
                value = task_score(self.task_kind, y, inner)
                if value > best:
                    best_C, best = C, value
        self.C = best_C
        self.fits = [self._fit_one(self._design(X, j), t, best_C) for j, t in enumerate(self._targets(y))]
        return self

    def predict(self, X):
        return self._predict_with(self.fits, X)

    def params(self):
        return {"C": self.C, "coef": [c.tolist() for c, _ in self.fits], "intercept": [b.tolist() for _, b in self.fits]}

    def load(self, d):
        self.C = d["C"]
        self.fits = [(np.array(c), np.array(b)) for c, b in zip(d["coef"], d["intercept"])]

    def weights(self):
        M = len(self.models)
        mags = [np.abs(c).reshape(c.shape[0], M, -1).sum(axis=(0, 2)) if self.task_kind.exclusive
                else np.abs(c[0]) for c, _ in self.fits]
        total = np.sum(mags, axis=0)
        return {m: float(w) for m, w in zip(self.models, total / max(total.sum(), EPS))}


class GreedyEnsemble(Level2):
    """Ensemble selection (Caruana et al. 2004; AutoGluon's WeightedEnsemble): start empty, add with
    replacement the member that most improves the primary metric of the weighted mean of
    probabilities, for ``rounds`` steps, and keep the best step's weights. Adding with replacement
    lets a strong member count several times; keeping the best step (rather than the last) means the
    ensemble is never worse on its training rows than its best member, which it can always equal."""

    method = "greedy"
    rounds = 50

    def transform(self, X: np.ndarray) -> np.ndarray:
        return X

    def _combine(self, R: np.ndarray, w: np.ndarray) -> np.ndarray:
        s = np.tensordot(R, w, axes=([1], [0]))
        return s / s.sum(axis=1, keepdims=True) if self.task_kind.exclusive else s

    def _prepare(self, X: np.ndarray) -> None:
        """Fit what ``transform`` needs (nothing for probabilities)."""

    def fit(self, X, y, groups):
        self._prepare(X)
        R = self.transform(X)
        counts = np.zeros(X.shape[1])
        best, best_counts = -np.inf, None
        for _ in range(self.rounds):
            trials = [task_score(self.task_kind, y, self._combine(R, (counts + np.eye(len(counts))[m]) / (counts.sum() + 1)))
                      for m in range(len(counts))]
            m = int(np.argmax(trials))
            counts[m] += 1
            if trials[m] > best:
                best, best_counts = trials[m], counts.copy()
        self.w = best_counts / best_counts.sum()
        return self

    def predict(self, X):
        return np.clip(self._combine(self.transform(X), self.w), 0, 1)

    def params(self):
        return {"weights": self.w.tolist()}

    def load(self, d):
        self.w = np.array(d["weights"])

    def weights(self):
        return {m: float(w) for m, w in zip(self.models, self.w)}


class RankAverage(GreedyEnsemble):
    """Ensemble selection on each model's scores mapped to ranks (the model's OOF distribution,
    stored as quantiles, so a single new image gets the same rank as in a batch): members whose
    scores live on different scales mix by order alone. Multiclass averages probabilities instead."""

    method = "rank"

    def _prepare(self, X: np.ndarray) -> None:
        grid = np.linspace(0, 1, QUANTILES)
        self.quantiles = [[np.quantile(X[:, m, j], grid).tolist() for j in range(X.shape[2])] for m in range(X.shape[1])]

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.task_kind.exclusive:
            return X
        out = np.empty_like(X, dtype=float)
        grid = np.linspace(0, 1, QUANTILES)
        for m in range(X.shape[1]):
            for j in range(X.shape[2]):
                out[:, m, j] = np.interp(X[:, m, j], self.quantiles[m][j], grid)
        return out

    def params(self):
        return {"weights": self.w.tolist(), "quantiles": self.quantiles}

    def load(self, d):
        self.w, self.quantiles = np.array(d["weights"]), d["quantiles"]


LEARNERS: dict[str, type[Level2]] = {c.method: c for c in (LogisticStack, GreedyEnsemble, RankAverage)}


def make_learner(method: str, task_kind: str, models: list[str]) -> Level2:
    if method not in LEARNERS:
        raise ConfigError(f"unknown [ensemble] method {method!r} for a level-2 learner; known: {sorted(LEARNERS)}")
    return LEARNERS[method](task_kind, models)
