"""Every image of a lesion embedded: synthetic MILK10k pairs (dermoscopic + clinical close-up JPEGs in
the MILK10k layout), one store group per view, one feature group per view plus the cross-view
similarity, the linear probe per (backbone, view), and `predict` on new lesions."""
from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest
from PIL import Image

from dermstack.config import FeaturesConfig, RunConfig
from dermstack.data.readers import ingest
from dermstack.data.table import LesionTable, image_views
from dermstack.extract import EmbeddingStore, ExtractSettings, extract_embeddings
from dermstack.features.build import build_features
from dermstack.features.featureset import FeatureSet
from dermstack.linear.design import read_rows
from dermstack.outputs.predict import predict_run
from dermstack.run import Run
from extract_fixtures import TEST_MODEL, lesion_like

N_LESIONS, N_TEST = 36, 4
#: lesions whose clinical close-up is absent (dermoscopic image only)
NO_CLINICAL = 3
CLIN = f"{TEST_MODEL}@clinical"


@pytest.fixture(scope="module")
def milk(tmp_path_factory, shared_data):
    """The first N_LESIONS training and N_TEST test lesions of the dev MILK10k CSVs, with small JPEGs
    for both images of each (the last NO_CLINICAL training lesions lack the close-up)."""
    root = tmp_path_factory.mktemp("milk10k")
    src = shared_data / "milk10k-dev"
    rng = np.random.default_rng(0)
    for name, n in (("MILK10k_Training_Metadata.csv", N_LESIONS), ("MILK10k_Test_Metadata.csv", N_TEST)):
        meta = pl.read_csv(src / name, infer_schema_length=None)
        lesions = meta["lesion_id"].unique(maintain_order=True).head(n)
        meta = meta.filter(pl.col("lesion_id").is_in(lesions.implode()))
        meta.write_csv(root / name)
        skip = set(lesions.tail(NO_CLINICAL).to_list()) if name.startswith("MILK10k_Training") else set()
        for lesion, kind, isic in meta.select("lesion_id", "image_type", "isic_id").iter_rows():
            if kind.startswith("clinical") and lesion in skip:
                continue
            Image.fromarray(lesion_like(rng, 48, 40)).save(root / f"{isic}.jpg", quality=85)
    gt = pl.read_csv(src / "MILK10k_Training_GroundTruth.csv")
    gt.join(pl.read_csv(root / "MILK10k_Training_Metadata.csv").select("lesion_id").unique(), on="lesion_id").write_csv(
        root / "MILK10k_Training_GroundTruth.csv")
    return root


def settings(w) -> ExtractSettings:
    return ExtractSettings(image_size=32, batch_size=8, workers=0, precision="fp32", weights={TEST_MODEL: str(w)})


@pytest.fixture(scope="module")
def embedded(milk, test_weights, tmp_path_factory):
    table, _ = ingest("milk10k", milk)
    out = tmp_path_factory.mktemp("emb") / "emb.h5"
    report = extract_embeddings(table, [TEST_MODEL], out, settings(test_weights))
    return table, out, report


def test_the_reader_has_two_views_and_extraction_embeds_each(embedded, test_weights):
    table, out, report = embedded
    assert image_views(table.df) == {"": "image_ref", "clinical": "image_ref_clinical"}
    n = table.df.height
    assert table.df["image_ref_clinical"].null_count() == NO_CLINICAL
    store = EmbeddingStore(out)
    assert store.backbones() == [TEST_MODEL, CLIN]
    assert [(b.backbone, b.images, b.embedded) for b in report.backbones] == [(TEST_MODEL, n, n), (CLIN, n - NO_CLINICAL, n - NO_CLINICAL)]
    assert store.info(CLIN)["view"] == "clinical" and store.info(TEST_MODEL)["view"] == ""
    assert store.is_complete(CLIN) and len(store.image_ids(CLIN)) == n - NO_CLINICAL
    ids = table.df.filter(pl.col("image_ref_clinical").is_not_null())["image_id"].head(3).to_list()
    assert not np.allclose(store.read(TEST_MODEL, ids), store.read(CLIN, ids))  # two different images
    again = extract_embeddings(table, [TEST_MODEL], out, settings(test_weights))  # resumable as before
    assert [(b.already_done, b.embedded) for b in again.backbones] == [(n, 0), (n - NO_CLINICAL, 0)]


