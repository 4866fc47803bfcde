"""One fitted linear probe (a fold and seed), how it is fitted, saved without pickle and applied.

Fitting: sklearn ``LogisticRegression`` (L2, lbfgs) on the standardised design matrix: one binary
model (binary), one multinomial model (multiclass), one binary model per class (multilabel). The
inverse regularisation ``C`` is chosen by an inner patient-grouped, stratified K-fold inside the
training rows it is given (the outer fold's validation rows never take part), by validation log
loss, smallest ``C`` on ties; then the model is refitted on all those rows with it. ``seed`` only
shuffles the inner folds (lbfgs itself is deterministic).

``class_weight`` defaults to ``"none"``: the scores are meant to be calibrated probabilities (they
are averaged, stacked and thresholded downstream); ``"balanced"`` reweights classes, which shifts the
probabilities towards the rare class, and is there for macro-F1 style multiclass use.

``threads`` (default 1) caps the BLAS threads of a fit: lbfgs on these matrices is matrix-vector
bound, and two BLAS threads on a busy 2-core machine made a 2000 x 1300 fit 5-15x slower, not faster;
``jobs`` (default 0: one per core) runs the inner-CV fits of one C side by side instead. Fits are in
float32.

A probe is saved as ``<stem>.npz`` (coef, intercept, mean, scale) and ``<stem>.json`` (the design's
columns, categories and terms, the chosen C), both read back without pickle.
"""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Gt
from pydantic import BeforeValidator, Strict
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from dermstack.atomic import read_json
from dermstack.config.limits import Folds, Iterations, Threads, ThreadsOrAuto, most
from dermstack.config.problems import fail, schema
from dermstack.config.types import one_of
from dermstack.errors import ConfigError, DataError
from dermstack.features.scores import NestedScoreGroup
from dermstack.linear.design import Design, Rows, load_design_model, read_rows, save_design_model
from dermstack.linear.feature import GROUP, NESTED_JSON, RELATIONS
from dermstack.saved import Inputs, SavedModel
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)

#: 1e-5 .. 10 in half decades: standardised 1280-d embeddings on a few hundred rows want C near 1e-3
DEFAULT_C = tuple(float(c) for c in np.round(10.0 ** np.arange(-5.0, 1.01, 0.5), 12))
#: the margin of a multiclass class a fold never saw in training (softmax probability ~1e-13)
ABSENT_MARGIN = -30.0
CLIP = 1e-6
#: grid steps past the best C (half decades) after which the inner-CV loss is taken to rise for good
PATIENCE = 2


def _c_grid(value: object) -> tuple[float, ...]:
    grid = list(value) if isinstance(value, (list, tuple)) else [value]
    if not grid or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 for c in grid):
        raise fail("must be a positive number or a non-empty list of them")
    if len(grid) > most("Grid"):
        raise fail(f"at most {most('Grid')} values in a grid (docs: Limits): each value is a fit per inner fold")
    return tuple(sorted(float(c) for c in grid))


@schema("[[models]] params", frozen=True)
class LinearParams:
    """The ``params`` a ``kind = "logistic"`` model accepts: ``C`` (a number: fixed; a list: the grid
    the inner CV chooses from), ``inner_splits``, ``max_iter``, ``tol``, ``class_weight`` (none | balanced),
    ``threads``, ``jobs``."""

    C: Annotated[tuple[float, ...], BeforeValidator(_c_grid)] = DEFAULT_C
    inner_splits: Folds = 5
    max_iter: Iterations = 1000
    tol: Annotated[float, Strict(), Gt(0)] = 1e-4
    class_weight: one_of("class_weight", ("none", "balanced")) = "none"
    threads: Threads = 1
    #: inner-CV fits run side by side; 0: one per CPU core
    jobs: ThreadsOrAuto = 0

    @classmethod
    def from_dict(cls, raw: dict | None, where: str = "[[models]] logistic") -> LinearParams:
        try:
            return cls(**dict(raw or {}))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        return {"C": list(self.C), "inner_splits": self.inner_splits, "max_iter": self.max_iter, "tol": self.tol,
                "class_weight": self.class_weight, "threads": self.threads, "jobs": self.jobs}

    def workers(self) -> int:
        return self.jobs or os.cpu_count() or 1

    def estimator(self, C: float, warm_start: bool = False) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol, warm_start=warm_start,
                                  class_weight="balanced" if self.class_weight == "balanced" else None)

    def weights(self, y: np.ndarray) -> np.ndarray | None:
        return compute_sample_weight("balanced", y) if self.class_weight == "balanced" else None


