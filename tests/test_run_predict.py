"""A whole `dermstack run` (synthetic ISIC 2024, extraction, every feature group, LightGBM) and
`predict` on its test lesions from the saved models and fitted feature transform only."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from dermstack.config import RunConfig
from dermstack.data.table import LesionTable
from dermstack.features.featureset import FeatureSet
from dermstack.features.transform import FeatureTransform
from dermstack.outputs.predict import predict_run
from lesion_tables import assert_features_equal
from tiny_runs import booster, embedded


def whole_run(weights) -> dict:
    """400 synthetic lesions with embeddings of the test backbone, every feature group, one LightGBM."""
    return {"data": {"lesions": 400, "test_lesions": 30, "positive_rate": 0.08, "image_size": 32}, "extract": embedded(weights),
            "features": {"metadata": True, "engineered": True, "patient": True, "embedding": True},
            "models": [booster("lightgbm", 30, seeds=[0])], "report": {"enabled": False}}


@pytest.fixture(scope="module")
def run_dir(tiny, test_weights):
    return tiny.run(**whole_run(test_weights))


def test_run_writes_the_fitted_transform_beside_the_features(run_dir):
    fs = FeatureSet.read(run_dir / "features.parquet")
    t = FeatureTransform.read(FeatureTransform.path_for(run_dir / "features.parquet"))
    prefix = next(iter(t.pca))
    assert t.pca[prefix].components.shape[0] == 4 and fs.transform is not None
    assert [c for c, g in fs.groups.items() if g == "embedding"] == [f"{prefix}_pc{i:02d}" for i in range(4)]


def test_predict_reproduces_the_runs_test_scores_from_new_rows_alone(run_dir):
    table = LesionTable.read(run_dir / "lesions.parquet")
    new = LesionTable(table.test, table.meta)
    got = predict_run(run_dir, new).filter(pl.col("model") == "lightgbm").sort("image_id")
    want = pl.read_parquet(run_dir / "test_predictions.parquet").filter(pl.col("model") == "lightgbm").sort("image_id")
    assert got.height == new.df.height == want.height
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-6)



def test_new_rows_get_the_features_the_run_gave_its_test_rows(run_dir, tmp_path):
    """Same leaky-column decisions, same PCA (not refitted), same patient context (the new rows only)."""
    from dermstack.outputs.predict import _features, as_run_rows

    table = LesionTable.read(run_dir / "lesions.parquet")
    cfg = RunConfig.from_toml(run_dir / "config.toml")
    new = LesionTable(table.test, table.meta)
    fs = _features(cfg, run_dir, as_run_rows(table, new), new.df["image_id"].to_list(), tmp_path)
    run_fs = FeatureSet.read(run_dir / "features.parquet")
    assert fs.groups == run_fs.groups
    assert_features_equal(fs.df, run_fs.df.filter(pl.col("split") == "test"), fs.feature_columns)


def test_new_images_without_masks_of_a_mask_run_are_a_warning(tiny, shared_data, caplog):
    """A run whose image features came from PH2's masks scores new images without masks on an automatic
    segmentation: said as a warning (the scores move), not only the reader's INFO note."""
    from dermstack.outputs.predict import auto_segmented

    data = {"format": "ph2", "path": str(shared_data / "ph2-dev"), "task": "binary", "target": "malignant"}
    run = tiny.run(data=data, cv={"n_splits": 3}, features={"patient": False, "image": "auto"}, report={"enabled": False},
                   models=[booster("lightgbm", 10, params={"min_child_samples": 3, "num_leaves": 4})])
    table = LesionTable.read(run / "lesions.parquet")
    new = table.df.head(3).with_columns(pl.col("image_id") + "_new", pl.lit(None, pl.String).alias("mask_ref"),
                                        pl.lit("test").alias("split"))
    cfg = RunConfig.from_toml(run / "config.toml")
    assert auto_segmented(cfg, table.df, new) == 3 and auto_segmented(cfg, table.df, table.df) == 0
    no_masks = table.df.with_columns(pl.lit(None, pl.String).alias("mask_ref"))  # a run that segmented its own too
    assert auto_segmented(replace(cfg, features=replace(cfg.features, image=True)), no_masks, new) == 0
    with caplog.at_level("WARNING"):
        predict_run(run, LesionTable(new, table.meta))
    assert any(r.levelname == "WARNING" and "3 of 3 new rows have an image but no mask" in r.message
               and "computed from its masks" in r.message and "may differ" in r.message for r in caplog.records)
