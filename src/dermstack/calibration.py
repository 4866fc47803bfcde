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
2. **Calibrate on OOF scores** (:func:`calibrate`): Platt scaling (a logistic regression on the
   logit; temperature scaling for multiclass, which keeps the argmax) or isotonic regression,
   chosen by nested cross-validation on the run's folds by Brier score, against leaving the scores
   as they are ("none": calibration must earn its place). Isotonic is a candidate only with at
   least :data:`ISOTONIC_MIN_CLASS_ROWS` rows of each class, and is made strictly increasing (a
   1e-6 tilt by the score), so that calibration never ties scores apart and ranking metrics are
   unchanged. The calibrator fitted on every OOF row is what test rows and new data get.

Calibration is reported as the Brier score and the expected calibration error over 10 equal-count
bins of the score (multiclass and multi-label: the mean over classes of each class's one-vs-rest
ECE, "classwise ECE").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from dermstack.crossfit import apply_by_fold, fit_other_folds
from dermstack.predictions import ModelResult, Predictions
from dermstack.saved import Inputs, SavedModel, model_spec, write_model
from dermstack.task import as_columns
from dermstack.taskkind import TaskKind

EPS = 1e-6
METHODS = ("none", "platt", "isotonic")
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
class Calibrator:
    """Platt (temperature for multiclass) or isotonic, one map per output; plain numbers, saved as JSON."""

    def __init__(self, kind: str, method: str):
        if method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
        self.kind, self.method = TaskKind(kind), method
        self.maps: list[dict] = []

    def fit(self, y: np.ndarray, scores: np.ndarray) -> Calibrator:
        S = as_columns(np.asarray(scores, dtype=np.float64))
        Y = _onehot(self.kind, y, S.shape[1])
        if self.method == "none":
            self.maps = [{"identity": True}] * S.shape[1]
            return self
        if self.method == "platt" and self.kind.exclusive:
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
            elif self.method == "platt":
                f = LogisticRegression(C=1e4, max_iter=1000).fit(_logit(x)[:, None], t)
                self.maps.append({"a": float(f.coef_[0, 0]), "b": float(f.intercept_[0])})
            else:
                iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, t)
                self.maps.append({"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
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
                out[:, j] = 1 / (1 + np.exp(-(m["a"] * _logit(x) + m["b"])))
            else:  # tilted by the score so that it stays strictly increasing: no new ties
                out[:, j] = np.interp(x, m["x"], m["y"]) * (1 - 2 * EPS) + EPS * (1 + np.clip(x, 0, 1))
        if self.kind.exclusive:
            out = np.clip(out, EPS, None)
            out /= out.sum(axis=1, keepdims=True)
        return out.reshape(s.shape)

    def to_json(self) -> dict:
        return {"task": str(self.kind), "method": self.method, "maps": self.maps}

    @classmethod
    def from_json(cls, d: dict) -> Calibrator:
        obj = cls(d["task"], d["method"])
        obj.maps = d["maps"]
        return obj


def nested_calibration(kind: str, y: np.ndarray, scores: np.ndarray, fold_of: np.ndarray, method: str) -> np.ndarray:
    """OOF scores calibrated fold by fold: fold k's calibrator is fitted on the other folds' rows."""
    fitted = fit_other_folds(fold_of, lambda tr: Calibrator(kind, method).fit(y[tr], scores[tr]))
    return apply_by_fold(fold_of, fitted, lambda cal, rows: cal.apply(scores[rows]),
                         np.empty_like(np.asarray(scores, dtype=np.float64)))


def calibrate(kind: str, y: np.ndarray, scores: np.ndarray, fold_of: np.ndarray) -> tuple[Calibrator, np.ndarray, dict]:
    """(the calibrator chosen by nested-CV Brier score and fitted on every row, the nested-calibrated
    OOF scores, a record: each method's nested Brier/ECE, before and after)."""
    Y = _onehot(TaskKind(kind), y, as_columns(scores).shape[1])
    enough = min(Y.sum(0).min(), (1 - Y).sum(0).min()) >= ISOTONIC_MIN_CLASS_ROWS
    nested = {m: nested_calibration(kind, y, scores, fold_of, m) for m in METHODS if m != "isotonic" or enough}
    scored = {m: calibration_metrics(kind, y, s) for m, s in nested.items()}
    chosen = min(nested, key=lambda m: scored[m]["brier"])  # ties: the simpler method, "none" first
    record = {"method": chosen, "chosen_by": "nested-CV Brier score", "bins": "10 equal-count bins",
              "before": calibration_metrics(kind, y, scores), "after": scored[chosen], "candidates": scored}
    return Calibrator(kind, chosen).fit(y, scores), nested[chosen], record


# -- the calibrated final model, a saved model ------------------------------------------------
def calibrated_model(final: ModelResult, task, plan, out_dir: Path | None = None, name: str = "calibrated") -> ModelResult:
    """The run's final model calibrated as described above, saved in ``out_dir/<name>/`` (kind
    "calibrated", ``needs`` the final model): OOF scores calibrated by nested CV (what its Brier
    score and ECE are measured on), test scores by the calibrator fitted on every OOF row."""
    fold_of = plan.fold_of(task.image_ids)
    scores = final.oof.matrix(task.image_ids, task.classes)
    calibrator, nested, record = calibrate(task.kind, task.y, scores, fold_of)
    test_ids = final.test.image_ids()
    test = calibrator.apply(final.test.matrix(test_ids, task.classes))
    record |= {"of": final.name}
    result = ModelResult(name, Predictions.from_scores(name, task.image_ids, task.classes, nested, fold=fold_of),
                         Predictions.from_scores(name, test_ids, task.classes, test), {"calibration": record})
    if out_dir is not None:
        write_model(Path(out_dir) / name, model_spec(name, "calibrated", task, {"members": [final.name]},
                                                     calibrator=calibrator.to_json()), result)
    return result


class SavedCalibrated(SavedModel):
    """A member's scores through its stored calibrator."""

    def predict(self, inputs: Inputs) -> np.ndarray:
        return Calibrator.from_json(self.spec["calibrator"]).apply(inputs.matrix(self.spec["needs"]["members"][0]))
