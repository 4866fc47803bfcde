"""dermstack's default config against AutoGluon Tabular on the same inputs, side by side in one run.

Both get the same rows, the same EfficientNet-Lite0 embeddings (all 1280 dimensions, as dermstack
extracts them; dermstack's boosters see their PCA, its linear probe all of them), the same table
features (metadata: age, sex, site; the image features from the shipped masks) and the same
lesion-grouped FoldPlan.
dermstack runs its default config (no [[models]]: the default model set, size-aware booster
defaults, method = "auto", calibration). AutoGluon 1.6.3 fits LightGBM + CatBoost + XGBoost, bagged
(8 folds, grouped by lesion), with its weighted ensemble, once per outer fold; its OOF scores are
pooled like dermstack's. Printed: each one's OOF ROC-AUC and pAUC, and fit time (dermstack: its
model, ensemble and calibration stages; both exclude the shared embedding extraction), and the
ROC-AUC difference with its 95% CI from a paired bootstrap over lesions (1,000 resamples).

AutoGluon is never a dependency of dermstack: it lives in its own virtual environment.
  python3 -m venv .venv-autogluon
  .venv-autogluon/bin/pip install "autogluon.tabular[lightgbm,catboost,xgboost]==1.6.3"
  .venv/bin/python benchmarks/vs_autogluon.py [--data ../shared/data/ham10000-dev] [--ag-python .venv-autogluon/bin/python] [--smoke]

``--no-image-features``: both without the mask features (``[features] image = false``), which
AutoGluon cannot make itself: embeddings + age, sex and site only, the equal-inputs comparison.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.testing import SMOKE_HELP, shared_data_dir, smoke_work, tiny_copy

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
[data]
format = "ham10000"
path = "{data}"
task = "binary"

[extract]
backbones = ["efficientnet_lite0"]
{features}"""

AG_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    from autogluon.tabular import TabularPredictor
    df = pd.read_parquet(sys.argv[1])
    work, bag_folds, max_folds = Path(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
    features = [c for c in df.columns if c not in ("image_id", "target", "fold", "group")]
    oof, seconds, cpu = pd.Series(index=df.index, dtype=float), 0.0, 0.0
    folds = sorted(df["fold"].unique())[:max_folds]
    for k in folds:
        train, valid = df[df["fold"] != k], df[df["fold"] == k]
        done = work / f"fold{k}.json"  # one finished outer fold: a killed benchmark resumes after it
        if not done.exists():
            t0, c0 = time.perf_counter(), time.process_time()
            p = TabularPredictor(label="target", eval_metric="roc_auc", groups="group", verbosity=0,
                                 path=str(work / f"fold{k}")).fit(
                train[features + ["target", "group"]], hyperparameters={"GBM": {}, "CAT": {}, "XGB": {}},
                num_bag_folds=bag_folds, num_bag_sets=1, num_stack_levels=0)
            fit = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                   "oof": p.predict_proba(valid[features])[1].tolist()}
            done.write_text(json.dumps(fit))
        fit = json.loads(done.read_text())
        oof[valid.index] = fit["oof"]
        seconds, cpu = seconds + fit["seconds"], cpu + fit["cpu"]
        print(f"autogluon fold {k}: {fit['seconds']:.0f} s", file=sys.stderr, flush=True)
    json.dump({"oof": oof.tolist(), "seconds": seconds, "cpu": cpu, "folds": [int(k) for k in folds]}, open(sys.argv[3], "w"))
