"""Synthetic ISIC 2024 generator: real schema and HDF5 layout, determinism, patients, positives, signal."""
from __future__ import annotations

import io

import h5py
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from PIL import Image

from dermstack.data.images import read_image_bytes
from dermstack.data.synth import draw_isic2024, load_marginals, synthesize_isic2024
from dermstack.data.synth_render import render_chunk, texture_bank
from dermstack.data.table import h5_ref
from dermstack.metrics import partial_auc, roc_auc


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synthesize_isic2024(out, lesions=2000, test_lesions=60, image_size=32, seed=3, workers=1)
    return out, summary


def _csv(path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def test_columns_and_formats_match_the_real_files(synth_dir, shared_data):
    out, _ = synth_dir
    real_train = _csv(shared_data / "isic2024-train-sample/train-metadata.csv")
    real_test = _csv(shared_data / "isic2024-sample/test-metadata.csv")
    train, test = _csv(out / "train-metadata.csv"), _csv(out / "test-metadata.csv")
    assert train.columns == real_train.columns
    assert test.columns == real_test.columns
    assert _csv(out / "sample_submission.csv").columns == ["isic_id", "target"]
    assert set(test["isic_id"]) == set(_csv(out / "sample_submission.csv")["isic_id"])
    # same text patterns as the real file, column by column
    for col, pattern in {"isic_id": r"^ISIC_\d{7}$", "patient_id": r"^IP_\d{7}$", "age_approx": r"^\d{2}\.0$",
                         "tbp_lv_symm_2axis_angle": r"^\d+\.0$", "clin_size_long_diam_mm": r"^\d+\.\d{1,2}$",
                         "lesion_id": r"^IL_\d{7}$"}.items():
        for df in (real_train, train):
            assert df[col].drop_nulls().str.contains(pattern).all(), col
    for col in ("sex", "anatom_site_general", "tbp_lv_location", "tbp_lv_location_simple", "attribution",
                "copyright_license", "tbp_tile_type", "iddx_1"):
        assert set(train[col].drop_nulls()) <= set(real_train[col].drop_nulls()), col
    # numbers written with 7 or 15 significant digits, in both proportions
    digits = train["tbp_lv_A"].str.replace_all(r"[-.]", "").str.strip_chars_start("0").str.len_chars()
    assert set(digits.unique()) <= set(range(1, 16)) and 0.3 < (digits > 8).mean() < 0.7


def test_packaged_marginals_carry_the_real_schema(shared_data):
    real = _csv(shared_data / "isic2024-train-sample/train-metadata.csv")
    assert load_marginals()["train_columns"] == real.columns


def test_hdf5_layout_matches_kaggle_and_decodes(synth_dir, shared_data):
    out, summary = synth_dir
    with h5py.File(shared_data / "isic2024-sample/test-image.hdf5", "r") as real:
        ref = real[next(iter(real))]
        real_kind, real_shape = ref.dtype.kind, ref.shape
    train = _csv(out / "train-metadata.csv")
    with h5py.File(out / "train-image.hdf5", "r") as f:
        assert sorted(f) == sorted(train["isic_id"])
        ds = f[train["isic_id"][0]]
        assert (ds.dtype.kind, ds.shape) == (real_kind, real_shape)
    for isic_id in train["isic_id"].head(20):
        img = Image.open(io.BytesIO(read_image_bytes(h5_ref(out / "train-image.hdf5", isic_id))))
        assert img.format == "JPEG" and img.size == (32, 32)
        img.load()
    assert summary.image_bytes > 2000 * 200


def test_same_seed_same_bytes_any_worker_count(tmp_path, monkeypatch):
    monkeypatch.setattr("dermstack.data.synth_render.CHUNK", 64)  # several chunks, so the pool really runs
    a = synthesize_isic2024(tmp_path / "a", lesions=300, test_lesions=10, image_size=16, seed=7, workers=1)
    synthesize_isic2024(tmp_path / "b", lesions=300, test_lesions=10, image_size=16, seed=7, workers=2)
    synthesize_isic2024(tmp_path / "c", lesions=300, test_lesions=10, image_size=16, seed=8, workers=1)
    for name in ("train-metadata.csv", "test-metadata.csv", "sample_submission.csv", "train-image.hdf5", "test-image.hdf5"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a/train-metadata.csv").read_bytes() != (tmp_path / "c/train-metadata.csv").read_bytes()
    assert a.n_train == 300 and a.n_test == 10


def test_patients_have_many_lesions_and_consistent_attributes(synth_dir):
    out, summary = synth_dir
    train = pl.read_csv(out / "train-metadata.csv")
    test = pl.read_csv(out / "test-metadata.csv")
    per_patient = train.group_by("patient_id").len()["len"]
    assert per_patient.mean() > 10 and per_patient.max() > 3 * per_patient.median()  # heavy tail
    assert per_patient.len() == summary.n_patients_train
    for col in ("age_approx", "sex", "attribution", "copyright_license", "tbp_tile_type"):
        assert train.group_by("patient_id").agg(pl.col(col).n_unique())[col].max() == 1, col
    assert not set(train["patient_id"]) & set(test["patient_id"])
    # each patient has its own skin colour: patient means of Lext vary far more than chance allows
    g = train.group_by("patient_id").agg(pl.col("tbp_lv_Lext").mean().alias("m"), pl.len().alias("n"))
    within = train["tbp_lv_Lext"].var()
    assert (g["m"].var() / (within / g["n"].mean())) > 5
    # derived columns agree with the ones they derive from, like the real data's
    np.testing.assert_allclose(train["tbp_lv_C"], np.hypot(train["tbp_lv_A"], train["tbp_lv_B"]), rtol=1e-5)
    np.testing.assert_allclose(train["tbp_lv_deltaL"], train["tbp_lv_L"] - train["tbp_lv_Lext"], atol=1e-4)


def test_positive_rate_and_label_provenance():
    splits = draw_isic2024(50_000, test_lesions=0, seed=1, positive_rate=0.004)
    df = splits["train"].frame.with_columns(pl.col("target").cast(pl.Int8))
    pos, neg = df.filter(pl.col("target") == 1), df.filter(pl.col("target") == 0)
    assert pos.height == 200 == splits["train"].n_positive
    assert (pos["iddx_1"] == "Malignant").all() and (neg["iddx_1"] == "Benign").all()
    assert pos["lesion_id"].null_count() == 0 and 0.02 < neg["lesion_id"].is_not_null().mean() < 0.12
    assert pos.filter(pl.col("mel_thick_mm").is_not_null())["iddx_full"].str.contains("Melanoma").all()
    assert neg["mel_thick_mm"].null_count() == neg.height
    assert draw_isic2024(500, seed=1, positive_rate=0.001)["train"].n_positive == 1  # at least one


def test_metadata_gbdt_beats_random_but_no_column_separates():
    import lightgbm as lgb

    frame = draw_isic2024(20_000, seed=2, positive_rate=0.01)["train"].frame
    numeric = [c for c in frame.columns if c.startswith("tbp_lv_") and c not in
               ("tbp_lv_location", "tbp_lv_location_simple", "tbp_lv_dnn_lesion_confidence")] + ["age_approx"]
    X = frame.select(pl.col(numeric).cast(pl.Float64)).to_numpy()
    y = frame["target"].cast(pl.Int8).to_numpy()
    single = [roc_auc(y, np.nan_to_num(X[:, j], nan=np.nanmedian(X[:, j]))) for j in range(X.shape[1])]
    assert max(max(a, 1 - a) for a in single) < 0.85
    patients = frame["patient_id"].to_numpy()
    fold = pl.Series(np.unique(patients, return_inverse=True)[1] % 3).to_numpy()
    oof = np.zeros(len(y))
    for k in range(3):
        model = lgb.LGBMClassifier(n_estimators=80, learning_rate=0.05, num_leaves=15, colsample_bytree=0.5,
                                   subsample=0.8, subsample_freq=1, verbose=-1, n_jobs=1)
        model.fit(X[fold != k], y[fold != k])
        oof[fold == k] = model.predict_proba(X[fold == k])[:, 1]
    assert partial_auc(y, oof) > 0.06  # random is 0.02


def test_positive_images_look_different():
    split = draw_isic2024(4000, seed=4, positive_rate=0.05)["train"]
    y = split.frame["target"].cast(pl.Int8).to_numpy()
    idx = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:200]])
    images = render_chunk(split.looks.take(idx), 32, 0, 0, 0, texture_bank(32, 0))
    blotched = []  # share of lesion pixels bluer than the skin: variegated lesions have blue-grey blotches
    for data in images:
        rgb = np.asarray(Image.open(io.BytesIO(data)), float)
        grey, blue = rgb.mean(-1), rgb[..., 2] - rgb[..., 0]
        lesion = grey < np.median(grey) - 15
        lesion = lesion if lesion.sum() >= 3 else grey <= np.percentile(grey, 5)
        blotched.append((blue[lesion] > blue[~lesion].mean() + 10).mean())
    assert roc_auc(y[idx], np.array(blotched)) > 0.65


def test_cli_writes_the_layout(tmp_path):
    from dermstack.cli import cli

    result = CliRunner().invoke(cli, ["data", "synth", "--lesions", "120", "--test-lesions", "5",
                                       "--image-size", "16", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "120 training lesions" in result.output
    assert {p.name for p in tmp_path.iterdir()} == {"train-metadata.csv", "test-metadata.csv", "train-image.hdf5",
                                                    "test-image.hdf5", "sample_submission.csv"}