@dataclass
class Probe:
    """A fitted probe: ``coef`` (K, P) and ``intercept`` (K,) over the columns of ``design``; K is 1
    for a binary task, else the number of classes. ``C``: the chosen C of each fitted model."""

    design: Design
    kind: TaskKind
    coef: np.ndarray
    intercept: np.ndarray
    C: list[float] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        """What the fit chose (the metrics' and model.json's record of each fold and seed)."""
        return {"C": self.C}

    def margin(self, X: np.ndarray) -> np.ndarray:
        """(n, K) log-odds (binary, multilabel) or softmax logits (multiclass)."""
        return X @ self.coef.T + self.intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n,) binary or (n, C) scores."""
        return self.kind.squeeze(self.kind.link(self.margin(X)))

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact per-term contributions to the margin: (values, base) with values (n, T) binary or
        (n, T, K), base (n,) or (n, K), and ``values.sum(1) + base == margin`` (T = ``design.terms``)."""
        member = np.zeros((X.shape[1], len(self.design.terms)))
        member[np.arange(X.shape[1]), self.design.term_index] = 1.0
        values = np.stack([(X * w) @ member for w in self.coef], axis=-1)
        base = np.broadcast_to(self.intercept, (X.shape[0], len(self.intercept))).copy()
        return (values[:, :, 0], base[:, 0]) if self.kind.binary else (values, base)

    # -- files ----------------------------------------------------------------------------
    def save(self, stem: Path) -> list[Path]:
        return save_design_model(stem, self.design, {"coef": self.coef, "intercept": self.intercept}, {"C": self.C})

    @classmethod
    def load(cls, stem: Path, kind: str) -> Probe:
        spec, design, arrays = load_design_model(stem, "linear model")
        coef, intercept = arrays["coef"], arrays["intercept"]
        if coef.shape != (len(intercept), len(design.columns)):
            raise DataError(f"coefficients of shape {coef.shape} do not fit {len(design.columns)} columns",
                            file=str(stem.with_name(stem.name + ".npz")))
        return cls(design, TaskKind(kind), coef, intercept, list(spec.get("C", [])))


