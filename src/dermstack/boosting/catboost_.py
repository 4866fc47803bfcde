"""CatBoost adapter: native ``.cbm`` model files, categorical columns as ``cat_features`` (integer codes)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, Pool

from dermstack.boosting.base import BoosterAdapter, category_codes

log = logging.getLogger(__name__)


class CatBoostAdapter(BoosterAdapter):
    kind = "catboost"
    ext = ".cbm"
    native: CatBoostClassifier | None

    def train_params(self) -> dict:
        p = {**self.params, "iterations": self.n_estimators, "random_seed": self.seed, "thread_count": self.threads,
             "od_type": "Iter", "od_wait": self.early_stopping_rounds, "use_best_model": True, "verbose": False,
             "allow_writing_files": False}
        if self.device == "gpu":
            p.setdefault("task_type", "GPU")
            log.info("catboost: training on GPU (results are not bit-reproducible across runs on GPU)")
        if self.problem.binary:
            p.setdefault("loss_function", "Logloss")
            p.setdefault("eval_metric", {"auc": "AUC", "logloss": "Logloss"}[self.stopping_metric])
        else:
            p.setdefault("loss_function", "MultiClass")
            p.setdefault("eval_metric", "MultiClass")
            p["classes_count"] = self.n_classes
        return p

    def pool(self, X: pd.DataFrame, y=None, weight=None) -> Pool:
        cats = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
        return Pool(category_codes(X), label=y, weight=weight, cat_features=cats)

    def fit(self, X, y, X_valid, y_valid, weight=None, valid_weight=None):
        self.feature_names = list(X.columns)
        self.native = CatBoostClassifier(**self.train_params())
        self.native.fit(self.pool(X, y, weight), eval_set=self.pool(X_valid, y_valid, valid_weight),
                        early_stopping_rounds=self.early_stopping_rounds)
        self.best_iteration = int(self.native.tree_count_)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        self._check_fitted()
        p = self.native.predict_proba(self.pool(X[self.feature_names]), thread_count=self.threads)
        return np.asarray(p[:, 1] if self.problem.binary else p, dtype=np.float64)


    @classmethod
    def load(cls, stem, problem, n_classes, categorical=None):
        obj = cls(problem, n_classes, {}, categorical=categorical)
        obj.native = CatBoostClassifier()
        obj.native.load_model(str(stem.with_name(stem.name + cls.ext)), format="cbm")
        obj.feature_names = list(obj.native.feature_names_)
        obj.best_iteration = int(obj.native.tree_count_)
        return obj

    def explain_input(self, X: pd.DataFrame) -> Pool:
        return self.pool(X[self.feature_names])

    def raw_margin(self, data) -> np.ndarray:
        return np.asarray(self.native.predict(data, prediction_type="RawFormulaVal", thread_count=self.threads), dtype=np.float64)

    def importance(self) -> dict[str, float]:
        """CatBoost's PredictionValuesChange (its gain-like default), per feature."""
        self._check_fitted()
        values = self.native.get_feature_importance(type="PredictionValuesChange")
        return {f: float(v) for f, v in zip(self.native.feature_names_, values)}
