"""MILK10k (ISIC 2025): per-image metadata (a dermoscopic and a clinical close-up image per lesion),
one-hot ground truth over 11 classes, test metadata, and images ``<isic_id>.jpg`` in any sub-folder.

One row per lesion (submissions are per lesion): image_id = lesion_id, image_ref = the
dermoscopic image, image_ref_clinical = the close-up; per-image columns (MONET concept scores,
isic_id, licence, manipulation) get the suffix ``_derm`` / ``_clin``. A ``Supplement`` file (extra
diagnosis detail) is label provenance: its columns are prefixed ``supplement_`` and never features.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dermstack.data.readers.build import finish
from dermstack.data.readers.csvio import FILE, ROW, RowProblems, check_ids, parse_flags, parse_numbers, read_csv, require_columns
from dermstack.data.readers.files import attach_files, split_files
from dermstack.data.readers.vocab import IMAGE_TYPE, MILK_SITES, SEX, check_vocabulary, map_values
from dermstack.data.report import IngestReport
from dermstack.data.table import CLASS_PREFIX, LesionTable, TableMeta

CLASSES = ["AKIEC", "BCC", "BEN_OTH", "BKL", "DF", "INF", "MAL_OTH", "MEL", "NV", "SCCKA", "VASC"]
MALIGNANT = ["AKIEC", "BCC", "MAL_OTH", "MEL", "SCCKA"]
FILES = {"train": "MILK10k_Training_Metadata.csv", "test": "MILK10k_Test_Metadata.csv"}
GROUND_TRUTH = "MILK10k_Training_GroundTruth.csv"
SUPPLEMENT = "MILK10k_Training_Supplement.csv"
#: image_type -> column suffix.
VIEWS = {IMAGE_TYPE["dermoscopic"]: "_derm", IMAGE_TYPE["clinical_close_up"]: "_clin"}
LESION_COLUMNS = ["age_approx", "sex", "skin_tone_class", "site"]
PER_IMAGE_ADMIN = ["isic_id", "attribution", "copyright_license", "image_manipulation"]


def read_milk10k(path: Path, report: IngestReport) -> LesionTable:
    """``path`` is the folder with the MILK10k CSVs (images, if any, anywhere below it), or one of them (that split alone)."""
    path, parts = split_files(path, FILES, "MILK10k")
    frames = [_lesions(csv, split, report) for split, csv in parts.items()]
    df = pl.concat(frames, how="diagonal_relaxed")
    if "train" in parts:
        df = _join_ground_truth(df, path / GROUND_TRUTH, parts["train"], report)
    report.rows_read = df.height + len(report.skipped)
    df = map_values(df, "site", "anatom_site_general", MILK_SITES, report)
    if (path / SUPPLEMENT).is_file():
        supplement = read_csv(path / SUPPLEMENT, report=report, count=False).drop(ROW)
        supplement = supplement.rename({c: f"supplement_{c}" for c in supplement.columns if c != "lesion_id"})
        df = df.join(supplement, on="lesion_id", how="left")
        report.note(f"{SUPPLEMENT}: label provenance columns joined (never features)")
    views = {"image_ref": ("isic_id_derm", ".jpg"), "image_ref_clinical": ("isic_id_clin", ".jpg")}
    problems = RowProblems(parts.get("train", next(iter(parts.values()))), report, "image_id")
    df = attach_files(df, path, problems, report, refs=views)
    not_features = [c for c in df.columns if any(c.startswith(a) for a in PER_IMAGE_ADMIN)]
    meta = TableMeta(dataset="milk10k", classes=CLASSES, positive_classes=MALIGNANT)
    return finish(df, report, meta, not_features=not_features)


def _lesions(csv: Path, split: str, report: IngestReport) -> pl.DataFrame:
    """One row per lesion from a per-image metadata file."""
    df = read_csv(csv, report=report, count=False)
    require_columns(df, ["lesion_id", "image_type", "isic_id"], csv)
    report.note(f"{csv.name}: {df.height} image rows, {df['lesion_id'].n_unique()} lesions")
    problems = RowProblems(csv, report, "lesion_id")
    problems.add(df, pl.col("lesion_id").is_null(), "lesion_id", "empty lesion_id")
    problems.add(df, ~pl.col("image_type").is_in(list(VIEWS)), "image_type",
                 pl.format("image_type '{}' is not " + " / ".join(VIEWS), pl.col("image_type")))
    first = pl.col(ROW).min().over("lesion_id", "image_type")
    problems.add(df, pl.col(ROW) != first, "image_type", pl.format("second {} image of the lesion (first at row {})",
                                                                    pl.col("image_type"), first), row_only=True)
    check_ids(df, "isic_id", problems)
    monet = [c for c in df.columns if c.startswith("MONET_")]
    df = problems.apply(parse_numbers(df, ["age_approx", "skin_tone_class", *monet], problems))
    df = check_vocabulary(df, "sex", SEX, report)
    per_image = [c for c in df.columns if c.startswith("MONET_") or c in PER_IMAGE_ADMIN]
    lesion = df.sort("lesion_id", "image_type", descending=[False, True]).group_by("lesion_id", maintain_order=True).agg(
        pl.col(ROW).min(), *[pl.col(c).first() for c in LESION_COLUMNS if c in df.columns],
        *[(pl.col(c).n_unique() > 1).alias(f"__differs_{c}") for c in LESION_COLUMNS if c in df.columns],
    ).sort(ROW)
    differs = [c for c in lesion.columns if c.startswith("__differs_")]
    if n := lesion.select(pl.any_horizontal(differs).sum()).item() if differs else 0:
        report.note(f"{csv.name}: {n} lesions whose two images disagree on {', '.join(LESION_COLUMNS)}: the dermoscopic row is used")
    for image_type, suffix in VIEWS.items():
        view = df.filter(pl.col("image_type") == image_type).select("lesion_id", *[pl.col(c).alias(c + suffix) for c in per_image])
        lesion = lesion.join(view, on="lesion_id", how="left")
    return lesion.drop(differs).with_columns(pl.col("lesion_id").alias("image_id"), pl.lit(split).alias("split"),
                                             pl.lit(str(csv)).alias(FILE),
                                             pl.lit(IMAGE_TYPE["dermoscopic"]).alias("image_type"))


def _join_ground_truth(df: pl.DataFrame, csv: Path, metadata: Path, report: IngestReport) -> pl.DataFrame:
    """Add ``y_<CLASS>``, label and target to training lesions; lesions on one side only are skipped."""
    gt = read_csv(csv, report=report, count=False)
    require_columns(gt, ["lesion_id", *CLASSES], csv)
    problems = RowProblems(csv, report, "lesion_id")
    check_ids(gt, "lesion_id", problems)
    for c in CLASSES:
        gt = parse_flags(gt, c, problems)
    problems.add(gt, pl.sum_horizontal(CLASSES) != 1, None, "one-hot row does not have exactly one class")
    skipped = pl.Series([s.id for s in report.skipped], dtype=pl.String).implode()
    problems.add(gt, ~pl.col("lesion_id").is_in(df["lesion_id"].implode()) & ~pl.col("lesion_id").is_in(skipped),
                 "lesion_id", f"labelled lesion has no rows in {metadata.name}")
    gt = problems.apply(gt)
    gt = gt.select("lesion_id", *[pl.col(c).alias(CLASS_PREFIX + c) for c in CLASSES],
                   pl.concat_str([pl.when(pl.col(c) == 1).then(pl.lit(c)) for c in CLASSES], ignore_nulls=True).alias("label"))
    gt = gt.with_columns(pl.col("label").is_in(MALIGNANT).cast(pl.Int8).alias("target"))
    orphans = RowProblems(metadata, report, "lesion_id")
    orphans.add(df, (pl.col("split") == "train") & ~pl.col("lesion_id").is_in(gt["lesion_id"].implode()),
                "lesion_id", f"training lesion has no row in {csv.name}")
    df = orphans.apply(df)
    return df.join(gt, on="lesion_id", how="left")

