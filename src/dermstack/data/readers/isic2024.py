"""ISIC 2024 (SLICE-3D) in the Kaggle layout: ``{train,test}-metadata.csv`` + ``{train,test}-image.hdf5``.

Vectorised throughout: 401,059 training rows read in seconds (polars CSV, one pass over the HDF5 keys).
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dermstack.data.readers.build import IMAGE_PROBLEM, finish, resolve_images
from dermstack.data.readers.csvio import RowProblems, check_ids, parse_flags, parse_numbers, read_csv, require_columns
from dermstack.data.readers.files import split_files
from dermstack.data.readers.imagecheck import hdf5_problems
from dermstack.data.readers.vocab import ANATOM_SITE_GENERAL, SEX, check_vocabulary, diagnosis_label
from dermstack.data.report import IngestReport
from dermstack.data.table import HASH_COLUMN, LesionTable, TableMeta, h5_ref

#: Text columns of the Kaggle ``train-metadata.csv`` (every other known column is numeric).
TEXT_COLUMNS = [
    "isic_id", "patient_id", "sex", "anatom_site_general", "image_type", "tbp_tile_type", "tbp_lv_location",
    "tbp_lv_location_simple", "attribution", "copyright_license", "lesion_id", "iddx_full", "iddx_1", "iddx_2",
    "iddx_3", "iddx_4", "iddx_5", "mel_mitotic_index",
]
NUMERIC_COLUMNS = [
    "age_approx", "clin_size_long_diam_mm", "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C",
    "tbp_lv_Cext", "tbp_lv_H", "tbp_lv_Hext", "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2", "tbp_lv_area_perim_ratio",
    "tbp_lv_color_std_mean", "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB",
    "tbp_lv_deltaLBnorm", "tbp_lv_eccentricity", "tbp_lv_minorAxisMM", "tbp_lv_nevi_confidence",
    "tbp_lv_norm_border", "tbp_lv_norm_color", "tbp_lv_perimeterMM", "tbp_lv_radial_color_std_max", "tbp_lv_stdL",
    "tbp_lv_stdLExt", "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z",
    "mel_thick_mm", "tbp_lv_dnn_lesion_confidence",
]
KNOWN_COLUMNS = {*TEXT_COLUMNS, *NUMERIC_COLUMNS, "target"}
REQUIRED = ["isic_id", "patient_id"]
SPLIT_FILES = {"train": ("train-metadata.csv", "train-image.hdf5"), "test": ("test-metadata.csv", "test-image.hdf5")}


def read_isic2024(path: Path, report: IngestReport) -> LesionTable:
    """Read whichever of the train/test metadata files the folder ``path`` holds, or the one ``path`` is;
    images are checked, not decoded."""
    path, parts = split_files(path, {split: csv for split, (csv, _) in SPLIT_FILES.items()}, "Kaggle ISIC 2024")
    frames, seen = [], pl.Series("isic_id", [], pl.String)
    for split, csv in parts.items():
        df = _read_split(csv, split, path / SPLIT_FILES[split][1], seen, report)
        seen = pl.concat([seen, df["isic_id"]])
        frames.append(df)
    df = pl.concat(frames, how="diagonal_relaxed")
    train_only = []
    if len(frames) == 2:
        train_only = sorted(set(frames[0].columns) - set(frames[1].columns))
        report.note(f"columns absent from test-metadata.csv are not features: {', '.join(train_only)}")
    df = df.with_columns(pl.col("isic_id").alias("image_id"))
    meta = TableMeta(dataset="isic2024")
    return finish(df, report, meta, known=KNOWN_COLUMNS | {"image_id", "split", "label", "image_ref"}, not_features=train_only)


def _read_split(csv: Path, split: str, h5: Path, seen: pl.Series, report: IngestReport) -> pl.DataFrame:
    df = read_csv(csv, report=report)
    require_columns(df, REQUIRED + (["target"] if split == "train" else []), csv)
    problems = RowProblems(csv, report, "isic_id")
    check_ids(df, "isic_id", problems)
    problems.add(df, pl.col("isic_id").is_in(seen.implode()), "isic_id", "isic_id already read from the train file")
    df = parse_numbers(df, NUMERIC_COLUMNS, problems)
    if "target" in df.columns:
        problems.add(df, pl.col("target").is_null(), "target", "empty target")
        df = parse_flags(df, "target", problems)
    df = problems.apply(df)
    df = check_vocabulary(df, "sex", SEX, report)
    df = check_vocabulary(df, "anatom_site_general", ANATOM_SITE_GENERAL, report)
    df = df.with_columns(pl.lit(split).alias("split"), diagnosis_label(df, ["iddx_3", "iddx_2", "iddx_1"]))
    if not h5.is_file():
        report.note(f"{h5.name} not found: {df.height} {split} rows read as metadata only (image_ref empty)")
        return df.with_columns(pl.lit(None, pl.String).alias("image_ref"), pl.lit(None, pl.String).alias(HASH_COLUMN))
    ids = df["isic_id"].to_list()
    present, bad, digests = hdf5_problems(h5, ids)
    prefix = h5_ref(h5, "")
    df = df.with_columns(
        pl.when(pl.Series(present)).then(pl.lit(prefix) + pl.col("isic_id")).alias("image_ref"),
        pl.col("isic_id").replace_strict(bad, default=None, return_dtype=pl.String).alias(IMAGE_PROBLEM),
        pl.col("isic_id").replace_strict(digests, default=None, return_dtype=pl.String).alias(HASH_COLUMN),
    )
    df = df.with_columns(pl.format("{} ({})", pl.col(IMAGE_PROBLEM), pl.col("image_ref")).alias(IMAGE_PROBLEM))
    return resolve_images(df, problems, report)

