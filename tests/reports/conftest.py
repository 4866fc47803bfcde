"""A small finished binary run directory for the report tests, built without the run orchestration:
LightGBM (2 seeds), XGBoost and CatBoost trained directly on a numpy-made table, saved in their
native formats with a ``model.json`` in the boosting stage's format, plus OOF scores and metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from dermstack.boosting.base import FeatureMatrix, category_codes
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable, TableMeta, finalize_frame
from dermstack.features.featureset import FeatureSet
from dermstack.predictions import ModelResult, Predictions
from dermstack.saved import FORMAT_VERSION, write_model

N_PATIENTS, PER_PATIENT, N_SPLITS = 90, 4, 3
SITES = ["head/neck", "upper extremity", "lower extremity", "posterior torso", "anterior torso"]
GROUPS = {"age_approx": "metadata", "sex": "metadata", "anatom_site_general": "metadata",
          "clin_size_long_diam_mm": "metadata", "color_contrast": "engineered", "size_ratio": "engineered",
          "patient_size_z": "patient", "emb_0": "embedding", "emb_1": "embedding", "emb_2": "embedding"}
CATEGORICAL = ["sex", "anatom_site_general"]
MODELS = {"lightgbm": [0, 1], "xgboost": [0], "catboost": [0]}


def make_table(root: Path, rng: np.random.Generator) -> pl.DataFrame:
    n = N_PATIENTS * PER_PATIENT
    age = rng.choice(np.arange(20, 90, 5), n).astype(float)
    age[rng.random(n) < 0.05] = np.nan
    site = rng.choice(SITES, n)
    size = rng.gamma(2.0, 2.5, n)
    colour = rng.normal(0, 1, n)
    logit = -2.2 + 0.05 * (np.nan_to_num(age, nan=50) - 50) + 1.3 * (site == "head/neck") + 0.25 * (size - 5) + 0.9 * colour
    target = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    (root / "img").mkdir()
    img_refs, mask_refs = [], []
    for i, image_id in enumerate(ids):
        pix = np.full((24, 24, 3), (150 + 60 * int(target[i]), 110, 90), dtype=np.uint8)
        mask = np.zeros((24, 24), dtype=np.uint8)
        mask[6:18, 6:18] = 255
        img_refs.append(str(root / "img" / f"{image_id}.png"))
        mask_refs.append(str(root / "img" / f"{image_id}_mask.png"))
        Image.fromarray(pix).save(img_refs[-1])
        Image.fromarray(mask).save(mask_refs[-1])
    return pl.DataFrame({
        "image_id": ids, "lesion_id": ids, "patient_id": [f"IP_{i // PER_PATIENT:04d}" for i in range(n)],
        "split": ["test" if i >= n - 8 else "train" for i in range(n)], "target": target,
        "label": np.where(target == 1, "melanoma", "nevus"), "image_ref": img_refs, "mask_ref": mask_refs,
        "image_type": rng.choice(["TBP tile: close-up", "dermoscopic"], n), "age_approx": age,
        "sex": rng.choice(["male", "female"], n), "anatom_site_general": site,
        "skin_tone": rng.choice([12, 34, 56], n), "clin_size_long_diam_mm": size, "color_contrast": colour,
    })


def make_features(df: pl.DataFrame, rng: np.random.Generator) -> FeatureSet:
    feats = df.select(
        "image_id", "split", "age_approx", "sex", "anatom_site_general", "clin_size_long_diam_mm", "color_contrast",
        (pl.col("clin_size_long_diam_mm") / pl.col("clin_size_long_diam_mm").mean()).alias("size_ratio"),
        (pl.col("clin_size_long_diam_mm") - pl.col("clin_size_long_diam_mm").mean().over("patient_id")).alias("patient_size_z"),
    ).with_columns([pl.Series(f"emb_{k}", rng.normal(0, 1, df.height)) for k in range(3)])
    return FeatureSet(feats, GROUPS, CATEGORICAL)


def train_fold(kind: str, X, y, seed: int, Xv, yv):
    """A small native booster of ``kind`` (categoricals as the boosting stage encodes them)."""
    if kind == "lightgbm":
        import lightgbm as lgb

        params = {"objective": "binary", "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 10, "seed": seed,
                  "bagging_fraction": 0.8, "bagging_freq": 1, "num_threads": 1}
        return lgb.train(params, lgb.Dataset(X, y), 40)
    if kind == "xgboost":
        import xgboost as xgb

        params = {"objective": "binary:logistic", "max_depth": 3, "seed": seed, "nthread": 1, "max_cat_to_onehot": 1}
        return xgb.train(params, xgb.DMatrix(X, y, enable_categorical=True), 40)
    from catboost import CatBoostClassifier, Pool

    cats = [c for c in X.columns if str(X[c].dtype) == "category"]
    model = CatBoostClassifier(iterations=40, depth=3, random_seed=seed, verbose=False, thread_count=1, allow_writing_files=False)
    return model.fit(Pool(category_codes(X), y, cat_features=cats))


def save_native(kind: str, model, stem: Path) -> str:
    ext = {"lightgbm": ".txt", "xgboost": ".json", "catboost": ".cbm"}[kind]
    path = stem.with_name(stem.name + ext)
    model.save_model(str(path))
    return path.name


def build_run(root: Path) -> Path:
    rng = np.random.default_rng(7)
    df = make_table(root, rng)
    table = LesionTable(finalize_frame(df), TableMeta("fixture", ["melanoma", "nevus"], list(GROUPS)[:5], CATEGORICAL))
    run = root / "run"
    table.write(run / "lesions.parquet")
    plan = FoldPlan.make(table, N_SPLITS, seed=1)
    plan.write(run / "folds.parquet")
    fs = make_features(table.df, rng)
    fs.write(run / "features.parquet")
    train = table.train
    feats = pl.DataFrame({"image_id": train["image_id"]}).join(fs.df, on="image_id", how="left", maintain_order="left")
    columns = fs.feature_columns
    matrix = FeatureMatrix.fit(feats, columns, CATEGORICAL)
    X, y = matrix.to_pandas(feats), train["target"].to_numpy()
    oof = []
    for kind, seeds in MODELS.items():
        mdir = run / "models" / kind
        mdir.mkdir(parents=True)
        entries = []
        for k, tr, va in plan.splits(train["image_id"]):
            for seed in seeds:
                model = train_fold(kind, X.iloc[tr], y[tr], seed, X.iloc[va], y[va])
                name = save_native(kind, model, mdir / f"fold{k}_seed{seed}")
                entries.append({"fold": k, "seed": seed, "stem": f"fold{k}_seed{seed}", "files": [name]})
                score = predict_proba(kind, model, X.iloc[va])
                oof.append(pl.DataFrame({"image_id": train["image_id"].gather(va), "model": kind, "seed": seed,
                                         "fold": k, "class": "target", "score": np.asarray(score, dtype=np.float64)}))
        spec = {"format_version": FORMAT_VERSION, "name": kind, "kind": kind, "task": "binary", "classes": ["target"],
                "target_name": "malignant", "needs": {}, "features": matrix.to_json() | {"groups": GROUPS},
                "seeds": seeds, "models": entries}
        own = Predictions(pl.concat([o for o in oof if o["model"][0] == kind]))
        write_model(mdir, spec, ModelResult(kind, own, Predictions.empty()))
    oof = pl.concat(oof).with_columns(pl.col("seed").cast(pl.Int64), pl.col("fold").cast(pl.Int64))
    ens = (oof.group_by("image_id", "model", "fold", "class").agg(pl.col("score").mean())
           .group_by("image_id", "fold", "class").agg(pl.col("score").mean())
           .with_columns(pl.lit("ensemble").alias("model"), pl.lit(None, dtype=pl.Int64).alias("seed")))
    spec = {"format_version": FORMAT_VERSION, "name": "ensemble", "kind": "mean", "task": "binary", "classes": ["target"],
            "target_name": "malignant", "needs": {"members": list(MODELS)}, "weights": [1.0] * len(MODELS)}
    write_model(run / "models" / "ensemble", spec, ModelResult("ensemble", Predictions(ens.select(oof.columns)), Predictions.empty()))
    (run / "metrics.json").write_text(json.dumps({"task": "binary", "target": "malignant", "classes": ["target"],
                                                  "oof_model": "ensemble", "primary_metric": "pauc_tpr80"}))
    return run


def predict_proba(kind: str, model, X) -> np.ndarray:
    if kind == "lightgbm":
        return model.predict(X)
    if kind == "xgboost":
        import xgboost as xgb

        return model.predict(xgb.DMatrix(X, enable_categorical=True))
    from catboost import Pool

    cats = [c for c in X.columns if str(X[c].dtype) == "category"]
    return model.predict_proba(Pool(category_codes(X), cat_features=cats))[:, 1]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("report_run"))


@pytest.fixture(scope="session")
def report_dir(run_dir, tmp_path_factory) -> Path:
    """The report of the fixture run, with a SHAP sample smaller than the training rows."""
    from dermstack.reports.build import ReportSettings, build_report

    out = tmp_path_factory.mktemp("report")
    build_report(run_dir, out, settings=ReportSettings(shap_sample=150, n_boot=20))
    return out
