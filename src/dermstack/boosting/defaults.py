"""Default parameters per library and task.

Binary defaults are the tuned values of the public ISIC 2024 tabular pipeline that the top
solutions started from (shallow trees, strong column sub-sampling, bagging, a positive weight of
about 3 on top of per-fold negative under-sampling). Multi-class and multi-label defaults suit
small metadata tables (HAM10000, MILK10k): smaller leaves, more regularisation and class weights
so that argmax / the 0.5 threshold favour macro F1.

Keys of :data:`dermstack.boosting.base.GENERIC_PARAMS` are handled by dermstack
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

from dermstack.boosting.params import BOOSTER_KINDS
from dermstack.errors import ConfigError, DataError
from dermstack.taskkind import TaskKind

KINDS = BOOSTER_KINDS
log = logging.getLogger(__name__)

_BINARY: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "learning_rate": 0.032, "max_depth": 4, "num_leaves": 103, "lambda_l1": 0.088, "lambda_l2": 0.004,
        "colsample_bytree": 0.83, "colsample_bynode": 0.40, "bagging_fraction": 0.77, "bagging_freq": 4,
        "min_data_in_leaf": 85, "scale_pos_weight": 2.8,
    },
    "xgboost": {
        "learning_rate": 0.085, "lambda": 8.88, "alpha": 0.68, "max_depth": 6, "subsample": 0.60,
        "colsample_bytree": 0.84, "colsample_bylevel": 0.55, "colsample_bynode": 0.99, "scale_pos_weight": 3.3,
    },
    "catboost": {
        "learning_rate": 0.069, "depth": 7, "l2_leaf_reg": 6.2, "subsample": 0.62, "min_data_in_leaf": 24,
        "bootstrap_type": "Bernoulli", "scale_pos_weight": 2.6,
    },
}
_SMALL_TABLE: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "learning_rate": 0.03, "num_leaves": 15, "max_depth": 5, "min_data_in_leaf": 20, "lambda_l2": 1.0,
        "feature_fraction": 0.7, "bagging_fraction": 0.8, "bagging_freq": 1,
    },
    "xgboost": {
        "learning_rate": 0.03, "max_depth": 4, "min_child_weight": 2, "lambda": 1.0, "subsample": 0.8,
        "colsample_bytree": 0.7,
    },
    "catboost": {"learning_rate": 0.05, "depth": 5, "l2_leaf_reg": 3.0, "bootstrap_type": "Bernoulli", "subsample": 0.8},
}
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


def default_params(kind: str, task: str) -> dict[str, Any]:
    """Defaults for library ``kind`` on ``task``; user params are laid over these."""
    if kind not in KINDS:
        raise ConfigError(f"unknown boosting library {kind!r}; known: {list(KINDS)}")
    if task not in TaskKind.KINDS:
        raise ConfigError(f"unknown task {task!r}")
    table = _BINARY if TaskKind(task).binary else _SMALL_TABLE
    return {**_ROUNDS[task], **table[kind]}


#: Synonyms the libraries accept for the same parameter (LightGBM's come from LightGBM itself).
_ALIASES: dict[str, list[set[str]]] = {
    "xgboost": [{"learning_rate", "eta"}, {"lambda", "reg_lambda"}, {"alpha", "reg_alpha"},
                {"min_split_loss", "gamma"}, {"seed", "random_state"}],
    "catboost": [{"learning_rate", "eta"}, {"depth", "max_depth"}, {"l2_leaf_reg", "reg_lambda"},
                 {"iterations", "n_estimators", "num_boost_round", "num_trees"}, {"random_seed", "random_state"},
                 {"min_data_in_leaf", "min_child_samples"}, {"rsm", "colsample_bylevel"}],
}


def _synonyms(kind: str, name: str) -> set[str]:
    if kind == "lightgbm":
        from lightgbm.basic import _ConfigAliases

        return set(_ConfigAliases.get(name)) | {name}
    return next((group for group in _ALIASES.get(kind, []) if name in group), {name})


#: A leaf holds at least this fraction of a fold's training rows ...
LEAF_ROW_FRACTION = 1 / 20
#: ... and at most this fraction of its rarest class, so that a leaf can isolate part of it.
LEAF_MINORITY_FRACTION = 1 / 2
#: Below this many rows of the rarest class the validation AUC moves in coarse steps: early stopping
#: watches logloss instead (the under-sampling that makes logloss unusable never applies at this size).
AUC_STOPPING_MIN_MINORITY = 50
#: the leaf-size parameter of each library (its min_data_in_leaf) and the smallest value dermstack sets
_LEAF_KEY = {"lightgbm": "min_data_in_leaf", "catboost": "min_data_in_leaf"}
MIN_LEAF = 2
#: From this many rows in a fit CatBoost encodes each categorical column alone (``max_ctr_complexity
#: = 1``): the CTRs of column combinations are computed over every row and permutation, 35% of its
#: time at ISIC 2024 scale (401,059 synthetic lesions, 97k rows a fit: 192 -> 125 s for 5 folds, fold
#: pAUC 0.091 -> 0.095), while on a few thousand rows they cost little (HAM10000: no faster).
CATBOOST_SINGLE_CTR_ROWS = 50_000


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


def size_overrides(kind: str, task: str, rows: int, minority: int) -> dict[str, Any]:
    """Parameters that scale the defaults down to a fold with ``rows`` training rows, ``minority`` of them
    in the rarest class (:func:`fold_size`); empty when the tuned defaults fit (ISIC 2024 scale).

    The defaults' leaf sizes were tuned at about 100k resampled rows; at PH2's 20 training rows
    ``min_data_in_leaf = 85`` forbids every split and the model is a constant. The minimum leaf size is
    ``rows / 20`` and (binary) at most half the rarer class, never below 2 nor above the default (LightGBM's
    ``min_data_per_group`` for categorical splits follows it); XGBoost's ``min_child_weight`` is the
    same leaf size in hessian units (rows x p(1 - p)), CatBoost's symmetric ``depth`` is limited to
    the levels whose leaves can still hold that many rows. With few rows of the rarest class, early
    stopping watches logloss rather than the coarse validation AUC and waits longer. From
    :data:`CATBOOST_SINGLE_CTR_ROWS` rows CatBoost builds no CTRs of categorical-column combinations."""
    defaults = default_params(kind, task)
    leaf_default = defaults.get(_LEAF_KEY.get(kind, ""), 20)
    # the rarest class bounds the leaf only for a binary target: a multi-class/label booster shares one
    # leaf size across classes, and sizing it for the rarest one overfits the others (MILK10k: -0.013
    # macro ROC-AUC); any leaf of rows / 20 still lets every class split
    cap = minority * LEAF_MINORITY_FRACTION if TaskKind(task).binary else rows
    leaf = int(min(max(MIN_LEAF, min(rows * LEAF_ROW_FRACTION, cap)), leaf_default))
    out: dict[str, Any] = {}
    if leaf < leaf_default:
        if kind == "lightgbm":
            out["min_data_in_leaf"] = out["min_data_per_group"] = leaf  # LightGBM's min_data_per_group is 100
        elif kind == "xgboost":
            p = minority / max(rows, 1)
            out["min_child_weight"] = round(min(float(defaults.get("min_child_weight", 1.0)), leaf * p * (1 - p)), 4)
        elif kind == "catboost":
            out["min_data_in_leaf"] = leaf
            out["depth"] = int(min(defaults["depth"], max(2, np.floor(np.log2(max(rows, 2) / leaf)))))
    if kind == "catboost" and rows >= CATBOOST_SINGLE_CTR_ROWS:
        out["max_ctr_complexity"] = 1
    if TaskKind(task).binary and minority < AUC_STOPPING_MIN_MINORITY:
        out["early_stopping_metric"] = "logloss"
        out["early_stopping_rounds"] = max(defaults["early_stopping_rounds"], 100)
    return {k: v for k, v in out.items() if defaults.get(k) != v}


def resolve_params(kind: str, task: str, user: dict[str, Any] | None, rows: int | None = None,
                   minority: int | None = None) -> dict[str, Any]:
    """Defaults for the library and task, scaled to a fold of ``rows`` training rows with ``minority``
    rows of the rarest class when given (:func:`size_overrides`), overridden by the user's params, also
    when the user names a parameter by another of the library's aliases (``min_child_samples``
    replaces ``min_data_in_leaf``). User-set params always win."""
    user = dict(user or {})
    base = default_params(kind, task)
    if rows is not None:
        base.update(size_overrides(kind, task, rows, rows if minority is None else minority))
    merged = {k: v for k, v in base.items() if not (_synonyms(kind, k) & set(user))}
    return {**merged, **user}


#: Parameters that stop a tree from splitting, per library: name -> how much of a child it constrains
#: ("rows": a count of training rows, "hessian": a sum of hessians, "gain": a loss reduction).
_SPLIT_LIMITS: dict[str, dict[str, str]] = {
    "lightgbm": {"min_data_in_leaf": "rows", "min_sum_hessian_in_leaf": "hessian", "min_gain_to_split": "gain",
                 "min_data_per_group": "rows"},
    "xgboost": {"min_child_weight": "hessian", "min_split_loss": "gain"},
    "catboost": {"min_data_in_leaf": "rows"},
}


def _value(kind: str, params: dict[str, Any], name: str):
    """``params``' value of ``name`` under any of the library's aliases (None when unset)."""
    return next((params[k] for k in _synonyms(kind, name) if k in params), None)


def blocking_param(kind: str, params: dict[str, Any], rows: int, minority: int, best_iteration=None) -> str:
    """What most plausibly prevented every split of ``rows`` training rows: a parameter and its value, else
    early stopping that kept only the first (split-free) rounds, else the features."""
    p = minority / max(rows, 1)
    for name, unit in _SPLIT_LIMITS.get(kind, {}).items():
        v = _value(kind, params, name)
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


def check_scores_vary(kind: str, model: str, fold: int, valid_scores: np.ndarray, train_scores: Callable[[], np.ndarray],
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
