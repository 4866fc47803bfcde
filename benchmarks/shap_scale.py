"""SHAP cost per library: seconds per 1,000 explained rows on 401,059-row synthetic features
(ISIC 2024 training size), for the full table and for the report's default sample.

Run: flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/shap_scale.py [--rows 401059] [--explain 20000] [--smoke]
Models are trained on a subsample (training cost is not what this measures); SHAP time is
linear in rows, so the full-table time is measured on ``--explain`` rows and reported per 1,000.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import polars as pl

from dermstack.boosting.base import FeatureMatrix, category_codes
from dermstack.boosting.explain import make_explainer
from dermstack.reports.shap_ import sample_rows
from dermstack.testing import SMOKE_HELP


def synthetic(n: int, n_features: int, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = {f"f{j}": rng.normal(size=n).astype(np.float32) for j in range(n_features - 2)}
    cols["sex"] = rng.choice(["male", "female"], n)
    cols["site"] = rng.choice(["head/neck", "upper extremity", "lower extremity", "posterior torso", "anterior torso"], n)
    logit = -8.0 + cols["f0"] + 0.5 * cols["f1"] * cols["f2"] + (cols["site"] == "head/neck")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)  # about 1 in 1,000 positive, as ISIC 2024
    return pl.DataFrame(cols), y


def train(kind: str, X: pd.DataFrame, y: np.ndarray):
    if kind == "lightgbm":
        import lightgbm as lgb

        return lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 63, "max_depth": 6, "num_threads": 2},
                         lgb.Dataset(X, y), 200), X
    if kind == "xgboost":
        import xgboost as xgb

        booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 2, "max_cat_to_onehot": 1},
                            xgb.DMatrix(X, y, enable_categorical=True), 200)
        return booster, None
    from catboost import CatBoostClassifier, Pool

    cats = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    model = CatBoostClassifier(iterations=200, depth=6, verbose=False, thread_count=2, allow_writing_files=False)
    return model.fit(Pool(category_codes(X), y, cat_features=cats)), None


def native(kind: str, X: pd.DataFrame):
    if kind == "xgboost":
        import xgboost as xgb

        return xgb.DMatrix(X, enable_categorical=True)
    if kind == "catboost":
        from catboost import Pool

        return Pool(category_codes(X), cat_features=[c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)])
    return X


def seconds_per_1000(kind: str, model, X: pd.DataFrame) -> float:
    explainer = make_explainer(model)
    t0 = time.perf_counter()
    explainer.shap_values(native(kind, X))
    return (time.perf_counter() - t0) / len(X) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=401_059)
    ap.add_argument("--features", type=int, default=60)
    ap.add_argument("--explain", type=int, default=20_000, help="rows timed for the full-table figure")
    ap.add_argument("--sample", type=int, default=2000, help="the report's default SHAP sample")
    ap.add_argument("--train-rows", type=int, default=50_000)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.features, args.explain, args.sample, args.train_rows = 3000, 10, 200, 100, 1000
    df, y = synthetic(args.rows, args.features)
    matrix = FeatureMatrix.fit(df, df.columns, ["sex", "site"])
    X = matrix.to_pandas(df)
    rng = np.random.default_rng(1)
    train_idx = np.union1d(np.flatnonzero(y), rng.choice(args.rows, args.train_rows, replace=False))
    sample = sample_rows(y, rng.integers(0, 5, args.rows), args.sample, seed=0)
    timed = rng.choice(args.rows, args.explain, replace=False)
    print(f"{args.rows:,} rows x {args.features} features, {y.sum()} positives; default sample {len(sample):,} rows "
          f"(all positives + fold-stratified negatives)")
    print(f"{'library':10s} {'s/1k rows (table)':>18s} {'full table (s)':>15s} {'s/1k rows (sample)':>19s} "
          f"{'sample (s)':>11s} {'table/sample':>13s}")
    for kind in ("lightgbm", "xgboost", "catboost"):
        model, _ = train(kind, X.iloc[train_idx], y[train_idx])
        per_k = seconds_per_1000(kind, model, X.iloc[timed])
        per_k_sample = seconds_per_1000(kind, model, X.iloc[sample])
        full, samp = per_k * args.rows / 1000, per_k_sample * len(sample) / 1000
        print(f"{kind:10s} {per_k:18.3f} {full:15.1f} {per_k_sample:19.3f} {samp:11.2f} {full / samp:13.0f}", flush=True)


if __name__ == "__main__":
    main()
