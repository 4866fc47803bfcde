"""dermstack's default config against AutoGluon Tabular on the same inputs, side by side in one run.

Both get the same rows, the same EfficientNet-Lite0 embeddings (all 1280 dimensions, as dermstack
extracts them; dermstack's boosters see their PCA, its linear probe all of them), the same table
features (metadata: age, sex, site; the image features from the shipped masks) and the same
lesion-grouped FoldPlan.
dermstack runs its default config (no [[models]]: the default model set, size-aware booster
defaults, method = "auto", calibration). AutoGluon 1.6.3 fits LightGBM + CatBoost + XGBoost, bagged
(8 folds, grouped by lesion), with its weighted ensemble, once per outer fold; its OOF scores are
pooled like dermstack's. Printed: each one's OOF ROC-AUC and pAUC, and fit time (dermstack: its
model, ensemble and calibration stages; both exclude the shared embedding extraction).

AutoGluon is never a dependency of dermstack: it lives in its own virtual environment.
  python3 -m venv .venv-autogluon
  .venv-autogluon/bin/pip install "autogluon.tabular[lightgbm,catboost,xgboost]==1.6.3"
  .venv/bin/python benchmarks/vs_autogluon.py [--data ../shared/data/ham10000-dev] [--ag-python .venv-autogluon/bin/python]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
[data]
format = "ham10000"
path = "{data}"
task = "binary"

[extract]
backbones = ["efficientnet_lite0"]
"""

AG_SCRIPT = textwrap.dedent('''
    import json, sys, time
    import pandas as pd
    from autogluon.tabular import TabularPredictor
    df = pd.read_parquet(sys.argv[1])
    features = [c for c in df.columns if c not in ("image_id", "target", "fold", "group")]
    oof, seconds = pd.Series(index=df.index, dtype=float), 0.0
    for k in sorted(df["fold"].unique()):
        train, valid = df[df["fold"] != k], df[df["fold"] == k]
        t0 = time.perf_counter()
        p = TabularPredictor(label="target", eval_metric="roc_auc", groups="group", verbosity=0,
                             path=f"{sys.argv[2]}/fold{k}").fit(
            train[features + ["target", "group"]], hyperparameters={"GBM": {}, "CAT": {}, "XGB": {}},
            num_bag_folds=8, num_bag_sets=1, num_stack_levels=0)
        seconds += time.perf_counter() - t0
        oof[valid.index] = p.predict_proba(valid[features])[1].to_numpy()
        print(f"autogluon fold {k}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    json.dump({"oof": oof.tolist(), "seconds": seconds}, open(sys.argv[3], "w"))
''')


def fit_seconds(run_dir: Path) -> float:
    """Seconds of the stages that fit models (not ingest, extraction or features)."""
    total = 0.0
    for f in (run_dir / "stages").glob("*.json"):
        rec = json.loads(f.read_text())
        if rec["stage"].startswith(("model-", "nested-", "ensemble-")):
            total += rec.get("seconds", 0.0)
    return total


def autogluon_inputs(run_dir: Path) -> pl.DataFrame:
    """The run's training rows as its boosters saw them, but with the full embeddings instead of
    their PCA: every non-embedding feature column of features.parquet (metadata, engineered, image
    features), the 1280-d embeddings, target, fold, and a bagging group per lesion."""
    from dermstack.data.folds import FoldPlan
    from dermstack.data.table import LesionTable
    from dermstack.extract import EmbeddingStore
    from dermstack.features.featureset import FeatureSet
    from dermstack.task import TaskSpec

    table = LesionTable.read(run_dir / "lesions.parquet")
    task = TaskSpec.from_table(table, "binary")
    plan = FoldPlan.read(run_dir / "folds.parquet")
    store = EmbeddingStore(run_dir / "embeddings.h5")
    emb = store.read(store.backbones()[0], task.image_ids)
    fs = FeatureSet.read(run_dir / "features.parquet")
    order = pl.DataFrame({"image_id": task.image_ids})
    train = order.join(table.df.select("image_id", "lesion_id"), on="image_id", how="left", maintain_order="left")
    columns = [c for c in fs.feature_columns if fs.groups[c] != "embedding"]
    table_features = order.join(fs.df.select("image_id", *columns), on="image_id", how="left", maintain_order="left")
    return pl.concat([
        # AutoGluon bags by LeaveOneGroupOut over this column: 8 bag folds, each lesion's images in one
        table_features, train.select((pl.coalesce("lesion_id", "image_id").hash(seed=0) % 8).cast(pl.Int32).alias("group")),
        pl.DataFrame(emb, schema=[f"emb_{i:04d}" for i in range(emb.shape[1])]),
        pl.DataFrame({"target": task.y.astype(int), "fold": plan.fold_of(task.image_ids)}),
    ], how="horizontal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ham10000-dev")
    ap.add_argument("--ag-python", type=Path, default=ROOT / ".venv-autogluon" / "bin" / "python")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "vs_autogluon")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="A finished dermstack run of the same default config (e.g. benchmarks/ensemble_vs_best.py's).")
    args = ap.parse_args()
    from dermstack.metrics import pauc_tpr80, roc_auc

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_dir = args.reuse or args.out / "dermstack"
    if args.reuse is None:
        cfg = args.out / "default.toml"
        cfg.write_text(CONFIG.format(data=args.data.resolve()))
        subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(cfg), "--out", str(run_dir)], check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ours = {"roc_auc": metrics["oof"]["roc_auc"], "pauc_tpr80": metrics["oof"]["pauc_tpr80"], "seconds": fit_seconds(run_dir),
            "final": metrics["oof_model"], "wall": time.perf_counter() - t0}
    print(f"dermstack: final {ours['final']} ROC-AUC {ours['roc_auc']:.4f}, pAUC {ours['pauc_tpr80']:.4f}, "
          f"fit {ours['seconds']:.0f} s (whole run {ours['wall']:.0f} s)", flush=True)
    if not args.ag_python.exists():
        sys.exit(f"no AutoGluon environment at {args.ag_python}; see this script's docstring")
    inputs = autogluon_inputs(run_dir)
    with tempfile.TemporaryDirectory(prefix="ag-") as tmp:
        data, script, result = Path(tmp) / "inputs.parquet", Path(tmp) / "ag.py", Path(tmp) / "result.json"
        inputs.write_parquet(data)
        script.write_text(AG_SCRIPT)
        subprocess.run([str(args.ag_python), str(script), str(data), tmp, str(result)], check=True)
        ag = json.loads(result.read_text())
    y, s = inputs["target"].to_numpy(), np.asarray(ag["oof"])
    theirs = {"roc_auc": roc_auc(y, s), "pauc_tpr80": pauc_tpr80(y, s), "seconds": ag["seconds"]}
    print(f"AutoGluon 1.6.3 (GBM+CAT+XGB bagged, weighted ensemble): ROC-AUC {theirs['roc_auc']:.4f}, "
          f"pAUC {theirs['pauc_tpr80']:.4f}, fit {theirs['seconds']:.0f} s")
    print(f"dermstack - AutoGluon ROC-AUC {ours['roc_auc'] - theirs['roc_auc']:+.4f}; "
          f"fit time dermstack / AutoGluon = {ours['seconds'] / theirs['seconds']:.3f} (target <= 0.1)")
    (args.out / "result.json").write_text(json.dumps({"dermstack": ours, "autogluon": theirs}, indent=2))


if __name__ == "__main__":
    main()
