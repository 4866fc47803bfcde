"""LightGBM adapter: native text model files (``.txt``), pandas categories as categorical features."""
from __future__ import annotations

import functools
import logging

import lightgbm as lgb
import numpy as np
import pandas as pd
from lightgbm.basic import _ConfigAliases

from dermstack.boosting.base import BoosterAdapter

log = logging.getLogger(__name__)


@functools.cache
def _lightgbm_params() -> frozenset[str]:
    """Every LightGBM parameter and alias, from LightGBM itself (LGBM_DumpParamAliases)."""
    aliases = _ConfigAliases._get_all_param_aliases()
    return frozenset(aliases) | {a for names in aliases.values() for a in names}


class LightGBMAdapter(BoosterAdapter):
    kind = "lightgbm"
    description = "LightGBM gradient-boosted trees on the feature table (size-aware defaults); params: these and every LightGBM parameter"
    ext = ".txt"
    binary_defaults = {
        "learning_rate": 0.032, "max_depth": 4, "num_leaves": 103, "lambda_l1": 0.088, "lambda_l2": 0.004,
        "colsample_bytree": 0.83, "colsample_bynode": 0.40, "bagging_fraction": 0.77, "bagging_freq": 4,
        "min_data_in_leaf": 85, "scale_pos_weight": 2.8,
    }
    small_table_defaults = {
        "learning_rate": 0.03, "num_leaves": 15, "max_depth": 5, "min_data_in_leaf": 20, "lambda_l2": 1.0,
        "feature_fraction": 0.7, "bagging_fraction": 0.8, "bagging_freq": 1,
    }
    leaf_key = "min_data_in_leaf"
    split_limits = {"min_data_in_leaf": "rows", "min_sum_hessian_in_leaf": "hessian", "min_gain_to_split": "gain",
                    "min_data_per_group": "rows"}
    dask_adapter = "dermstack.boosting.dask_:DaskLightGBMAdapter"
    native: lgb.Booster | None

    @classmethod
    def library_params(cls) -> frozenset[str]:
        return _lightgbm_params()

    @classmethod
    def round_params(cls) -> frozenset[str]:
        return frozenset(_ConfigAliases.get("num_iterations", "early_stopping_round"))

    @classmethod
    def synonyms(cls, name: str) -> set[str]:
        """LightGBM's own aliases of ``name``."""
        return set(_ConfigAliases.get(name)) | {name}

    @classmethod
    def leaf_params(cls, leaf, rows, minority, defaults):
        """``min_data_in_leaf``, and ``min_data_per_group`` (its categorical-split minimum, 100) with it."""
        return {"min_data_in_leaf": leaf, "min_data_per_group": leaf}

    def train_params(self) -> dict:
        """Library parameters: deterministic, seeded, all threads."""
        p = {"verbosity": -1, "deterministic": True, "force_row_wise": True, **self.params,
             "seed": self.seed, "num_threads": self.threads}
        if self.problem.binary:
            p.setdefault("objective", "binary")
            p.setdefault("metric", {"auc": "auc", "logloss": "binary_logloss"}[self.stopping_metric])
        else:
            p.setdefault("objective", "multiclass")
            p.setdefault("metric", "multi_logloss")
            p["num_class"] = self.n_classes
        if self.device == "gpu" and "device_type" not in self.params:
            log.info("lightgbm: GPU present but LightGBM wheels are CPU builds; set params.device_type to use a GPU build")
        return p

    def fit(self, X, y, X_valid, y_valid, weight=None, valid_weight=None):
        self.feature_names = list(X.columns)
        train = lgb.Dataset(X, label=y, weight=weight, free_raw_data=True)
        valid = lgb.Dataset(X_valid, label=y_valid, weight=valid_weight, reference=train)
        self.native = lgb.train(
            self.train_params(), train, num_boost_round=self.n_estimators, valid_sets=[valid], valid_names=["valid"],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False)],
        )
        self.best_iteration = int(self.native.best_iteration or self.native.current_iteration())
        # keep only the trees up to the best iteration: in memory and on disk the same model
        self.native = lgb.Booster(model_str=self.native.model_to_string(num_iteration=self.best_iteration))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.native.predict(X[self.feature_names], num_threads=self.threads), dtype=np.float64)


    @classmethod
    def load(cls, stem, problem, n_classes, categorical=None):
        obj = cls(problem, n_classes, {}, categorical=categorical)
        obj.native = lgb.Booster(model_file=stem.with_name(stem.name + cls.ext))
        obj.feature_names = obj.native.feature_name()
        obj.best_iteration = obj.native.current_iteration()
        return obj

    def raw_margin(self, data) -> np.ndarray:
        return np.asarray(self.native.predict(data, raw_score=True, num_threads=self.threads), dtype=np.float64)

    def importance(self) -> dict[str, float]:
        self._check_fitted()
        gain = self.native.feature_importance(importance_type="gain")
        return {f: float(g) for f, g in zip(self.native.feature_name(), gain)}
