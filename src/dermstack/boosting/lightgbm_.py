"""LightGBM adapter: native text model files (``.txt``), pandas categories as categorical features."""
from __future__ import annotations

import logging

import lightgbm as lgb
import numpy as np
import pandas as pd

from dermstack.boosting.base import BoosterAdapter

log = logging.getLogger(__name__)


class LightGBMAdapter(BoosterAdapter):
    kind = "lightgbm"
    ext = ".txt"
    native: lgb.Booster | None

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
