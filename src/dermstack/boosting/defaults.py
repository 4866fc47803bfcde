"""Default parameters per task and library, scaled to the size of each fit.

Each library's own defaults are on its adapter class (``binary_defaults``, ``small_table_defaults``);
the rounds and early stopping per task are here. Binary defaults are the tuned values of the public ISIC 2024 tabular pipeline that the top
solutions started from (shallow trees, strong column sub-sampling, bagging, a positive weight of
about 3 on top of per-fold negative under-sampling). Multi-class and multi-label defaults suit
small metadata tables (HAM10000, MILK10k): smaller leaves, more regularisation and class weights
so that argmax / the 0.5 threshold favour macro F1.

Keys of :data:`dermstack.boosting.params.GENERIC_PARAMS` are handled by dermstack
(``n_estimators``: maximum rounds; ``early_stopping_rounds``; ``early_stopping_metric``: auc | logloss;
``class_weight``: none | balanced |
sqrt | number, i.e. the positive weight of each binary/multi-label class or the weight of each
multiclass class; ``device``: auto | cpu | gpu); every other key is the library's own parameter.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from dermstack.boosting.base import BoosterAdapter, adapter_class
from dermstack.errors import ConfigError, DataError
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)

#: a booster kind: its name, or its adapter class (resolved once where a fit may run on a Dask worker)
Kind = str | type[BoosterAdapter]

_ROUNDS = {
    # binary stops on AUC: with under-sampled training rows the validation logloss only gets worse (the
    # prior moved), so logloss stopping keeps 1 tree (measured at 401k rows). Multi-class/label: F1 at a
    # fixed threshold needs calibrated scores, so (class-weighted) logloss
    TaskKind.BINARY: {"n_estimators": 300, "early_stopping_rounds": 50, "early_stopping_metric": "auc"},
    TaskKind.MULTICLASS: {"n_estimators": 2000, "early_stopping_rounds": 100, "early_stopping_metric": "logloss", "class_weight": "sqrt"},
    TaskKind.MULTILABEL: {"n_estimators": 1000, "early_stopping_rounds": 100, "early_stopping_metric": "logloss",
                          "class_weight": "balanced"},
}
#: ISIC 2024 winners' resampling (binary only): see :mod:`dermstack.boosting.sampling`.
DEFAULT_SAMPLING = {"negative_ratio": 0.01, "positive_oversample": 0.003}


def default_params(kind: Kind, task: str) -> dict[str, Any]:
    """Defaults for library ``kind`` on ``task``; user params are laid over these."""
    adapter = adapter_class(kind)
    if task not in TaskKind.KINDS:
        raise ConfigError(f"unknown task {task!r}")
    return {**_ROUNDS[task], **(adapter.binary_defaults if TaskKind(task).binary else adapter.small_table_defaults)}


#: A leaf holds at least this fraction of a fold's training rows ...
LEAF_ROW_FRACTION = 1 / 20
#: ... and at most this fraction of its rarest class, so that a leaf can isolate part of it.
LEAF_MINORITY_FRACTION = 1 / 2
#: Below this many rows of the rarest class the validation AUC moves in coarse steps: early stopping
#: watches logloss instead (the under-sampling that makes logloss unusable never applies at this size).
AUC_STOPPING_MIN_MINORITY = 50
#: the smallest leaf size dermstack sets
MIN_LEAF = 2


def fold_size(task: str, y: np.ndarray) -> tuple[int, int]:
    """(rows, rows of the rarest class) of a fold's training labels: binary the rarer of positives and
    negatives, multiclass the smallest class present, multilabel the fewest positives of a class that has one."""
    y, task = np.asarray(y), TaskKind(task)
    if task.exclusive:
        counts = np.bincount(y.astype(np.int64))
    elif task.multilabel:
        counts = y.sum(axis=0)
    else:
        counts = np.array([(y == 1).sum(), (y == 0).sum()])
    counts = counts[counts > 0]
    return len(y), int(counts.min()) if len(counts) else 0


def size_overrides(kind: Kind, task: str, rows: int, minority: int) -> dict[str, Any]:
    """Parameters that scale the defaults down to a fold with ``rows`` training rows, ``minority`` of them
    in the rarest class (:func:`fold_size`); empty when the tuned defaults fit (ISIC 2024 scale).

    The defaults' leaf sizes were tuned at about 100k resampled rows; at PH2's 20 training rows
    ``min_data_in_leaf = 85`` forbids every split and the model is a constant. The minimum leaf size is
    ``rows / 20`` and (binary) at most half the rarer class, never below 2 nor above the default (LightGBM's
    ``min_data_per_group`` for categorical splits follows it); XGBoost's ``min_child_weight`` is the
    same leaf size in hessian units (rows x p(1 - p)), CatBoost's symmetric ``depth`` is limited to
    the levels whose leaves can still hold that many rows (each adapter's ``leaf_params``). With few rows
    of the rarest class, early stopping watches logloss rather than the coarse validation AUC and waits
    longer. From ``CATBOOST_SINGLE_CTR_ROWS`` rows CatBoost builds no CTRs of categorical-column
    combinations (the adapter's ``row_params``)."""
    adapter = adapter_class(kind)
    defaults = default_params(adapter, task)
    leaf_default = defaults.get(adapter.leaf_key or "", 20)
    # the rarest class bounds the leaf only for a binary target: a multi-class/label booster shares one
    # leaf size across classes, and sizing it for the rarest one overfits the others (MILK10k: -0.013
    # macro ROC-AUC); any leaf of rows / 20 still lets every class split
    cap = minority * LEAF_MINORITY_FRACTION if TaskKind(task).binary else rows
    leaf = int(min(max(MIN_LEAF, min(rows * LEAF_ROW_FRACTION, cap)), leaf_default))
    out: dict[str, Any] = {}
    if leaf < leaf_default:
        out.update(adapter.leaf_params(leaf, rows, minority, defaults))
    out.update(adapter.row_params(rows))
    if TaskKind(task).binary and minority < AUC_STOPPING_MIN_MINORITY:
        out["early_stopping_metric"] = "logloss"
        out["early_stopping_rounds"] = max(defaults["early_stopping_rounds"], 100)
    return {k: v for k, v in out.items() if defaults.get(k) != v}


def resolve_params(kind: Kind, task: str, user: dict[str, Any] | None, rows: int | None = None,
                   minority: int | None = None) -> dict[str, Any]:
    """Defaults for the library and task, scaled to a fold of ``rows`` training rows with ``minority``
    rows of the rarest class when given (:func:`size_overrides`), overridden by the user's params, also
    when the user names a parameter by another of the library's aliases (``min_child_samples``
    replaces ``min_data_in_leaf``). User-set params always win."""
    user, adapter = dict(user or {}), adapter_class(kind)
    base = default_params(adapter, task)
    if rows is not None:
        base.update(size_overrides(adapter, task, rows, rows if minority is None else minority))
    merged = {k: v for k, v in base.items() if not (adapter.synonyms(k) & set(user))}
    return {**merged, **user}


def _value(adapter: type[BoosterAdapter], params: dict[str, Any], name: str):
    """``params``' value of ``name`` under any of the library's aliases (None when unset)."""
    return next((params[k] for k in adapter.synonyms(name) if k in params), None)


def blocking_param(kind: Kind, params: dict[str, Any], rows: int, minority: int, best_iteration=None) -> str:
    """What most plausibly prevented every split of ``rows`` training rows: a parameter and its value (the
    adapter's ``split_limits``), else early stopping that kept only the first (split-free) rounds, else the features."""
    p, adapter = minority / max(rows, 1), adapter_class(kind)
    for name, unit in adapter.split_limits.items():
        v = _value(adapter, params, name)
        if v is None:
            continue
        if unit == "rows" and 2 * float(v) > rows:
            return f"{name}={v} with {rows} training rows (a split needs 2 x {v})"
        if unit == "hessian" and 2 * float(v) > rows * p * (1 - p):
            return f"{name}={v} with {rows} training rows (hessian sum about {rows * p * (1 - p):.3g})"
        if unit == "gain" and float(v) > 0:
            return f"{name}={v}"
    if best_iteration is not None:
        return (f"no size parameter; early stopping kept {best_iteration} round(s) because the validation "
                f"{params.get('early_stopping_metric', 'metric')} never improved on them: the features carry no "
                "signal this booster could use")
    return "no size parameter: no feature column separates the training rows (empty or constant features?)"


def check_scores_vary(kind: Kind, model: str, fold: int, valid_scores: np.ndarray, train_scores: Callable[[], np.ndarray],
                      params: dict[str, Any], rows: int, minority: int, per_output: bool = False,
                      skip: Iterable[int] = (), best_iteration: int | list | None = None) -> None:
    """Raise a DataError when a fitted booster gives every row the same score: it never split, and its
    ROC-AUC of 0.5 would otherwise pass for a result. ``valid_scores``: (n,) or (n, C) on the fold's
    validation rows; ``train_scores()``: the same on its training rows, computed only when the
    validation scores are constant. ``per_output``: the columns are separate boosters (multi-label),
    so any constant one is an error, except the ``skip`` columns (constant by design); otherwise only
    all columns constant is. ``best_iteration``: the rounds early stopping kept, for the message."""
    def constant(s: np.ndarray) -> set[int]:
        s = np.asarray(s).reshape(len(s), -1)
        return {j for j in range(s.shape[1]) if np.ptp(s[:, j]) == 0} - set(skip)

    n_out = np.asarray(valid_scores).reshape(len(valid_scores), -1).shape[1]
    flat = constant(valid_scores)
    if not flat or (not per_output and len(flat) < n_out):
        return
    flat &= constant(train_scores())
    if not flat or (not per_output and len(flat) < n_out):
        return
    which = f" (output column(s) {sorted(flat)})" if n_out > 1 else ""
    reason = blocking_param(kind, params, rows, minority, best_iteration)
    message = f"{model}, fold {fold}: the fitted model gives every row the same score{which}, i.e. no tree split; prevented by {reason}"
    if reason.startswith("no size parameter"):
        # nothing to set: the data gave this booster no signal on this fold. Its constant scores stay
        # visible (ROC-AUC 0.5 on the fold, in metrics.json) and the ensemble does not choose it.
        log.warning(message)
        return
    raise DataError(message + ". Set a smaller value in [[models]] params or add informative features")
