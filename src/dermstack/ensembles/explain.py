"""How each ensemble step composes its members' explanations in the final model's SHAP
(:mod:`dermstack.reports.final_shap`): the contributions algebra (:class:`Attribution`) and the
``explain`` hook of every method in :mod:`dermstack.ensembles.methods`.

- a linear step (the weighted mean of ``mean`` and ``greedy``, the stack's logistic regression on
  member logits, Platt scaling on log-odds) is applied exactly to every contribution;
- a step applied to each output on its own (the sigmoid of a member's log-odds, the stack's logit of
  a member probability, the rank transform of ``rank``, isotonic calibration) scales every
  contribution by the step's secant slope, (f(score) - f(base)) / (score - base) (the *rescale* rule);
- the softmax maps contributions through its Jacobian averaged on the straight path from base to
  score (integrated gradients, 48-point Gauss-Legendre), the quadrature residual shared by |contribution|.

Each hook gets the composer (:class:`dermstack.registry.Composer`: the explained rows, the run's
stored OOF scores, the step that scored each row), the member's ``model.json`` spec and the members'
attributions, and returns its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dermstack.calibration import Calibrator
from dermstack.ensembles.level2 import EPS, Level2, logit, make_learner
from dermstack.errors import DataError

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(48)
_NODES, _WEIGHTS = (_NODES + 1) / 2, _WEIGHTS / 2


@dataclass
class Attribution:
    """``base`` (n, C) plus ``values`` (n, F, C) summed over features: the explained quantity per row and output."""

    features: list[str]
    values: np.ndarray
    base: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.base + self.values.sum(axis=1)

    def each(self, f: Callable[[np.ndarray], np.ndarray]) -> Attribution:
        """Through ``f`` applied to each output on its own ((n, C) -> (n, C), rows may differ): every
        contribution scaled by the secant slope (its derivative where score and base meet)."""
        u0, u1 = self.base, self.total
        f0, du = f(u0), u1 - u0
        near = np.abs(du) < 1e-9
        h = 1e-6
        slope = np.where(near, (f(u0 + h) - f(u0 - h)) / (2 * h), (f(u1) - f0) / np.where(near, 1.0, du))
        return Attribution(self.features, self.values * slope[:, None, :], f0)

    def vector(self, f: Callable[[np.ndarray], np.ndarray], jacobian: Callable[[np.ndarray], np.ndarray]) -> Attribution:
        """Through ``f`` mapping each row's outputs together: contributions through the Jacobian
        (n, O, I) averaged on the path from base to score, the residual shared (:func:`exact`)."""
        u0, du = self.base, self.total - self.base
        J = sum(w * jacobian(u0 + t * du) for t, w in zip(_NODES, _WEIGHTS))
        out = Attribution(self.features, np.einsum("noi,nfi->nfo", J, self.values), f(u0))
        return exact(out, f(u0 + du))


def exact(att: Attribution, target: np.ndarray) -> Attribution:
    """``att`` with the residual ``target - att.total`` shared among features by |contribution| (into
    the base where no feature contributes), so that it adds up to ``target``."""
    resid = target - att.total
    mag = np.abs(att.values)
    tot = mag.sum(axis=1)
    share = np.divide(mag, tot[:, None, :], out=np.zeros_like(mag), where=tot[:, None, :] > 0)
    return Attribution(att.features, att.values + resid[:, None, :] * share, att.base + np.where(tot > 0, 0.0, resid))


def combine(parts: list[Attribution], A: np.ndarray, bias: np.ndarray | None = None) -> Attribution:
    """``bias + sum_m A[:, :, m] @ part_m`` per row (``A``: rows x outputs x members x inputs), features merged by name."""
    features = list(dict.fromkeys(f for p in parts for f in p.features))
    index = {f: j for j, f in enumerate(features)}
    n, n_out = A.shape[:2]
    values = np.zeros((n, len(features), n_out))
    base = np.zeros((n, n_out)) if bias is None else np.array(bias, dtype=float)
    for m, p in enumerate(parts):
        values[:, [index[f] for f in p.features]] += np.einsum("noi,nfi->nfo", A[:, :, m], p.values)
        base += np.einsum("noi,ni->no", A[:, :, m], p.base)
    return Attribution(features, values, base)


def sigmoid(u: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-u))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_jacobian(z: np.ndarray) -> np.ndarray:
    p = softmax(z)
    return p[:, :, None] * (np.eye(p.shape[1])[None] - p[:, None, :])


def as_3d(values: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (values[:, :, None], base[:, None]) if values.ndim == 2 else (values, base)


class Composer(Protocol):
    """What an ensemble method's ``explain`` hook reads while the final-model SHAP composes its members
    (:class:`dermstack.reports.final_shap._Explainer`): the explained rows (``ids``, their ``folds``), the
    run, and the stored OOF scores; ``per_fold(fit, saved)`` gives each row the step that scored it."""

    ids: list[str]
    n_out: int
    train_fold: np.ndarray
    dirs: dict[str, Path]

    @property
    def kind(self) -> Any: ...

    @property
    def run(self) -> Any:
        """The run's data (:class:`dermstack.reports.rundata.RunData`): its task, folds and stored scores."""

    def oof_all(self, name: str) -> np.ndarray: ...

    def per_fold(self, fit: Callable[[np.ndarray], Any], saved: Any) -> list[tuple[np.ndarray, Any]]: ...

    def diagonal(self, w: np.ndarray) -> np.ndarray: ...


