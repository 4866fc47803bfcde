"""dermstack from a notebook: fit, predict a DataFrame, submit, explain (each ``# %%`` is a cell).

Runs in about half a minute on a laptop CPU on synthetic ISIC 2024 data; on Kaggle, point
``[data] path`` at ``/kaggle/input/isic-2024-challenge`` with ``format = "isic2024"`` and read the
test metadata the same way. Usage: ``python examples/notebook.py [WORK_DIR]`` (default: the current folder).
"""
# %% First, before anything loads OpenMP: LightGBM and XGBoost threads wait passively, not busily
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402

import dermstack as ds  # noqa: E402

work = Path(sys.argv[1] if len(sys.argv) > 1 else ".")

# %% Fit: the config is the TOML file's tables as a dict (or a path to one, or a ds.RunConfig)
config = {
    "data": {"format": "synthetic-isic2024", "lesions": 150, "test_lesions": 10, "positive_rate": 0.1, "image_size": 16},
    "cv": {"n_splits": 3},
    "models": [{"kind": "lightgbm", "params": {"n_estimators": 20, "threads": 1}},
               {"kind": "xgboost", "params": {"n_estimators": 20, "threads": 1}}],
    "ensemble": {"method": "mean"},
}
run = ds.fit(config, out=work / "runs" / "notebook")
print(run)
print("out-of-fold", run.metrics["primary_metric"], round(run.metrics["oof"][run.metrics["primary_metric"]], 4))
print(run.oof.head())

# %% Predict new lesions given as a DataFrame: here the Kaggle-style test metadata (isic_id, patient_id, ...)
lesions = pl.read_parquet(run.root / "lesions.parquet")
test_metadata = lesions.filter(pl.col("split") == "test").drop("image_id", "split", "target", "label")
scores = run.predict(test_metadata.to_pandas())  # a pandas DataFrame works as a polars one does
print(scores.head())

# %% Submit: validated before it is written (ids, columns, every score in [0, 1])
path = run.submit(work / "submission.csv", format="isic2024", predictions=scores)
print(path.read_text().splitlines()[:3])

# %% Explain one lesion: SHAP contributions that add up to its final score
why = run.explain(scores["image_id"][0])
print(why.space)
print(why.top(5))
