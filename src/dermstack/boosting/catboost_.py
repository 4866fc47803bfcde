"""CatBoost adapter: native ``.cbm`` model files, categorical columns as ``cat_features`` (integer codes)."""
from __future__ import annotations

import functools
import inspect
import logging

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, Pool

from dermstack.boosting.base import BoosterAdapter, category_codes

log = logging.getLogger(__name__)

#: From this many rows in a fit CatBoost encodes each categorical column alone (``max_ctr_complexity
#: = 1``): the CTRs of column combinations are computed over every row and permutation, 35% of its
#: time at ISIC 2024 scale (401,059 synthetic lesions, 97k rows a fit: 192 -> 125 s for 5 folds, fold
#: pAUC 0.091 -> 0.095), while on a few thousand rows they cost little (HAM10000: no faster).
CATBOOST_SINGLE_CTR_ROWS = 50_000


@functools.cache
def _catboost_params() -> frozenset[str]:
    """The keyword arguments of ``CatBoostClassifier`` (every CatBoost parameter and alias)."""
    return frozenset(inspect.signature(CatBoostClassifier.__init__).parameters) - {"self"}



class CatBoostAdapter(BoosterAdapter):
    kind = "catboost"
    description = "CatBoost gradient-boosted trees on the feature table (size-aware defaults); params: these and every CatBoost parameter"
    ext = ".cbm"
    binary_defaults = {
        "learning_rate": 0.069, "depth": 7, "l2_leaf_reg": 6.2, "subsample": 0.62, "min_data_in_leaf": 24,
        "bootstrap_type": "Bernoulli", "scale_pos_weight": 2.6,
    }
    small_table_defaults = {"learning_rate": 0.05, "depth": 5, "l2_leaf_reg": 3.0, "bootstrap_type": "Bernoulli", "subsample": 0.8}
    leaf_key = "min_data_in_leaf"
    aliases = (frozenset({"learning_rate", "eta"}), frozenset({"depth", "max_depth"}), frozenset({"l2_leaf_reg", "reg_lambda"}),
               frozenset({"iterations", "n_estimators", "num_boost_round", "num_trees"}), frozenset({"random_seed", "random_state"}),
               frozenset({"min_data_in_leaf", "min_child_samples"}), frozenset({"rsm", "colsample_bylevel"}))
    split_limits = {"min_data_in_leaf": "rows"}
    native: CatBoostClassifier | None

    @classmethod
    def library_params(cls) -> frozenset[str]:
        return _catboost_params()

    @classmethod
    def round_params(cls) -> frozenset[str]:
        return frozenset({"iterations", "num_boost_round", "num_trees", "od_wait"})

    @classmethod
    def leaf_params(cls, leaf, rows, minority, defaults):
        """``min_data_in_leaf``, and the symmetric ``depth`` limited to the levels whose leaves can still hold that many rows."""
        return {"min_data_in_leaf": leaf, "depth": int(min(defaults["depth"], max(2, np.floor(np.log2(max(rows, 2) / leaf)))))}

    @classmethod
    def row_params(cls, rows):
        """From :data:`CATBOOST_SINGLE_CTR_ROWS` rows no CTRs of categorical-column combinations."""
        return {"max_ctr_complexity": 1} if rows >= CATBOOST_SINGLE_CTR_ROWS else {}

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
