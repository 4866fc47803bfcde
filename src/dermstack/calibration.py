"""Probabilities that mean what they say.

Two steps, because the scores boosters and CNNs produce are not probabilities of the data a user has:

1. **Undo the training prior** (binary tasks). Negative under-sampling, positive over-sampling,
   class weights and ``scale_pos_weight`` all multiply a model's odds by a factor known at fit
   time: the weighted share of positives it trained on over the share in the training fold.
   :func:`training_prior` measures it from the rows and weights actually fitted, and
   :func:`undo_prior` divides it out. This is monotone per fitted model, so a fold's ranking is
   unchanged. Multiclass and multi-label models keep their class weights: there they are the
   decision rule (argmax, the 0.5 threshold) that macro F1, those tasks' metric, is scored on, and
   undoing them costs most of it (HAM10000 7-class balanced accuracy 0.50 -> 0.17, measured).
2. **Calibrate on OOF scores** (:func:`calibrate`), with a map that is strictly increasing in the
   score, so that calibration never costs ranking: Platt scaling (a logistic regression on the
   logit; temperature scaling for multiclass, which keeps each row's argmax), beta calibration or
   isotonic regression interpolated between its blocks' centres (:class:`Calibrator`), chosen by
   nested cross-validation on the run's folds by Brier score, against leaving the scores as they
   are ("none": calibration must earn its place). Isotonic is a candidate only with at least
   :data:`ISOTONIC_MIN_CLASS_ROWS` rows of each class. The calibrator fitted on every OOF row is
   what test rows and new data get; :func:`calibrated_model` says which OOF scores each metric of
   the calibrated model is measured on.

Calibration is reported as the Brier score and the expected calibration error over 10 equal-count
bins of the score (multiclass and multi-label: the mean over classes of each class's one-vs-rest
ECE, "classwise ECE").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.isotonic import IsotonicRegression

from dermstack.crossfit import apply_by_fold, fit_other_folds
from dermstack.predictions import ModelResult, Predictions
from dermstack.saved import Inputs, SavedModel, model_spec, write_model
from dermstack.task import as_columns
from dermstack.taskkind import TaskKind

EPS = 1e-6
#: where a calibrator's inputs are clipped: far enough out that distinct scores keep distinct logits
TINY = 1e-15
#: the least slope of a logistic calibrator (per unit of the score's log-odds): strictly increasing
MIN_SLOPE = 1e-3
METHODS = ("none", "platt", "beta", "isotonic")
#: multiclass: the maps that keep each row's argmax (what its macro F1 and submission score)
EXCLUSIVE_METHODS = ("none", "platt")
#: isotonic regression needs this many rows of each class per output, or it memorises a few
#: positives into 0/1 steps (PH2: 5 melanomas)
ISOTONIC_MIN_CLASS_ROWS = 30


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def _onehot(kind: TaskKind, y: np.ndarray, n: int) -> np.ndarray:
    """Labels as (rows, outputs) 0/1."""
    y = np.asarray(y)
    if kind.exclusive:
        return np.eye(n)[y]
    return as_columns(y)


# -- 1. the training prior --------------------------------------------------------------------
def prior_factor(kind: str, y_train: np.ndarray, fit_rows: np.ndarray, weight: np.ndarray | None,
                 pos_weight: float = 1.0, n_outputs: int = 1) -> np.ndarray:
    """Per-output factor by which the fitted data's class balance differs from the training fold's.

    ``y_train``: labels of the fold's training rows; ``fit_rows``: indices into them of the rows the
    model was fitted on (with repeats); ``weight``: their sample weights ((rows,) or (rows, C));
    ``pos_weight``: the library's ``scale_pos_weight``. Binary and multi-label: the odds factor of
    each output; multiclass: the relative weight of each class."""
    kind = TaskKind(kind)
    Y = _onehot(kind, y_train, n_outputs).astype(float)
    F = Y[fit_rows]
    w = np.ones(F.shape) if weight is None else np.broadcast_to(as_columns(np.asarray(weight, float)), F.shape)
    if kind.exclusive:
        share = (F * w).sum(0) / np.maximum(Y.sum(0), 1)
        return share / share.mean()
    pos = (F * w).sum(0) * pos_weight / np.maximum(Y.sum(0), 1)
    neg = ((1 - F) * w).sum(0) / np.maximum((1 - Y).sum(0), 1)
    return np.where((Y.sum(0) > 0) & (neg > 0), pos / np.maximum(neg, EPS), 1.0)


def training_prior(kind: str, y_train: np.ndarray, fit_rows: np.ndarray, weight: np.ndarray | None,
                   pos_weight: float = 1.0) -> np.ndarray | None:
    """:func:`prior_factor` of a binary model, the factor its scores are divided by; None for the
    other tasks, whose class weights stay (see the module docstring)."""
    if not TaskKind(kind).binary:
        return None
    return prior_factor(kind, y_train, fit_rows, weight, pos_weight)


def undo_prior(kind: str, scores: np.ndarray, factor: np.ndarray | None) -> np.ndarray:
    """Scores of a model fitted with ``factor`` (see :func:`prior_factor`), as if fitted on the fold's
    own balance; ``None``: unchanged."""
    kind, s = TaskKind(kind), np.asarray(scores, dtype=np.float64)
    if factor is None:
        return s
    if kind.exclusive:
        p = s / factor
        return p / p.sum(axis=-1, keepdims=True)
    flat = as_columns(s)
    out = 1 / (1 + np.exp(-(_logit(flat) - np.log(factor))))
    return out.reshape(s.shape)


# -- reporting ------------------------------------------------------------------------------
def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of binary labels and probabilities over ``bins`` equal-count bins."""
    order = np.argsort(p, kind="stable")
    parts = np.array_split(order, min(bins, len(order)))
    return float(sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in parts if len(b)) / max(len(p), 1))


