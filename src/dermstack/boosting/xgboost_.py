"""XGBoost adapter: native JSON model files, pandas categories through ``enable_categorical``."""
from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from dermstack.boosting.base import BoosterAdapter

#: XGBoost boosters whose saved configuration lists the parameters of each booster, tree method and objective
_XGB_PROBES = (
    {"objective": "binary:logistic"}, {"objective": "multi:softprob", "num_class": 2}, {"booster": "dart"},
    {"booster": "gblinear"}, {"booster": "gblinear", "updater": "coord_descent"}, {"tree_method": "approx"},
    {"tree_method": "exact"}, {"objective": "reg:tweedie"}, {"objective": "reg:pseudohubererror"},
    {"objective": "reg:quantileerror", "quantile_alpha": 0.5}, {"objective": "rank:ndcg"}, {"objective": "survival:aft"},
)


@functools.cache
def _xgboost_params() -> frozenset[str]:
    """XGBoost's parameter names, from XGBoost itself: every leaf key of ``Booster.save_config()`` (which
    lists each parameter, aliases such as learning_rate/reg_lambda included) of one-round boosters of
    each kind and objective, plus those the sklearn wrapper passes to ``xgboost.train``."""
    names = set(xgb.XGBModel().get_xgb_params())
    X, y = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0.0, 1.0])
    for probe in _XGB_PROBES:
        data = xgb.DMatrix(X, label=y)
        if probe.get("objective") == "rank:ndcg":
            data.set_group([2])
        if probe.get("objective") == "survival:aft":
            data.set_float_info("label_lower_bound", y + 1)
            data.set_float_info("label_upper_bound", y + 2)
        _leaf_keys(json.loads(xgb.train({**probe, "nthread": 1}, data, 1).save_config()), names)
    return frozenset(names - {"name"})  # "name" is the objective's / updater's own name, not a parameter


def _leaf_keys(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _leaf_keys(v, out) if isinstance(v, (dict, list)) else out.add(k)
    elif isinstance(node, list):
        for v in node:
            _leaf_keys(v, out)



class XGBoostAdapter(BoosterAdapter):
    kind = "xgboost"
    description = "XGBoost gradient-boosted trees on the feature table (size-aware defaults); params: these and every XGBoost parameter"
    ext = ".json"
    binary_defaults = {
        "learning_rate": 0.085, "lambda": 8.88, "alpha": 0.68, "max_depth": 6, "subsample": 0.60,
        "colsample_bytree": 0.84, "colsample_bylevel": 0.55, "colsample_bynode": 0.99, "scale_pos_weight": 3.3,
    }
    small_table_defaults = {
        "learning_rate": 0.03, "max_depth": 4, "min_child_weight": 2, "lambda": 1.0, "subsample": 0.8,
        "colsample_bytree": 0.7,
    }
    aliases = (frozenset({"learning_rate", "eta"}), frozenset({"lambda", "reg_lambda"}), frozenset({"alpha", "reg_alpha"}),
               frozenset({"min_split_loss", "gamma"}), frozenset({"seed", "random_state"}))
    split_limits = {"min_child_weight": "hessian", "min_split_loss": "gain"}
    dask_adapter = "dermstack.boosting.dask_:DaskXGBoostAdapter"
    native: xgb.Booster | None

    @classmethod
    def library_params(cls) -> frozenset[str]:
        return _xgboost_params()

    @classmethod
    def leaf_params(cls, leaf, rows, minority, defaults):
        """``min_child_weight``: the leaf size in hessian units (rows x p(1 - p))."""
        p = minority / max(rows, 1)
        return {"min_child_weight": round(min(float(defaults.get("min_child_weight", 1.0)), leaf * p * (1 - p)), 4)}

    def train_params(self) -> dict:
        p = {"tree_method": "hist", "max_cat_to_onehot": 1, **self.params, "seed": self.seed, "nthread": self.threads,
             "device": "cuda" if self.device == "gpu" else "cpu", "verbosity": 0}
        if self.problem.binary:
            p.setdefault("objective", "binary:logistic")
            p.setdefault("eval_metric", self.stopping_metric)
        else:
            p.setdefault("objective", "multi:softprob")
            p.setdefault("eval_metric", "mlogloss")
            p["num_class"] = self.n_classes
        return p

    def matrix(self, X: pd.DataFrame, y=None, weight=None) -> xgb.DMatrix:
        return xgb.DMatrix(X, label=y, weight=weight, enable_categorical=True, nthread=self.threads)

    def fit(self, X, y, X_valid, y_valid, weight=None, valid_weight=None):
        self.feature_names = list(X.columns)
        booster = xgb.train(
            self.train_params(), self.matrix(X, y, weight), num_boost_round=self.n_estimators,
            evals=[(self.matrix(X_valid, y_valid, valid_weight), "valid")], early_stopping_rounds=self.early_stopping_rounds,
            verbose_eval=False,
        )
        self.set_booster(booster)
        return self

    def set_booster(self, booster: xgb.Booster) -> None:
        """Keep the trees up to the best iteration: in memory and on disk the same model."""
        self.best_iteration = int(booster.best_iteration) + 1
        self.native = booster[: self.best_iteration]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.native.predict(self.matrix(X[self.feature_names])), dtype=np.float64)


    @classmethod
    def load(cls, stem, problem, n_classes, categorical=None):
        obj = cls(problem, n_classes, {}, categorical=categorical)
        obj.native = xgb.Booster(model_file=stem.with_name(stem.name + cls.ext))
        obj.native.set_param({"nthread": obj.threads})
        obj.feature_names = list(obj.native.feature_names)
        obj.best_iteration = obj.native.num_boosted_rounds()
        return obj

    def explain_input(self, X: pd.DataFrame) -> xgb.DMatrix:
        return self.matrix(X[self.feature_names])

    def raw_margin(self, data) -> np.ndarray:
        return np.asarray(self.native.predict(data, output_margin=True), dtype=np.float64)

    def importance(self) -> dict[str, float]:
        self._check_fitted()
        gain = self.native.get_score(importance_type="total_gain")
        return {f: float(gain.get(f, 0.0)) for f in self.feature_names}