# -- fitting ------------------------------------------------------------------------------------
def inner_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped stratified splits of the given rows whose training part has two classes or more;
    none (the caller then cannot choose C) when fewer than two such splits exist."""
    # no more splits than groups, nor than the rows of the largest class (sklearn refuses that)
    k = min(n_splits, len(np.unique(groups)), int(np.unique(y, return_counts=True)[1].max(initial=0)))
    if k < 2:
        return []
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = [(tr, va) for tr, va in cv.split(np.zeros(len(y)), y, groups) if len(np.unique(y[tr])) > 1]
    return splits if len(splits) > 1 else []


def _proba(lr: LogisticRegression, X: np.ndarray, n_labels: int) -> np.ndarray:
    """(n, n_labels) probabilities; a label the model never saw gets ~0."""
    p = np.full((len(X), n_labels), CLIP)
    p[:, lr.classes_] = lr.predict_proba(X)
    return p / p.sum(1, keepdims=True)


def choose_C(X: np.ndarray, y: np.ndarray, groups: np.ndarray, params: LinearParams, seed: int,
             n_labels: int) -> tuple[float, list[float] | None]:
    """The grid's C with the lowest mean inner-validation log loss, and that loss per C walked (None when
    there is no grid or too few groups/classes for an inner CV: then the middle of the grid).

    Each inner split walks the grid from small C to large, each fit warm-started from the last (large
    C is where lbfgs needs the most iterations); the walk stops once the mean loss has been above its
    best for ``PATIENCE`` steps, so the grid's far end is only fitted when the loss still falls there.
    The splits of one C are fitted in ``params.jobs`` threads (lbfgs spends its time in BLAS and
    sklearn's loss loops, both outside the GIL)."""
    grid = params.C
    splits = inner_splits(y, groups, params.inner_splits, seed) if len(grid) > 1 else []
    if not splits:
        if len(grid) > 1:
            log.warning("linear model: too few groups or classes for an inner CV; C = %g (the middle of the grid)",
                        grid[len(grid) // 2])
        return grid[len(grid) // 2], None
    parts = [(X[tr], y[tr], X[va], y[va], params.estimator(grid[0], warm_start=True)) for tr, va in splits]

    def inner_loss(part, C: float) -> float:
        x_tr, y_tr, x_va, y_va, lr = part
        lr.set_params(C=C).fit(x_tr, y_tr)
        return log_loss(y_va, _proba(lr, x_va, n_labels), labels=list(range(n_labels)), sample_weight=params.weights(y_va))

    loss: list[float] = []
    with ThreadPoolExecutor(min(params.workers(), len(parts))) as pool:
        for C in grid:
            loss.append(float(np.mean(list(pool.map(inner_loss, parts, [C] * len(parts))))))
            if len(loss) - 1 - int(np.argmin(loss)) >= PATIENCE:
                break
    return grid[int(np.argmin(loss))], loss


def _fit_output(X: np.ndarray, y: np.ndarray, groups: np.ndarray, params: LinearParams, seed: int,
                n_labels: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One model: (coef (k, P), intercept (k,), C), k = 1 for two labels, else ``n_labels``."""
    k = 1 if n_labels == 2 else n_labels
    present = np.unique(y)
    if len(present) < 2:  # a multi-label class with no positive training row: its constant rate
        coef = np.zeros((k, X.shape[1]))
        p = min(max(float(np.mean(y == 1)), CLIP), 1 - CLIP)
        return coef, np.full(k, np.log(p / (1 - p))), float("nan")
    C, _ = choose_C(X, y, groups, params, seed, n_labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        lr = params.estimator(C).fit(X, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("linear model: lbfgs did not converge in %d iterations at C=%g (raise params.max_iter)",
                    params.max_iter, C)
    if k == 1:
        return lr.coef_.astype(np.float64), lr.intercept_.astype(np.float64), C
    coef, intercept = np.zeros((k, X.shape[1])), np.full(k, ABSENT_MARGIN)
    if len(lr.classes_) == 2:  # only two classes in these rows: sklearn fitted one binary model
        coef[lr.classes_[1]], intercept[lr.classes_[0]], intercept[lr.classes_[1]] = lr.coef_[0], 0.0, lr.intercept_[0]
    else:
        coef[lr.classes_], intercept[lr.classes_] = lr.coef_, lr.intercept_
    return coef, intercept, C


def fit_probe(design: Design, X: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: TaskKind, n_classes: int,
              params: LinearParams, seed: int = 0) -> Probe:
    """A probe fitted on the rows (X, y); ``groups`` (patients) keep a patient within one inner fold."""
    kind = TaskKind(kind)
    X = np.asarray(X, dtype=np.float32)  # half the memory traffic of lbfgs' matrix-vector products; same optimum
    with warnings.catch_warnings(), threadpool_limits(params.threads):
        warnings.simplefilter("ignore", ConvergenceWarning)  # inner fits at large C; the refit reports its own
        if kind.multilabel:
            fits = [_fit_output(X, y[:, j], groups, params, seed, 2) for j in range(y.shape[1])]
        else:
            fits = [_fit_output(X, y, groups, params, seed, 2 if kind.binary else n_classes)]
    coef = np.concatenate([f[0] for f in fits])
    intercept = np.concatenate([f[1] for f in fits])
    return Probe(design, kind, coef, intercept, [f[2] for f in fits])


class SavedLinear(NestedScoreGroup, SavedModel):
    """A ``kind = "logistic"`` model folder: the probes of every fold and seed, averaged. New rows need
    their table features (``inputs.features``) and, when the model reads embeddings, the store that
    holds them (``inputs.embeddings``). When its pair probes were fitted (``nested/``), its scores are
    the boosters' ``probe`` feature group."""

    feature_group = GROUP
    relations = RELATIONS

    def probes(self) -> list[Probe]:
        return [Probe.load(self.dir / e["stem"], self.spec["task"]) for e in self.spec["models"]]

    def rows(self, inputs: Inputs) -> Rows:
        if inputs.features is None:
            raise DataError(f"model {self.name!r} needs the new rows' features", file=str(self.dir))
        spec = self.spec["inputs"]
        return read_rows(inputs.features.df, spec["columns"], inputs.embeddings, spec["backbones"], inputs.ids,
                         source=str(self.dir))

    def predict(self, inputs: Inputs) -> np.ndarray:
        rows = self.rows(inputs)
        return np.mean([p.predict_proba(p.design.matrix(rows, warn_unseen=i == 0)) for i, p in enumerate(self.probes())],
                       axis=0)

    def contributions(self, inputs: Inputs) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(terms, values, base) averaged over the folds and seeds: the values add up to the mean margin."""
        rows, probes = self.rows(inputs), self.probes()
        parts = [p.contributions(p.design.matrix(rows)) for p in probes]
        return probes[0].design.terms, np.mean([v for v, _ in parts], axis=0), np.mean([b for _, b in parts], axis=0)

    def nested_mean(self, inputs: Inputs) -> np.ndarray:
        """The mean score of the pair probes (what boosters that read this probe saw for test rows)."""
        key = (self.name, "nested")
        if key not in inputs.cache:
            record = self.dir / "nested" / NESTED_JSON
            if not record.is_file():
                raise DataError("no nested pair probes: a booster that reads this probe's scores cannot be applied",
                                file=str(record.parent))
            stems = read_json(record, "pair probes")["stems"]
            probes = [Probe.load(self.dir / "nested" / stem, self.spec["task"]) for stem in stems]
            rows = self.rows(inputs)
            inputs.cache[key] = np.mean([p.predict_proba(p.design.matrix(rows)) for p in probes], axis=0)
        return inputs.cache[key]
