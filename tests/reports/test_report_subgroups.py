"""Subgroup metrics against the metric computed directly on each group; curves and operating points."""
import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from dermstack import metrics
from dermstack.reports.curves import BinaryCurves, OperatingPoint, threshold_at_specificity
from dermstack.reports.subgroups import SubgroupSettings, subgroup_columns, subgroup_table


def data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    s = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    df = pl.DataFrame({
        "sex": pl.Series(rng.choice(["male", "female", ""], n).tolist()).replace("", None),
        "age_approx": pl.Series(rng.choice([15, 35, 50, 65, 85, -1], n).tolist(), dtype=pl.Float64).replace(-1, None),
        "skin_tone": np.where(rng.random(n) < 0.04, 56, rng.choice([12, 34], n)),
    })
    return y, s, df


def test_group_values_and_gaps_match_direct_computation():
    y, s, df = data()
    groups = subgroup_columns(df)
    assert set(groups) == {"sex", "age", "skin tone (skin_tone)"}
    t = subgroup_table("binary", y, s, groups, SubgroupSettings(n_boot=30, min_n=30))
    overall = metrics.roc_auc(y, s)
    for attribute, col in groups.items():
        for g in col.unique().to_list():
            mask = col.to_numpy() == g
            row = t.filter((pl.col("attribute") == attribute) & (pl.col("group") == g) & (pl.col("metric") == "roc_auc")).row(0, named=True)
            expected = skm.roc_auc_score(y[mask], s[mask]) if 0 < y[mask].sum() < mask.sum() else float("nan")
            assert row["value"] == pytest.approx(expected, nan_ok=True)
            assert row["n"] == mask.sum() and row["n_pos"] == y[mask].sum()
            assert row["gap"] == pytest.approx(expected - overall, nan_ok=True)
            if np.isfinite(row["ci_low"]) and np.isfinite(expected):
                assert row["ci_low"] <= expected + 0.05 and row["ci_high"] >= expected - 0.05


def test_small_and_missing_groups_are_flagged_not_hidden():
    y, s, df = data()
    t = subgroup_table("binary", y, s, subgroup_columns(df), SubgroupSettings(n_boot=0, min_n=30))
    tone = t.filter((pl.col("attribute") == "skin tone (skin_tone)") & (pl.col("metric") == "roc_auc"))
    assert tone.filter(pl.col("group") == "56")["small"].to_list() == [True]  # about 24 of 600 rows
    assert tone.filter(pl.col("group") == "12")["small"].to_list() == [False]
    ages = t.filter((pl.col("attribute") == "age") & (pl.col("metric") == "roc_auc") & (pl.col("kind") == "group"))["group"].to_list()
    assert ages == ["<30", "30-44", "45-59", "60-74", "75+", "(missing)"]
    assert "(missing)" in t.filter(pl.col("attribute") == "sex")["group"].to_list()


def test_best_worst_gap_of_well_sized_groups_with_bootstrap_ci():
    y, s, df = data()
    df = df.with_columns(pl.Series("skin_tone", np.where(y == 1, np.where(np.arange(len(y)) % 2, 12, 34), df["skin_tone"])))
    s = np.where(df["skin_tone"].to_numpy() == 34, np.clip(s + 0.3 * y, 0, 1), s)  # skin tone 34 is ranked better
    t = subgroup_table("binary", y, s, subgroup_columns(df), SubgroupSettings(n_boot=200, min_n=30))
    rows = t.filter((pl.col("attribute") == "skin tone (skin_tone)") & (pl.col("metric") == "roc_auc"))
    groups = rows.filter(pl.col("kind") == "group")
    assert groups.filter(pl.col("group") == "56")["small"].to_list() == [True]  # small: left out of the gap
    gap = rows.filter(pl.col("kind") == "best - worst").row(0, named=True)
    tone = df["skin_tone"].to_numpy()
    auc = {g: skm.roc_auc_score(y[tone == g], s[tone == g]) for g in (12, 34)}
    assert (gap["best"], gap["worst"]) == ("34", "12") and gap["group"] == "34 - 12"
    assert gap["value"] == pytest.approx(auc[34] - auc[12])
    assert 0 < gap["ci_low"] < gap["value"] < gap["ci_high"]
    assert gap["n"] == (tone != 56).sum()
    # one well-sized group: no gap row
    one = subgroup_table("binary", y, s, {"sex": pl.Series(["x"] * len(y))}, SubgroupSettings(n_boot=5))
    assert one.filter(pl.col("kind") == "best - worst").is_empty() and one.schema["best"] == pl.String


def test_threshold_at_specificity_and_operating_point():
    y, s, _ = data(seed=3)
    for spec in (0.8, 0.9, 0.95):
        t = threshold_at_specificity(y, s, spec)
        op = OperatingPoint.at(y, s, t)
        assert op.specificity >= spec
        # the next lower score would fall below the target specificity: the threshold is the smallest that reaches it
        lower = s[(y == 0) & (s < t)].max()
        assert OperatingPoint.at(y, s, lower).specificity < spec
        assert op.tp + op.fn == y.sum() and op.tn + op.fp == (1 - y).sum()


def test_curves_match_sklearn():
    y, s, _ = data(seed=5)
    c = BinaryCurves.compute("target", y, s)
    assert c.roc_auc == pytest.approx(skm.roc_auc_score(y, s))
    assert c.average_precision == pytest.approx(skm.average_precision_score(y, s))
    assert c.pauc_tpr80 == pytest.approx(metrics.partial_auc(y, s))
    assert sum(c.calib_n) == len(y) and np.average(c.calib_obs, weights=c.calib_n) == pytest.approx(y.mean())


def test_fast_roc_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 200))
        y = (rng.random(n) < 0.3).astype(int)
        if y.min() == y.max():
            continue
        s = np.round(rng.random(n) + y * rng.random(), 1)
        assert metrics.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError):
        metrics.roc_auc(np.zeros(5), np.arange(5.0))


def test_whole_number_float_groups_read_as_integers():
    # MILK10k's skin tone is stored as floats: its groups read "0.0", "1.0" before
    df = pl.DataFrame({"skin_tone_class": [0.0, 1.0, None, 1.0], "fitzpatrick": [1.5, 2.0, 3.0, None]})
    groups = subgroup_columns(df)
    assert groups["skin tone (skin_tone_class)"].to_list() == ["0", "1", "(missing)", "1"]
    assert groups["skin tone (fitzpatrick)"].to_list() == ["1.5", "2.0", "3.0", "(missing)"]
