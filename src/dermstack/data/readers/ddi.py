"""Diverse Dermatology Images: ``ddi_metadata.csv`` (+ optional images next to it).

image_id = DDI_file; target = malignant (TRUE/FALSE); label = disease (label provenance);
skin_tone is the Fitzpatrick group 12 (I-II), 34 (III-IV) or 56 (V-VI), a feature and the
fairness group. The leading unnamed column is the pandas index the file was saved with.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dermstack.data.readers.build import finish
from dermstack.data.readers.csvio import RowProblems, check_ids, parse_flags, read_csv, require_columns
from dermstack.data.readers.files import attach_files
from dermstack.data.readers.vocab import IMAGE_TYPE
from dermstack.data.report import IngestReport
from dermstack.data.table import LesionTable, TableMeta

SKIN_TONES = ["12", "34", "56"]
KNOWN = {"ddi_id", "ddi_file", "skin_tone", "malignant", "disease", "image_id"}


def read_ddi(path: Path, report: IngestReport) -> LesionTable:
    """``path`` is the folder holding ``ddi_metadata.csv`` (or the CSV itself)."""
    path = Path(path)
    csv = path if path.is_file() else path / "ddi_metadata.csv"
    df = read_csv(csv, report=report)
    index = [c for c in df.columns if c == "" or c.startswith("_duplicated_")]
    if index:
        df = df.drop(index)
        report.note("dropped the leading unnamed index column")
    df = df.rename({c: c.lower() for c in df.columns})
    require_columns(df, ["ddi_file", "skin_tone", "malignant", "disease"], csv)
    df = df.with_columns(pl.col("ddi_file").alias("image_id"))
    problems = RowProblems(csv, report, "image_id")
    check_ids(df, "image_id", problems)
    problems.add(df, ~pl.col("skin_tone").is_in(SKIN_TONES), "skin_tone",
                 pl.format("skin_tone '{}' is not one of 12/34/56", pl.col("skin_tone")))
    df = parse_flags(df, "malignant", problems)
    problems.add(df, pl.col("malignant").is_null(), "malignant", "empty malignant")
    df = problems.apply(df).with_columns(
        pl.col("skin_tone").cast(pl.Int64), pl.col("malignant").alias("target"), pl.col("disease").alias("label"),
        pl.lit("train").alias("split"), pl.lit(IMAGE_TYPE["clinical_close_up"]).alias("image_type"),
        pl.col("ddi_id").cast(pl.Int64, strict=False) if "ddi_id" in df.columns else pl.lit(None).alias("ddi_id"),
    )
    df = attach_files(df, csv.parent, problems, report, refs={"image_ref": ("image_id", "")}, optional=True)
    meta = TableMeta(dataset="ddi")
    return finish(df, report, meta, known=KNOWN)