def calibration_metrics(kind: str, y: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, float]:
    """Brier score and ECE (10 equal-count bins; classwise mean for several outputs)."""
    kind, s = TaskKind(kind), np.asarray(scores, dtype=np.float64)
    S = as_columns(s)
    Y = _onehot(kind, y, S.shape[1])
    brier = float(((S - Y) ** 2).sum(axis=1).mean()) if kind.exclusive else float(((S - Y) ** 2).mean())
    return {"brier": brier, "ece": float(np.mean([ece(Y[:, j], S[:, j], bins) for j in range(S.shape[1])]))}


# -- 2. calibrators -------------------------------------------------------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _log_features(x: np.ndarray, method: str) -> np.ndarray:
    """The inputs of a logistic calibrator: Platt the score's logit, beta (ln s, -ln(1 - s)). Clipped
    at :data:`TINY`, not :data:`EPS`, so that distinct scores near 0 or 1 stay distinct."""
    x = np.clip(x, TINY, 1 - TINY)
    if method == "platt":
        return (np.log(x) - np.log1p(-x))[:, None]
    return np.stack([np.log(x), -np.log1p(-x)], axis=1)


def _fit_logistic(F: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(slopes..., intercept) of a logistic regression of ``t`` on ``F`` with every slope at least
    :data:`MIN_SLOPE`, so that the map is strictly increasing in the score (a slope sklearn would fit
    negative, a score that ranks backwards, is held at the floor); the same weak L2 as sklearn's C=1e4."""
    n, k = F.shape
    ridge = 1.0 / (1e4 * n)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = F @ w[:k] + w[k]
        p = _sigmoid(z)
        value = float(np.mean(np.logaddexp(0.0, z) - t * z) + 0.5 * ridge * w[:k] @ w[:k])
        g = p - t
        return value, np.r_[F.T @ g / n + ridge * w[:k], g.mean()]

    start = np.r_[np.ones(k) / k, 0.0]
    bounds = [(MIN_SLOPE, None)] * k + [(None, None)]
    return minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x


def _centred_isotonic(x: np.ndarray, t: np.ndarray) -> dict:
    """Isotonic regression of ``t`` on the score's logit, kept as its blocks' centres (the mean logit
    of each block's rows) and values (clipped to [EPS, 1 - EPS]): what :func:`_apply_isotonic`
    interpolates. PAVA's block values strictly increase, so the interpolation does too."""
    u = _log_features(x, "platt")[:, 0]
    order = np.argsort(u, kind="stable")
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(u[order], t[order])
    starts = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])
    centres = np.add.reduceat(u[order], starts) / np.diff(np.r_[starts, len(u)])
    values = np.clip(fitted[starts], EPS, 1 - EPS)
    keep = np.r_[True, np.diff(values) > 0]  # clipping could merge two blocks at the ends
    return {"centres": centres[keep].tolist(), "values": values[keep].tolist()}