def test_features_get_a_group_per_view_and_the_cross_view_similarity(embedded, caplog):
    table, out, _ = embedded
    cfg = FeaturesConfig(metadata=True, engineered=False, patient=False, image=False, embedding=True)
    with caplog.at_level(logging.WARNING, logger="dermstack"):
        fs = build_features(table, cfg, EmbeddingStore(out), pca_components=3)
    emb = [c for c, g in fs.groups.items() if g == "embedding"]
    prefix = "emb_test_efficientnet"
    assert emb == [f"{prefix}_pc{i:02d}" for i in range(3)] + [f"{prefix}_clinical_pc{i:02d}" for i in range(3)] + [
        f"{prefix}_clinical_cos"]
    missing = table.df.filter(pl.col("image_ref_clinical").is_null())["image_id"].to_list()
    rows = fs.df.filter(pl.col("image_id").is_in(missing))
    assert rows[f"{prefix}_clinical_pc00"].null_count() == NO_CLINICAL and rows[f"{prefix}_clinical_cos"].null_count() == NO_CLINICAL
    assert rows[f"{prefix}_pc00"].null_count() == 0
    assert fs.df[f"{prefix}_clinical_cos"].null_count() == NO_CLINICAL
    assert any(f"{NO_CLINICAL} rows have no clinical image" in r.getMessage() for r in caplog.records)
    store = EmbeddingStore(out)
    one = table.df.filter(pl.col("image_ref_clinical").is_not_null())["image_id"][0]
    a, b = store.read(TEST_MODEL, [one])[0], store.read(CLIN, [one])[0]
    cos = fs.df.filter(pl.col("image_id") == one)[f"{prefix}_clinical_cos"][0]
    assert cos == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-4)


def test_the_linear_probe_reads_each_view_in_full(embedded):
    table, out, _ = embedded
    ids = table.df["image_id"].to_list()
    rows = read_rows(pl.DataFrame({"image_id": ids}), [], EmbeddingStore(out), [TEST_MODEL, CLIN], ids)
    assert list(rows.embeddings) == [TEST_MODEL, CLIN]
    assert np.isnan(rows.embeddings[CLIN]).all(axis=1).sum() == NO_CLINICAL
    assert not np.isnan(rows.embeddings[TEST_MODEL]).any()


def test_a_view_column_without_images_gives_no_features_of_that_view(embedded, test_weights, tmp_path, caplog):
    table, _, _ = embedded
    bare = LesionTable(table.df.with_columns(pl.lit(None, pl.String).alias("image_ref_clinical")), table.meta)
    extract_embeddings(bare, [TEST_MODEL], tmp_path / "e.h5", settings(test_weights))
    store = EmbeddingStore(tmp_path / "e.h5")
    assert store.backbones() == [TEST_MODEL, CLIN] and store.image_ids(CLIN) == []
    cfg = FeaturesConfig(metadata=False, engineered=False, patient=False, image=False, embedding=True)
    with caplog.at_level(logging.WARNING, logger="dermstack"):
        fs = build_features(bare, cfg, store, pca_components=2)
    assert list(fs.groups) == ["emb_test_efficientnet_pc00", "emb_test_efficientnet_pc01"]
    assert any("no features of this view" in r.getMessage() for r in caplog.records)


RUN = """
[data]
format = "milk10k"
path = "{data}"
task = "binary"

[cv]
n_splits = 3

[extract]
backbones = ["{model}"]
image_size = 32
pca_components = 3
weights = {{ {model} = "{weights}" }}

[features]
patient = false
image = false

[[models]]
kind = "lightgbm"
params = {{ n_estimators = 10, threads = 1, min_data_in_leaf = 3 }}

[[models]]
kind = "logistic"

[ensemble]
method = "mean"
"""


@pytest.mark.slow
def test_a_run_and_predict_name_the_views(milk, test_weights, tmp_path):
    import json

    (tmp_path / "run.toml").write_text(RUN.format(data=milk, model=TEST_MODEL, weights=test_weights))
    run_dir = tmp_path / "out"
    Run(RunConfig.from_toml(tmp_path / "run.toml"), run_dir).execute()
    fs = FeatureSet.read(run_dir / "features.parquet")
    assert "emb_test_efficientnet_clinical_pc00" in fs.groups and "emb_test_efficientnet_clinical_cos" in fs.groups
    probe = json.loads((run_dir / "models" / "logistic" / "model.json").read_text())
    assert f"embedding:{CLIN}" in pl.read_parquet(run_dir / "models" / "logistic" / "importance.parquet")["feature"].to_list()
    assert CLIN in json.dumps(probe)
    table = LesionTable.read(run_dir / "lesions.parquet")
    got = predict_run(run_dir, LesionTable(table.test, table.meta)).filter(pl.col("model") == "mean").sort("image_id")
    want = pl.read_parquet(run_dir / "test_predictions.parquet").filter(pl.col("model") == "mean").sort("image_id")
    from dermstack.reports.build import ReportSettings, build_report

    html = build_report(run_dir, tmp_path / "report", settings=ReportSettings(n_boot=10)).read_text()
    assert f"embedding:{CLIN}" in html and "emb_test_efficientnet_clinical_" in html  # SHAP names the view
    assert got.height == want.height == N_TEST
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-6)
