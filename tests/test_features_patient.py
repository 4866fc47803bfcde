"""Patient-relative features: hand-computed values, sklearn's LOF, and isolation between patients."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.neighbors import LocalOutlierFactor

from dermstack.config import FeaturesConfig
from dermstack.features.build import build_features
from dermstack.features.patient import cosine_ugly_duckling, lof_and_distances, patient_features
from lesion_tables import FakeStore, lesion_table, random_tbp_table


def test_zscore_rank_count_by_hand():
    df = pl.DataFrame({
        "image_id": ["a", "b", "c", "d", "e"], "patient_id": ["P", "P", "P", "Q", None],
        "anatom_site_general": ["torso", "torso", "head", "torso", "torso"], "x": [1.0, 3.0, 5.0, 7.0, 2.0],
    })
    out = patient_features(df, ["x"]).to_dicts()
    # patient P: mean 3, sample std 2
    assert [r["x_patient_z"] for r in out[:3]] == pytest.approx([-1.0, 0.0, 1.0])
    assert [r["x_patient_rank"] for r in out[:3]] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [r["patient_lesion_count"] for r in out] == [3, 3, 3, 1, None]  # no patient: no count
    assert [r["patient_site_lesion_count"] for r in out] == [2, 2, 1, 1, None]
    assert [r["x_patient_site_z"] for r in out[:2]] == pytest.approx([-2 ** -0.5, 2 ** -0.5])
    assert out[2]["x_patient_site_z"] is None and out[3]["x_patient_z"] is None  # one lesion: undefined
    assert out[3]["ugly_duckling_lof"] is None
    # two lesions of P at z -1 and 1 are 2 apart in the 1-d standardised space; the middle one 1 from each
    assert [r["ugly_duckling_mean_dist"] for r in out[:3]] == pytest.approx([1.5, 1.0, 1.5])
    assert [r["ugly_duckling_nn_dist"] for r in out[:3]] == pytest.approx([1.0, 1.0, 1.0])


def test_missing_value_gets_null_and_constant_column_zero():
    df = pl.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["P"] * 3, "x": [1.0, None, 3.0], "k": [2.0, 2.0, 2.0]})
    out = patient_features(df, ["x", "k"])
    assert out["x_patient_z"].to_list()[1] is None
    assert out["k_patient_z"].to_list() == [0.0, 0.0, 0.0]


def test_lof_is_sklearns():
    x = np.random.default_rng(1).normal(size=(60, 4))
    ours = lof_and_distances(x, k=10, block=7)
    ref = LocalOutlierFactor(n_neighbors=10).fit(x)
    np.testing.assert_allclose(ours[:, 2], -ref.negative_outlier_factor_, rtol=1e-9)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.testing.assert_allclose(ours[:, 0], d.sum(1) / 59, rtol=1e-9)


def test_cosine_ugly_duckling_by_hand():
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    got = cosine_ugly_duckling(np.array(["P", "P", "P", "Q"]), emb)
    # row 0: cos with row 1 = 1, with row 2 = 0 -> mean distance 0.5; row 2: distance 1 to both
    np.testing.assert_allclose(got[:3], [0.5, 0.5, 1.0])
    assert np.isnan(got[3])


def _features_of(table, emb: dict[str, np.ndarray]):
    ids = table.df["image_id"].to_list()
    cfg = FeaturesConfig(image=False)
    return build_features(table, cfg, FakeStore(ids, emb))


def test_other_patients_rows_do_not_change_a_patients_features():
    table = random_tbp_table(n_patients=5, per_patient=9)
    rng = np.random.default_rng(3)
    emb = {"tiny": rng.normal(size=(table.df.height, 16)).astype(np.float32)}
    before = _features_of(table, emb)
    # change every value of patient P1's lesions, drop one of P2's and give P3 a new lesion
    df = table.df.with_columns(
        pl.when(pl.col("patient_id") == "P1").then(pl.col(c) * 3 + 1).otherwise(pl.col(c)).alias(c)
        for c in ("clin_size_long_diam_mm", "tbp_lv_H", "age_approx"))
    df = df.filter(pl.col("image_id") != "img0018")
    extra = df.filter(pl.col("patient_id") == "P3").head(1).with_columns(pl.lit("new").alias("image_id"), pl.lit(9.5).alias("tbp_lv_H"))
    changed = lesion_table(pl.concat([df, extra]).to_dict(as_series=False))
    keep = [i for i in table.df["image_id"].to_list() if i != "img0018"]
    emb2 = {"tiny": np.concatenate([emb["tiny"][[table.df["image_id"].to_list().index(i) for i in keep]],
                                    rng.normal(size=(1, 16)).astype(np.float32)])}
    after = _features_of(changed, emb2)

    pcols = before.columns(["patient"])
    assert any(c.endswith("_patient_cos_dist") for c in pcols) and "ugly_duckling_lof" in pcols
    pick = pl.col("image_id").is_in([f"img{i:04d}" for i in range(9)])  # patient P0
    a = before.df.filter(pick).select("image_id", *pcols)
    b = after.df.filter(pick).select("image_id", *pcols)
    assert a.height == 9
    assert_frame_equal(a, b, check_exact=True)
    # ... while the changed patients' features did change
    p3 = pl.col("image_id").is_in([f"img{i:04d}" for i in range(27, 36)])
    assert not before.df.filter(p3)["patient_lesion_count"].equals(after.df.filter(p3)["patient_lesion_count"])


def test_lesions_are_pooled_not_compared_when_no_patient_ids():
    """HAM10000's shape: several images per lesion, no patient id. No feature counts or compares the
    images of a lesion; they share the lesion's mean embedding, and every image keeps its row."""
    ids = ["a", "b", "c", "d"]
    table = lesion_table({"image_id": ids, "lesion_id": ["L1", "L1", "L2", "L3"], "target": [1, 1, 0, 0],
                          "age_approx": [40.0, 40.0, 60.0, 50.0]})
    emb = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0], [0.0, 1.0, 1.0], [np.nan] * 3], dtype=np.float32)
    fs = build_features(table, FeaturesConfig(), FakeStore(ids, {"b": emb}), pca_components=2)
    assert fs.df["image_id"].to_list() == ids and "patient" not in fs.groups.values()
    assert not any("count" in c or "ugly" in c for c in fs.columns())
    pcs = fs.df.select(fs.columns(["embedding"])).to_numpy()
    np.testing.assert_allclose(pcs[0], pcs[1])
    assert not np.allclose(pcs[0], pcs[2]) and np.isnan(pcs[3]).all()
    info = fs.info["curation"]
    assert info["pooled"] == {"by": "lesion_id", "images": 4, "lesions": 3, "lesions_with_several_images": 1,
                              "max_images_per_lesion": 2}
    assert "patient_lesion_count" in info["not_built"]["patient"] and "curators" in info["not_built"]["patient"]


def test_pool_array_is_a_nan_aware_group_mean():
    from dermstack.features.pooling import pool_array

    x = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, np.nan]])
    np.testing.assert_allclose(pool_array(np.array([0, 0, 1]), x), [[2.0, 4.0], [2.0, 4.0], [5.0, np.nan]])


def test_patient_ids_keep_patient_features_and_images_unpooled():
    table = lesion_table({"image_id": ["a", "b", "c"], "patient_id": ["P", "P", "Q"], "lesion_id": ["L1", "L1", "L2"],
                          "target": [1, 0, 0], "age_approx": [40.0, 50.0, 60.0]})
    fs = build_features(table, FeaturesConfig())
    assert fs.df["patient_lesion_count"].to_list() == [2, 2, 1]
    assert fs.info["curation"] == {"pooled": None, "not_built": {}}
