"""XGBoost adapter: native JSON model files, pandas categories through ``enable_categorical``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from dermstack.boosting.base import BoosterAdapter


class XGBoostAdapter(BoosterAdapter):
    kind = "xgboost"
    ext = ".json"
    native: xgb.Booster | None

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
