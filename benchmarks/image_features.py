"""Benchmark: image features on the real HAM10000 (2,479 images) and PH2 (30) development sets.

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/image_features.py [--workers 2] [--smoke]

For each dataset: seconds to measure every image from the shipped masks and from automatic
segmentation (``--workers`` processes), the Dice overlap of the automatic masks with the shipped
ones, and on HAM10000 the out-of-fold ROC-AUC (malignant vs benign, 5 lesion-grouped folds, one
small LightGBM) of metadata only against metadata + image features.
"""
from __future__ import annotations

import argparse
import time

import lightgbm as lgb
import numpy as np
import polars as pl

from dermstack.config import FeaturesConfig
from dermstack.data.folds import FoldPlan
from dermstack.data.readers import ingest
from dermstack.data.table import LesionTable
from dermstack.features.build import build_features
from dermstack.features.featureset import FeatureSet
from dermstack.features.image import auto_segment, dice, image_features, load_pair
from dermstack.metrics import roc_auc
from dermstack.testing import SMOKE_HELP, shared_data_dir, smoke_work, tiny_copy

PARAMS = {"objective": "binary", "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 20,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1, "num_threads": 2}


def automatic_dice(table: LesionTable) -> np.ndarray:
    rows = table.df.filter(pl.col("mask_ref").is_not_null()).select("image_ref", "mask_ref").iter_rows()
    out = []
    for image_ref, mask_ref in rows:
        rgb, mask = load_pair(image_ref, mask_ref, auto=False)
        out.append(dice(auto_segment(rgb), mask))
    return np.array(out)


def oof_auc(fs: FeatureSet, table: LesionTable, groups: list[str]) -> float:
    cols = fs.columns(groups)
    train = fs.df.filter(pl.col("split") == "train")
    x = train.select(cols).to_pandas()
    for c in fs.categorical:
        if c in x:
            x[c] = x[c].astype("category")
    y = table.train["target"].to_numpy()
    plan = FoldPlan.make(table, 5, 42)
    oof = np.zeros(len(y))
    for _, tr, va in plan.splits(train["image_id"]):
        model = lgb.train(PARAMS, lgb.Dataset(x.iloc[tr], y[tr]), num_boost_round=300)
        oof[va] = model.predict(x.iloc[va])
    return roc_auc(y, oof)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    data = shared_data_dir()
    work = smoke_work("image_features") if args.smoke else None
    for fmt, folder in (("ham10000", "ham10000-dev"), ("ph2", "ph2-dev")):
        path = tiny_copy(fmt, data / folder, work / folder, per_class=15, max_px=64) if args.smoke else data / folder
        table, _ = ingest(fmt, path)
        for mode in ("mask", "automatic"):
            t = time.perf_counter()
            _, info = image_features(table.df, mode, args.workers)
            s = time.perf_counter() - t
            print(f"{fmt}: {info['images']} images, {'shipped' if mode == 'mask' else mode} masks: {s:.1f} s "
                  f"({info['images'] / s:.0f} images/s, {args.workers} workers), empty masks {len(info.get('empty_mask', []))}")
        d = automatic_dice(table)
        print(f"{fmt}: automatic vs shipped masks: Dice mean {d.mean():.3f}, median {np.median(d):.3f}, "
              f"{(d < 0.5).mean():.1%} below 0.5")
        if fmt == "ham10000":
            cfgs = {"metadata only": (FeaturesConfig(patient=False), ["metadata"]),
                    "metadata + image (shipped masks)": (FeaturesConfig(patient=False, image=True, segmentation="mask"),
                                                         ["metadata", "image"]),
                    "metadata + image (automatic masks)": (FeaturesConfig(patient=False, image=True, segmentation="automatic"),
                                                           ["metadata", "image"])}
            for name, (cfg, groups) in cfgs.items():
                cfg.workers = args.workers
                fs = build_features(table, cfg)
                print(f"{fmt}: OOF ROC-AUC malignant, {name}: {oof_auc(fs, table, groups):.3f}")


if __name__ == "__main__":
    main()