def explain_level2(ex: Composer, spec: dict, parts: list[Attribution]) -> Attribution:
    """greedy / rank (weighted means) and stack (logistic regression on logits, softmax), each row
    through the learner that scored it."""
    saved = Level2.from_json(spec["learner"])
    names, M = saved.models, len(saved.models)
    X = np.stack([ex.oof_all(m) for m in names], axis=1)
    y = ex.run.task.y
    groups = ex.per_fold(lambda tr: make_learner(spec["kind"], ex.kind, names).fit(X[tr], y[tr], ex.train_fold[tr]),
                           saved)
    n, C = len(ex.ids), ex.n_out
    if spec["kind"] in ("greedy", "rank"):  # weighted mean (of ranks): clip / renormalising are no-ops
        if spec["kind"] == "rank" and not ex.kind.exclusive:
            parts = [p.each(_rank(groups, m, M)) for m, p in enumerate(parts)]
        w = np.zeros((n, M))
        for rows, learner in groups:
            w[rows] = learner.w
        return combine(parts, ex.diagonal(w))
    A, bias = np.zeros((n, C, M, C)), np.zeros((n, C))
    if ex.kind.exclusive:  # multinomial logistic regression on every member's log-probabilities, softmax
        for rows, learner in groups:
            coef, icpt = learner.fits[0]
            A[rows] = np.asarray(coef).reshape(C, M, C)
            bias[rows] = icpt
        logs = [p.each(lambda u: np.log(np.clip(u, EPS, 1))) for p in parts]
        return combine(logs, A, bias).vector(softmax, softmax_jacobian)
    for rows, learner in groups:  # per output: logistic regression on the members' logits
        for j, (coef, icpt) in enumerate(learner.fits):
            A[rows, j, :, j] = np.asarray(coef)[0]
            bias[rows, j] = np.asarray(icpt)[0]
    return combine([p.each(logit) for p in parts], A, bias).each(sigmoid)


def _rank(groups: list, m: int, M: int) -> Callable[[np.ndarray], np.ndarray]:
    """Member ``m``'s rank transform, each row by the learner that scored it."""
    def f(u: np.ndarray) -> np.ndarray:
        out = np.empty_like(u)
        for rows, learner in groups:
            out[rows] = learner.transform(np.repeat(u[rows][:, None, :], M, axis=1))[:, m]
        return out
    return f


def explain_calibrated(ex: Composer, spec: dict, parts: list[Attribution]) -> Attribution:
    """The saved calibrator applied to its one member (the rescale rule): on every row, as its OOF
    scores were made (:func:`dermstack.calibration.calibrated_model`); in a run saved before that, the
    calibrator of each training row's fold, as they were made then."""
    part = parts[0]
    if ex.kind.exclusive:
        raise DataError("final-model SHAP does not explain a calibrated multiclass model (the run submits the "
                        "final model's own scores; explain that)", file=str(ex.dirs[spec["name"]]))
    saved = Calibrator.from_json(spec["calibrator"])
    S, y = ex.oof_all(spec["needs"]["members"][0]), ex.run.task.y
    groups = ([(np.ones(len(ex.ids), bool), saved)] if spec.get("oof_scores") == "calibrator" else
              ex.per_fold(lambda tr: Calibrator(ex.kind, saved.method).fit(y[tr], S[tr]), saved))

    def f(u: np.ndarray) -> np.ndarray:
        out = np.empty_like(u)
        for rows, cal in groups:
            out[rows] = np.reshape(cal.apply(u[rows]), out[rows].shape)
        return out
    return part.each(f)


def explain_mean(ex: Composer, spec: dict, parts: list[Attribution]) -> Attribution:
    """The weighted mean: exact, each output the weighted sum of the members' contributions."""
    w = np.asarray(spec["weights"], dtype=float)
    return combine(parts, ex.diagonal(w / w.sum()))
