"""SHAP values add up to the models' raw output, for every library, per booster and averaged over seeds."""
import numpy as np
import polars as pl
import pytest

from dermstack.boosting.explain import load_fold_boosters
from dermstack.crossfit import align_rows
from dermstack.reports.rundata import RunData
from dermstack.reports.shap_ import ShapValues, explain_model, group_contributions, sample_rows


@pytest.mark.parametrize("library", ["lightgbm", "xgboost", "catboost"])
def test_shap_adds_up_to_raw_output(run_dir, library):
    run = RunData.load(run_dir)
    boosters = load_fold_boosters(run_dir / "models" / library)
    ids = run.task.image_ids
    folds = run.folds.fold_of(ids)
    features = align_rows(run.features.df, ids)
    for b in boosters:
        rows = features.filter(pl.Series(folds == b.fold))
        values, base = b.shap_values(rows)
        assert values.shape == (rows.height, len(b.columns))
        np.testing.assert_allclose(values.sum(axis=1) + base, b.raw_output(rows), atol=1e-4)
    sv = explain_model(library, boosters, features, folds, run.task.classes, progress=False)
    raw = np.zeros(len(ids))
    for b in boosters:  # the seed-averaged raw output of each row's own fold
        mask = folds == b.fold
        raw[mask] += b.raw_output(features.filter(pl.Series(mask))) / sum(o.fold == b.fold for o in boosters)
    np.testing.assert_allclose(sv.values.sum(axis=1) + sv.base, raw, atol=1e-4)
    assert sv.n_seeds == (2 if library == "lightgbm" else 1)


def test_shap_seed_average_differs_from_single_seed(run_dir):
    run = RunData.load(run_dir)
    boosters = load_fold_boosters(run_dir / "models" / "lightgbm")
    ids = run.task.image_ids
    features, folds = align_rows(run.features.df, ids), run.folds.fold_of(ids)
    both = explain_model("lightgbm", boosters, features, folds, ["target"], progress=False)
    seed0 = explain_model("lightgbm", [b for b in boosters if b.seed == 0], features, folds, ["target"], progress=False)
    seed1 = explain_model("lightgbm", [b for b in boosters if b.seed == 1], features, folds, ["target"], progress=False)
    np.testing.assert_allclose(both.values, (seed0.values + seed1.values) / 2, atol=1e-9)
    assert not np.allclose(seed0.values, seed1.values)


def test_sample_keeps_every_positive_and_stratifies_negatives():
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.02).astype(int)
    folds = rng.integers(0, 5, 5000)
    rows = sample_rows(y, folds, 500, seed=1)
    assert set(np.flatnonzero(y == 1)) <= set(rows)
    assert abs(len(rows) - 500) <= 5 and len(np.unique(rows)) == len(rows)
    neg = rows[y[rows] == 0]
    per_fold = np.bincount(folds[neg], minlength=5) / np.bincount(folds[y == 0], minlength=5)
    assert per_fold.max() - per_fold.min() < 0.01  # the same fraction of each fold's negatives
    assert len(sample_rows(y, folds, None)) == 5000 and len(sample_rows(y, folds, 10_000)) == 5000


def test_npz_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    sv = ShapValues("m", np.array(["a", "b"]), np.array([0, 1]), ["f1", "f2"], rng.normal(size=(2, 2)), rng.normal(size=2),
                    rng.normal(size=(2, 2)), ["target"], {"f2": ["x", "y"]}, 2)
    back = ShapValues.read(sv.write(tmp_path / "m.npz"))  # ShapValues.read loads with allow_pickle=False
    assert back.features == ["f1", "f2"] and back.categories == {"f2": ["x", "y"]} and back.n_seeds == 2
    np.testing.assert_allclose(back.values, sv.values, rtol=1e-6)
    np.testing.assert_allclose(back.base, sv.base)


def test_group_shares_follow_the_signal(run_dir, report_dir):
    shares = pl.read_parquet(report_dir / "shap_groups.parquet")
    for _, part in shares.group_by("model", "rows"):
        assert part["share"].sum() == pytest.approx(1.0)
    # the fixture's target depends on age, site, size and colour; the embedding columns are noise
    lgb = shares.filter((pl.col("model") == "lightgbm") & (pl.col("rows") == "all"))
    share = dict(zip(lgb["group"], lgb["share"]))
    assert share["metadata"] > share["embedding"] and share["metadata"] > 0.3
    assert set(shares["rows"]) == {"all", "positives"}


def test_group_contributions_by_hand():
    sv = ShapValues("m", np.array(["a", "b"]), np.array([0, 0]), ["x", "y", "z"],
                    np.array([[1.0, -1.0, 2.0], [-3.0, 1.0, 0.0]]), np.zeros(2), np.zeros((2, 3)), ["target"])
    out = group_contributions(sv, {"x": "metadata", "y": "metadata", "z": "embedding"}, np.array([True, False]))
    row = out.filter((pl.col("rows") == "all") & (pl.col("group") == "metadata")).row(0, named=True)
    assert row["mean_abs_shap"] == pytest.approx((1 + 3) / 2 + (1 + 1) / 2) and row["share"] == pytest.approx(3 / 4)
    pos = out.filter((pl.col("rows") == "positives") & (pl.col("group") == "embedding")).row(0, named=True)
    assert pos["share"] == pytest.approx(2 / 4) and pos["n_rows"] == 1
