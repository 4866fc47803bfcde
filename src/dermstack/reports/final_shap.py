"""SHAP of the run's final prediction: per lesion, contributions that add up to the score the run gives it.

**What is explained.** Binary runs: the ``calibrated`` model (the final model through its
calibrator), because that is what the submission carries; multiclass and multi-label runs: the
final model itself (``metrics.json`` ``oof_model``), which is what they submit. A training row's
target is the model's stored out-of-fold score (``models/<name>/oof.parquet``), a test row's its
stored test score (what ``predict`` gives).

**In which space.** Binary and multi-label: the log-odds of the score, per class for multi-label
(scores clipped to [1e-12, 1 - 1e-12]); multiclass: the probability of each class (the
contributions of one feature sum to 0 over the classes). Per row and output,
``values.sum(features) + base`` equals that score to float precision (checked by the tests).

**How the members' explanations are combined.** Each member is first explained in probability
space, averaged over its own seeds (and, for a test row, folds) the way its scores are averaged:
a booster's or linear probe's raw-score SHAP values (log-odds, softmax logits) go through the
link (its kind's :class:`~dermstack.registry.Explainer`), a CNN member is one feature ``image (CNN)``
(its kind's :class:`~dermstack.registry.ScoreTerm`: its score minus its mean OOF score), a member
whose kind has no explainer one feature ``<model> (score)``. Then each step of the ensemble is
applied to the contributions (its method's ``explain``, :mod:`dermstack.ensembles.explain`):

- a linear step (the weighted mean of ``mean`` and ``greedy``, the stack's logistic regression on
  member logits, Platt scaling on log-odds) is applied exactly to every contribution;
- a step applied to each output on its own (the sigmoid of a member's log-odds, the stack's
  logit of a member probability, the rank transform of ``rank``, isotonic calibration, the final
  log-odds) scales every contribution by the step's secant slope, (f(score) - f(base)) /
  (score - base): the change of the step's output is shared among features in proportion to
  their contribution to its input, the standard *rescale* rule, exact by construction;
- the softmax (multiclass members and stack) maps contributions through its Jacobian averaged on
  the straight path from base to score (integrated gradients, 48-point Gauss-Legendre), and the
  quadrature residual is shared by |contribution|.

Features of different members are merged by name (the same feature in two boosters sums). OOF
rows of ``greedy``, ``rank`` and ``stack`` were scored by the learner fitted on the other folds
(nested CV), so those are refitted the same way here (``calibrated`` OOF rows went through the
calibrator fitted on every row, the one test rows get), and every
member's composed score is checked against its stored score: a difference above
:data:`REPRODUCE_TOL` (the saved models no longer give the stored scores) is a DataError naming
the model; below it, the float residual is shared among features by |contribution|.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dermstack.crossfit import align_rows, fit_other_folds, plain
from dermstack.ensembles.explain import Attribution, as_3d, exact, sigmoid, softmax, softmax_jacobian
from dermstack.errors import DataError
from dermstack.predictions import Predictions
from dermstack.registry import NO_EXPLAINER_GROUP, Explainer, ScoreTerm, ensemble_methods, model_kinds
from dermstack.reports.rundata import RunData
from dermstack.reports.shap_ import ShapValues, explain_model
from dermstack.saved import model_dirs, read_spec

log = logging.getLogger(__name__)

#: |composed score - stored score| (probability) above which a model is reported as not reproduced
REPRODUCE_TOL = 1e-4
#: clip of the final score before its log-odds
FINAL_CLIP = 1e-12
RULE = ("Each member is explained in probability space (boosters and linear probes through their link, a CNN as one "
        "term 'image (CNN)'), linear ensemble steps apply exactly, each one-output nonlinear step (sigmoid, logit, rank, "
        "isotonic, the final log-odds) rescales every contribution by the step's secant slope (the 'rescale' rule), "
        "the softmax by its path-averaged Jacobian; features of different members are merged by name.")


@dataclass
class FinalShap:
    """The final model's explanation: ``values`` (a :class:`ShapValues`), feature groups, the
    model whose scores are explained and the space in which ``values`` + base add up to them."""

    values: ShapValues
    groups: dict[str, str]
    explained: str
    space: str
    #: model -> largest |composed - stored| score before the float residual was shared (probability)
    gaps: dict[str, float]

    @property
    def caption(self) -> str:
        return f"{self.values.model}: contributions add up to the {self.space}. {RULE}"


def explained_model(run: RunData) -> str:
    """``calibrated`` for a binary run that has it for its final model (what it submits), else the final model."""
    dirs = model_dirs(run.models_dir)
    if run.task.kind.binary and "calibrated" in dirs and read_spec(dirs["calibrated"])["needs"].get("members") == [run.final_model]:
        return "calibrated"
    return run.final_model


def explain_final(run: RunData, image_ids: list[str], folds: np.ndarray, model: str | None = None,
                  progress: bool = True) -> FinalShap:
    """Contributions to the final model's score of rows ``image_ids`` (``folds``: each training row's
    fold, -1 for a test row), adding up exactly in the space the module docstring states.
    ``model``: another saved model to explain the same way (default :func:`explained_model`)."""
    name = model or explained_model(run)
    ex = _Explainer(run, list(image_ids), np.asarray(folds), progress)
    att = ex.explain(name)
    target = ex.scores(name)
    kind = run.task.kind
    if kind.exclusive:
        space = "probability of each class"
    else:
        att = exact(att.each(logit_clip), logit_clip(target))
        space = "log-odds of the score" + (" of each class" if kind.multilabel else "")
    of = f"calibrated {ex.final_of(name)}" if name == "calibrated" else name
    label, space = f"final ({of})", f"{space} of {of}"
    data = np.column_stack([ex.data.get(f, np.full(len(ex.ids), np.nan)) for f in att.features])
    binary = kind.binary
    sv = ShapValues(label, np.asarray(image_ids), np.asarray(folds), att.features,
                    att.values[:, :, 0] if binary else att.values, att.base[:, 0] if binary else att.base,
                    data, run.task.classes[:1] if binary else list(run.task.classes), ex.categories, 1)
    return FinalShap(sv, {f: ex.groups.get(f, "other") for f in att.features}, name, space, ex.gaps)


def logit_clip(u: np.ndarray) -> np.ndarray:
    p = np.clip(u, FINAL_CLIP, 1 - FINAL_CLIP)
    return np.log(p) - np.log1p(-p)


class _Explainer:
    """Explains saved models (recursively through their members) on rows ``ids``, in probability space."""

    def __init__(self, run: RunData, ids: list[str], folds: np.ndarray, progress: bool):
        self.run, self.ids, self.folds, self.progress = run, ids, folds, progress
        self.kind = run.task.kind
        self.n_out = len(run.task.classes) if not self.kind.binary else 1
        self.dirs = model_dirs(run.models_dir)
        self.train_fold = run.folds.fold_of(run.task.image_ids)
        self.data: dict[str, np.ndarray] = {}
        self.groups: dict[str, str] = {}
        self.categories: dict[str, list[str]] = {}
        self._done: dict[str, Attribution] = {}
        self.gaps: dict[str, float] = {}

    # -- stored scores ------------------------------------------------------------------------
    def _spec(self, name: str) -> dict:
        if name not in self.dirs:
            raise DataError(f"saved model {name!r} is missing", file=str(self.run.models_dir / name))
        return read_spec(self.dirs[name])

    def final_of(self, name: str) -> str:
        return self._spec(name)["needs"]["members"][0]

    def scores(self, name: str) -> np.ndarray:
        """(n, C) stored scores of ``ids``: OOF for training rows (fold >= 0), the test score otherwise."""
        d, classes = self.dirs[name], self.run.task.classes
        out = np.full((len(self.ids), self.n_out), np.nan)
        for rows, file in ((self.folds >= 0, "oof.parquet"), (self.folds < 0, "test.parquet")):
            if rows.any():
                ids = [i for i, r in zip(self.ids, rows) if r]
                out[rows] = np.reshape(Predictions.read(d / file).matrix(ids, classes, source=f"model {name} {file}"),
                                       (len(ids), self.n_out))
        return out

    def oof_all(self, name: str) -> np.ndarray:
        """(N, C) OOF scores of every training row (what nested learners and calibrators were fitted on)."""
        return np.reshape(self.run.scores(name), (len(self.run.task.image_ids), self.n_out))

    def per_fold(self, fit: Callable[[np.ndarray], object], saved: object) -> list[tuple[np.ndarray, object]]:
        """(rows of ``ids``, what scored them): per fold k, ``fit(training rows outside k)``; test rows, ``saved``."""
        fitted = fit_other_folds(self.train_fold, fit, [k for k in np.unique(self.folds) if k >= 0])
        return [(self.folds == k, saved if k < 0 else fitted[plain(k)]) for k in np.unique(self.folds)]

    # -- explanation ---------------------------------------------------------------------------
    def explain(self, name: str) -> Attribution:
        if name in self._done:
            return self._done[name]
        spec = self._spec(name)
        kind, method = model_kinds().get(spec["kind"]), ensemble_methods().get(spec["kind"])
        if kind is not None:
            how = kind.explainer
            att = (self._fold_models(name, how) if isinstance(how, Explainer) else
                   self._score_term(name, how or ScoreTerm(f"{name} (score)", NO_EXPLAINER_GROUP)))
        elif method is not None:
            att = method.explain(self, spec, [self.explain(m) for m in spec["needs"].get("members", [])])
        else:
            raise DataError(f"model {name!r}: no final-model SHAP for kind {spec['kind']!r}", file=str(self.dirs[name]))
        stored = self.scores(name)
        gap = np.abs(att.total - stored)
        if not np.all(gap <= REPRODUCE_TOL):
            worst = int(np.nanargmax(np.where(np.isnan(gap), np.inf, gap).max(axis=1)))
            raise DataError(f"model {name!r}: its explanation does not reproduce its stored score (row {self.ids[worst]}: "
                            f"{att.total[worst].round(6).tolist()} against {stored[worst].round(6).tolist()}); "
                            "were its files changed after the run?", file=str(self.dirs[name]))
        self.gaps[name] = float(gap.max()) if gap.size else 0.0
        log.debug("model %s: composed scores within %.2g of the stored ones", name, self.gaps[name])
        self._done[name] = exact(att, stored)
        return self._done[name]

    def _link(self, values: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One booster's raw-score explanation -> probability space (sigmoid per output, or softmax)."""
        att = Attribution([], *as_3d(values, base))
        att = att.vector(softmax, softmax_jacobian) if self.kind.exclusive else att.each(sigmoid)
        return att.values.reshape(values.shape), att.base.reshape(base.shape)

    def _fold_models(self, name: str, explainer: Explainer) -> Attribution:
        """A kind's fold x seed models (its explainer), explained and averaged like its scores."""
        d = self.dirs[name]
        models, groups = explainer(self.run, d)
        features = align_rows(self.run.features_for(d), self.ids, source=str(self.run.root / "features.parquet"))
        sv = explain_model(name, models, features, self.folds, self.run.task.classes, self.progress, link=self._link)
        for j, f in enumerate(sv.features):
            self.data.setdefault(f, sv.data[:, j])
            self.groups.setdefault(f, groups.get(f, "other"))
        self.categories = sv.categories | self.categories
        return Attribution(sv.features, *as_3d(sv.values, sv.base))

    def _score_term(self, name: str, term: ScoreTerm) -> Attribution:
        """One term (a CNN's image, a kind without an explainer): the model's score minus its mean OOF score (the base)."""
        p = self.scores(name)
        base = np.broadcast_to(np.nanmean(self.oof_all(name), axis=0), p.shape).copy()
        self.data.setdefault(term.label, p[:, 0] if self.kind.binary else np.full(len(p), np.nan))
        self.groups[term.label] = term.group
        return Attribution([term.label], (p - base)[:, None, :], base)

    def diagonal(self, w: np.ndarray) -> np.ndarray:
        """A (n, C, M, C) from weights (M,) or (n, M): each output the weighted sum of that output of the members."""
        w = np.broadcast_to(np.asarray(w, dtype=float), (len(self.ids), np.shape(w)[-1]))
        return w[:, None, :, None] * np.eye(self.n_out)[None, :, None, :]
