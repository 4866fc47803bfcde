"""build_features end to end: groups, embedding PCA fitted on training rows, CLI, bad input."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from dermstack.cli import cli
from dermstack.config import FeaturesConfig
from dermstack.errors import DataError
from dermstack.features.build import build_features
from dermstack.features.featureset import FeatureSet
from lesion_tables import FakeStore, assert_features_equal, random_tbp_table


def _with_test_rows(table, n_test: int = 6):
    ids = table.df["image_id"].to_list()[-n_test:]
    df = table.df.with_columns(pl.when(pl.col("image_id").is_in(ids)).then(pl.lit("test")).otherwise(pl.col("split")).alias("split"))
    df = df.with_columns(pl.when(pl.col("split") == "test").then(None).otherwise(pl.col("target")).alias("target"))
    return type(table)(df, table.meta)


def test_all_groups_and_roundtrip(tmp_path):
    table = _with_test_rows(random_tbp_table())
    ids = table.df["image_id"].to_list()
    emb = np.random.default_rng(0).normal(size=(len(ids), 24)).astype(np.float32)
    fs = build_features(table, FeaturesConfig(), FakeStore(ids, {"timm/test_vit.r160_in1k": emb}), pca_components=4)
    assert fs.df["image_id"].to_list() == ids and fs.df["split"].to_list() == table.df["split"].to_list()
    groups = set(fs.groups.values())
    assert groups == {"metadata", "engineered", "patient", "embedding"}
    assert fs.columns(["embedding"]) == [f"emb_timm_test_vit_r160_in1k_pc{i:02d}" for i in range(4)]
    assert "hue_contrast" in fs.columns(["engineered"]) and "anatom_site_general" in fs.categorical
    assert "tbp_lv_H_patient_site_z" in fs.columns(["patient"]) and "hue_contrast_patient_rank" in fs.columns(["patient"])
    back = FeatureSet.read(fs.write(tmp_path / "features.parquet"))
    assert back.groups == fs.groups and back.categorical == fs.categorical and back.df.equals(fs.df)

    # the PCA is fitted on training rows only: moving test rows' embeddings leaves training rows' components alone
    emb2 = emb.copy()
    emb2[-6:] *= 50
    fs2 = build_features(table, FeaturesConfig(patient=False), FakeStore(ids, {"timm/test_vit.r160_in1k": emb2}), pca_components=4)
    cols = fs.columns(["embedding"])
    np.testing.assert_allclose(fs2.df.head(len(ids) - 6).select(cols).to_numpy(), fs.df.head(len(ids) - 6).select(cols).to_numpy(),
                               rtol=1e-5)


def test_switched_off_groups_are_absent():
    fs = build_features(random_tbp_table(), FeaturesConfig(patient=False, engineered=False))
    assert set(fs.groups.values()) == {"metadata"}


def test_store_that_loses_rows_is_an_error():
    table = random_tbp_table()

    class Short(FakeStore):
        def read(self, backbone, image_ids):
            return super().read(backbone, image_ids)[:-1]

    ids = table.df["image_id"].to_list()
    with pytest.raises(DataError, match="shape"):
        build_features(table, FeaturesConfig(), Short(ids, {"b": np.zeros((len(ids), 3), np.float32)}))


def test_fitted_transform_rebuilds_new_rows_alone(tmp_path):
    """A run's fitted transform, applied to its test rows alone, gives them the per-row features they
    got in the run: the PCA is not refitted and a column dropped for leaky missingness stays dropped."""
    table = _with_test_rows(random_tbp_table())
    ids = table.df["image_id"].to_list()
    leaky = table.df.with_columns(pl.when(pl.col("target") == 1).then(None).otherwise(pl.col("age_approx")).alias("age_approx"))
    table = type(table)(leaky, table.meta)
    emb = np.random.default_rng(1).normal(size=(len(ids), 24)).astype(np.float32)
    store = FakeStore(ids, {"b": emb})
    fs = build_features(table, FeaturesConfig(), store, pca_components=3)
    assert fs.transform.dropped == ["age_approx"] and set(fs.transform.pca) == {"emb_b"}
    fs.write(tmp_path / "features.parquet")
    fitted = FeatureSet.read(tmp_path / "features.parquet").transform
    np.testing.assert_array_equal(fitted.pca["emb_b"].components, fs.transform.pca["emb_b"].components)

    new = type(table)(table.df.filter(pl.col("split") == "test"), table.meta)  # no training row, no label
    again = build_features(new, FeaturesConfig(), store, pca_components=3, fitted=fitted)
    assert again.groups == fs.groups and "age_approx" not in again.groups
    # per-row groups only: patient features see the rows they are given (predict adds the patient's run rows)
    assert_features_equal(again.df, fs.df.filter(pl.col("split") == "test"), again.columns(["metadata", "engineered", "embedding"]))
    with pytest.raises(DataError, match="no PCA for this backbone"):
        build_features(new, FeaturesConfig(), FakeStore(new.df["image_id"].to_list(), {"other": emb[:6]}), fitted=fitted)

    # the CLI applies it too
    new.write(tmp_path / "new.parquet")
    res = CliRunner().invoke(cli, ["features", "build", str(tmp_path / "new.parquet"), "--out", str(tmp_path / "new_f.parquet"),
                                   "--no-patient", "--no-embedding", "--fitted", str(tmp_path / "features.transform.npz")])
    assert res.exit_code == 0, res.output
    assert "age_approx" not in FeatureSet.read(tmp_path / "new_f.parquet").groups


def test_cli_build(tmp_path):
    lesions = random_tbp_table().write(tmp_path / "lesions.parquet")
    out = tmp_path / "features.parquet"
    res = CliRunner().invoke(cli, ["features", "build", str(lesions), "--out", str(out), "--no-patient"])
    assert res.exit_code == 0, res.output
    fs = FeatureSet.read(out)
    assert set(fs.groups.values()) == {"metadata", "engineered"} and "wrote 48 rows" in res.output


def test_image_without_embedding_gets_null_embedding_features():
    table = random_tbp_table()
    ids = table.df["image_id"].to_list()
    emb = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)

    class Partial(FakeStore):
        """Like EmbeddingStore: lists its ids and refuses to read one it does not have."""

        def image_ids(self, backbone):
            return ids[1:]

        def read(self, backbone, image_ids):
            assert ids[0] not in image_ids
            return super().read(backbone, image_ids)

    fs = build_features(table, FeaturesConfig(), Partial(ids, {"b": emb}), pca_components=3)
    first = fs.df.row(0, named=True)
    assert first["emb_b_pc00"] is None and first["emb_b_patient_cos_dist"] is None
    assert fs.df["emb_b_pc00"].null_count() == 1 and fs.df["emb_b_patient_cos_dist"].null_count() == 1


def test_image_features_auto_follow_the_shipped_masks():
    """``[features] image = "auto"``: on when any row has a mask, off otherwise; a bad value is a ConfigError."""
    from dermstack.errors import ConfigError
    from dermstack.features.build import image_enabled

    with_mask = pl.DataFrame({"image_id": ["a", "b"], "mask_ref": [None, "/m/b.png"]})
    without = pl.DataFrame({"image_id": ["a", "b"], "mask_ref": [None, None]}, schema={"image_id": pl.String, "mask_ref": pl.String})
    assert image_enabled("auto", with_mask) and not image_enabled("auto", without)
    assert image_enabled(True, without) and not image_enabled(False, with_mask)
    with pytest.raises(ConfigError, match="auto"):
        image_enabled("yes", with_mask)