''')


def fit_seconds(run_dir: Path) -> float:
    """Seconds of the stages that fit models (not ingest, extraction or features)."""
    total = 0.0
    for f in (run_dir / "stages").glob("*.json"):
        rec = json.loads(f.read_text())
        if rec["stage"].startswith(("model-", "nested-", "ensemble-")):
            total += rec.get("seconds", 0.0)
    return total


def autogluon_inputs(run_dir: Path, bag_folds: int) -> pl.DataFrame:
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
        # AutoGluon bags by LeaveOneGroupOut over this column: bag_folds folds, each lesion's images in one
        table_features, train.select((pl.coalesce("lesion_id", "image_id").hash(seed=0) % bag_folds).cast(pl.Int32).alias("group")),
        pl.DataFrame(emb, schema=[f"emb_{i:04d}" for i in range(emb.shape[1])]),
        pl.DataFrame({"target": task.y.astype(int), "fold": plan.fold_of(task.image_ids)}),
    ], how="horizontal")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=(shared_data_dir() or ROOT.parent / "shared" / "data") / "ham10000-dev")
    ap.add_argument("--ag-python", type=Path, default=ROOT / ".venv-autogluon" / "bin" / "python")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "vs_autogluon")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="A finished dermstack run of the same default config (e.g. benchmarks/ensemble_vs_best.py's).")
    ap.add_argument("--max-folds", type=int, default=99,
                    help="Fit AutoGluon on the first N outer folds only and compare both on those folds' rows "
                         "(dermstack's fit time scaled by N / n_splits).")
    ap.add_argument("--bag-folds", type=int, default=8, help="AutoGluon's num_bag_folds (its best_quality default: 8).")
    ap.add_argument("--no-image-features", action="store_true",
                    help="[features] image = false: no mask features for either (the equal-inputs comparison).")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    from dermstack.metrics import pauc_tpr80, roc_auc

    if args.smoke:  # a tiny copy of the data; AutoGluon on 2 bags of the first outer fold, where it is installed
        args.out = smoke_work("vs_autogluon")
        args.data = tiny_copy("ham10000", args.data, args.out / "data", per_class=15)
        args.max_folds, args.bag_folds = 1, 2

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_dir = args.reuse or args.out / "dermstack"
    cpu = None
    if args.reuse is None:
        cfg = args.out / "default.toml"
        cfg.write_text(CONFIG.format(data=args.data.resolve(),
                                     features="\n[features]\nimage = false\n" if args.no_image_features else ""))
        shutil.rmtree(run_dir, ignore_errors=True)  # timed from scratch, not resumed
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(cfg), "--out", str(run_dir)], check=True)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)  # the whole run, extraction included
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ours = {"roc_auc": metrics["oof"]["roc_auc"], "pauc_tpr80": metrics["oof"]["pauc_tpr80"], "seconds": fit_seconds(run_dir),
            "final": metrics["oof_model"], "wall": time.perf_counter() - t0,
            "cpu_seconds_whole_run": cpu}
    print(f"dermstack: final {ours['final']} ROC-AUC {ours['roc_auc']:.4f}, pAUC {ours['pauc_tpr80']:.4f}, "
          f"fit {ours['seconds']:.0f} s (whole run {ours['wall']:.0f} s"
          + (f", CPU {cpu:.0f} s incl. extraction)" if cpu is not None else ")"), flush=True)
    inputs = autogluon_inputs(run_dir, args.bag_folds)
    if not args.ag_python.exists():
        message = f"no AutoGluon environment at {args.ag_python}; see this script's docstring"
        if args.smoke:  # AutoGluon is never a dependency of dermstack: its side is skipped, dermstack's ran
            print(f"AutoGluon side skipped: {message}")
            return
        sys.exit(message)
    work = args.out / "autogluon"  # kept: a rerun resumes after the last finished outer fold
    work.mkdir(exist_ok=True)
    data, script, result = work / "inputs.parquet", work / "ag.py", work / "result.json"
    inputs.write_parquet(data)
    script.write_text(AG_SCRIPT)
    subprocess.run([str(args.ag_python), str(script), str(data), str(work), str(result), str(args.bag_folds),
                    str(args.max_folds)], check=True)
    ag = json.loads(result.read_text())
    from dermstack.clinical.bootstrap import paired_bootstrap
    from dermstack.clinical_report import bootstrap_units
    from dermstack.data.table import LesionTable
    from dermstack.predictions import Predictions

    rows = np.isin(inputs["fold"].to_numpy(), ag["folds"])
    y, s = inputs["target"].to_numpy()[rows], np.asarray(ag["oof"])[rows]
    ids = inputs["image_id"].to_list()
    mine = Predictions.read(run_dir / "oof.parquet").for_model(ours["final"]).matrix(ids, ["target"]).ravel()[rows]
    units, unit = bootstrap_units(LesionTable.read(run_dir / "lesions.parquet"), ids)  # as `dermstack compare` pairs
    diff = paired_bootstrap(y, mine, s, units[rows], "roc_auc", n_boot=1000)
    if not rows.all():  # both on the rows of the folds AutoGluon fitted
        share = len(ag["folds"]) / inputs["fold"].n_unique()
        ours.update(roc_auc=roc_auc(y, mine), pauc_tpr80=pauc_tpr80(y, mine), seconds=ours["seconds"] * share,
                    folds=ag["folds"])
        print(f"on the {len(ag['folds'])} outer folds AutoGluon fitted ({rows.sum()} rows): dermstack ROC-AUC "
              f"{ours['roc_auc']:.4f}, pAUC {ours['pauc_tpr80']:.4f}, fit {ours['seconds']:.0f} s (its {share:.0%})")
    theirs = {"roc_auc": roc_auc(y, s), "pauc_tpr80": pauc_tpr80(y, s), "seconds": ag["seconds"], "cpu_seconds": ag["cpu"],
              "bag_folds": args.bag_folds}
    print(f"AutoGluon 1.6.3 (GBM+CAT+XGB bagged, weighted ensemble): ROC-AUC {theirs['roc_auc']:.4f}, "
          f"pAUC {theirs['pauc_tpr80']:.4f}, fit {theirs['seconds']:.0f} s (CPU {theirs['cpu_seconds']:.0f} s)")
    print(f"dermstack - AutoGluon ROC-AUC {ours['roc_auc'] - theirs['roc_auc']:+.4f} "
          f"[{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}] (paired, 1,000 resamples of {unit}); "
          f"fit time dermstack / AutoGluon = {ours['seconds'] / theirs['seconds']:.3f} (target <= 0.1)")
    (args.out / "result.json").write_text(json.dumps({"dermstack": ours, "autogluon": theirs, "paired_roc_auc": diff}, indent=2))


if __name__ == "__main__":
    main()