def _apply_isotonic(x: np.ndarray, m: dict) -> np.ndarray:
    """Linear in the score's logit between block centres; beyond the first and last centre the
    log-odds move one for one with the score's, so no two scores are ever tied."""
    u = _log_features(x, "platt")[:, 0]
    c, v = np.asarray(m["centres"]), np.asarray(m["values"])
    out = np.interp(u, c, v)
    lo, hi = u < c[0], u > c[-1]
    out[lo] = _sigmoid(_logit(v[:1]) + (u[lo] - c[0]))
    out[hi] = _sigmoid(_logit(v[-1:]) + (u[hi] - c[-1]))
    return out


class Calibrator:
    """One strictly increasing map per output (multiclass: one temperature for every class), chosen
    among :data:`METHODS`; plain numbers, saved as JSON.

    ``platt``: a logistic regression on the score's logit (multiclass: temperature scaling, which
    keeps every row's argmax); ``beta``: beta calibration (Kull et al. 2017), a logistic regression on
    ln s and -ln(1 - s) with both slopes positive, which bends where Platt cannot; ``isotonic``:
    isotonic regression interpolated between its blocks' centres (not its steps, which tie scores).

    >>> import numpy as np
    >>> s = np.linspace(0.01, 0.99, 200)
    >>> y = (np.random.default_rng(0).random(200) < s ** 2).astype(int)
    >>> cal = Calibrator("binary", "isotonic").fit(y, s)
    >>> bool(np.all(np.diff(cal.apply(s)) > 0))
    True
    """

    def __init__(self, kind: str, method: str):
        kind = TaskKind(kind)
        allowed = EXCLUSIVE_METHODS if kind.exclusive else METHODS
        if method not in allowed:
            raise ValueError(f"calibration method for a {kind} task must be one of {allowed}, got {method!r}")
        self.kind, self.method = kind, method
        self.maps: list[dict] = []

    def fit(self, y: np.ndarray, scores: np.ndarray) -> Calibrator:
        S = as_columns(np.asarray(scores, dtype=np.float64))
        Y = _onehot(self.kind, y, S.shape[1])
        if self.method == "none":
            self.maps = [{"identity": True}] * S.shape[1]
            return self
        if self.kind.exclusive:  # temperature: a positive power of every probability keeps the argmax
            logp = np.log(np.clip(S, EPS, 1))

            def nll(t: float) -> float:
                z = logp / t
                z = z - z.max(axis=1, keepdims=True)
                return float(-(z[np.arange(len(z)), Y.argmax(1)] - np.log(np.exp(z).sum(axis=1))).mean())

            self.maps = [{"temperature": float(minimize_scalar(nll, bounds=(0.05, 20), method="bounded").x)}]
            return self
        self.maps = []
        for j in range(S.shape[1]):
            x, t = S[:, j], Y[:, j]
            if t.min() == t.max():  # a class with no positive (or no negative) row: leave it as it is
                self.maps.append({"identity": True})
            elif self.method == "isotonic":
                self.maps.append(_centred_isotonic(x, t))
            else:
                w = _fit_logistic(_log_features(x, self.method), t).tolist()
                self.maps.append({"a": w[0], "b": w[1]} if self.method == "platt" else {"beta": w})
        return self

    def apply(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        S = as_columns(s)
        if "temperature" in self.maps[0]:
            z = np.log(np.clip(S, EPS, 1)) / self.maps[0]["temperature"]
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return (e / e.sum(axis=1, keepdims=True)).reshape(s.shape)
        out = np.empty_like(S)
        for j, m in enumerate(self.maps):
            x = S[:, j]
            if m.get("identity"):
                out[:, j] = x
            elif "a" in m:
                out[:, j] = _sigmoid(m["a"] * _log_features(x, "platt")[:, 0] + m["b"])
            elif "beta" in m:
                out[:, j] = _sigmoid(_log_features(x, "beta") @ np.asarray(m["beta"][:2]) + m["beta"][2])
            elif "centres" in m:
                out[:, j] = _apply_isotonic(x, m)
            else:  # a run saved before isotonic was interpolated: its steps, tilted by the score
                out[:, j] = np.interp(x, m["x"], m["y"]) * (1 - 2 * EPS) + EPS * (1 + np.clip(x, 0, 1))
        if self.kind.exclusive:  # a multiclass "none", or a run saved when multiclass had isotonic
            out = np.clip(out, EPS, None)
            out /= out.sum(axis=1, keepdims=True)
        return out.reshape(s.shape)

    def to_json(self) -> dict:
        return {"task": str(self.kind), "method": self.method, "maps": self.maps}

    @classmethod
    def from_json(cls, d: dict) -> Calibrator:
        obj = cls.__new__(cls)  # a saved calibrator is read as it was written (older runs' methods too)
        obj.kind, obj.method, obj.maps = TaskKind(d["task"]), d["method"], d["maps"]
        return obj


def nested_calibration(kind: str, y: np.ndarray, scores: np.ndarray, fold_of: np.ndarray, method: str) -> np.ndarray:
    """OOF scores calibrated fold by fold: fold k's calibrator is fitted on the other folds' rows."""
    fitted = fit_other_folds(fold_of, lambda tr: Calibrator(kind, method).fit(y[tr], scores[tr]))
    return apply_by_fold(fold_of, fitted, lambda cal, rows: cal.apply(scores[rows]),
                         np.empty_like(np.asarray(scores, dtype=np.float64)))


def calibrate(kind: str, y: np.ndarray, scores: np.ndarray, fold_of: np.ndarray) -> tuple[Calibrator, np.ndarray, dict]:
    """(the calibrator chosen by nested-CV Brier score and fitted on every row, the nested-calibrated
    OOF scores, a record: each method's nested Brier/ECE, before and after)."""
    kind = TaskKind(kind)
    Y = _onehot(kind, y, as_columns(scores).shape[1])
    enough = min(Y.sum(0).min(), (1 - Y).sum(0).min()) >= ISOTONIC_MIN_CLASS_ROWS
    methods = [m for m in (EXCLUSIVE_METHODS if kind.exclusive else METHODS) if m != "isotonic" or enough]
    nested = {m: nested_calibration(kind, y, scores, fold_of, m) for m in methods}
    scored = {m: calibration_metrics(kind, y, s) for m, s in nested.items()}
    chosen = min(nested, key=lambda m: scored[m]["brier"])  # ties: the simpler method, "none" first
    record = {"method": chosen, "chosen_by": "nested-CV Brier score", "bins": "10 equal-count bins",
              "before": calibration_metrics(kind, y, scores), "after": scored[chosen], "candidates": scored}
    return Calibrator(kind, chosen).fit(y, scores), nested[chosen], record


#: where a calibrated model keeps its nested-CV calibrated OOF scores (what its Brier and ECE are of)
NESTED_OOF = "nested/oof.parquet"


def calibrated_model(final: ModelResult, task, plan, out_dir: Path | None = None, name: str = "calibrated") -> ModelResult:
    """The run's final model calibrated as described above, saved in ``out_dir/<name>/`` (kind
    "calibrated", ``needs`` the final model).

    Two sets of OOF scores, because they answer two questions. ``oof.parquet``: the calibrator
    fitted on every OOF row applied to every OOF row, the one strictly increasing map that test rows
    and ``predict`` get, so its ranking metrics (ROC-AUC, pAUC, top-15 per patient) are exactly the
    final model's: calibration never costs ranking. ``nested/oof.parquet``: each fold's rows through
    the calibrator fitted on the other folds, what the Brier score and ECE (``metrics.json``
    ``calibration``, and this model's own ``brier``/``ece``) are measured on, since a map judged on
    the rows it was fitted to looks better calibrated than it is. The nested scores are not a
    ranking: five maps, one per fold, put the pooled rows in another order than any one map does
    (the demo's isotonic XGBoost lost 0.011 pAUC that way), an artefact of the evaluation that no
    submitted score has."""
    fold_of = plan.fold_of(task.image_ids)
    scores = final.oof.matrix(task.image_ids, task.classes)
    calibrator, nested, record = calibrate(task.kind, task.y, scores, fold_of)
    test_ids = final.test.image_ids()
    test = calibrator.apply(final.test.matrix(test_ids, task.classes))
    record |= {"of": final.name, "oof_scores": "the calibrator fitted on every OOF row (the final model's ranking); "
               f"Brier and ECE of the nested-CV calibrated scores ({NESTED_OOF})"}
    result = ModelResult(name, Predictions.from_scores(name, task.image_ids, task.classes, calibrator.apply(scores), fold=fold_of),
                         Predictions.from_scores(name, test_ids, task.classes, test), {"calibration": record})
    if out_dir is not None:
        write_model(Path(out_dir) / name, model_spec(name, "calibrated", task, {"members": [final.name]},
                                                     calibrator=calibrator.to_json(), oof_scores="calibrator"), result,
                    extra={NESTED_OOF: Predictions.from_scores(name, task.image_ids, task.classes, nested, fold=fold_of)})
    return result


class SavedCalibrated(SavedModel):
    """A member's scores through its stored calibrator."""

    def predict(self, inputs: Inputs) -> np.ndarray:
        return Calibrator.from_json(self.spec["calibrator"]).apply(inputs.matrix(self.spec["needs"]["members"][0]))
