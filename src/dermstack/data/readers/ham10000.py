"""HAM10000: ``HAM10000_metadata.csv`` + ``ISIC_*.jpg`` (any sub-folders) + ``ISIC_*_segmentation.png`` masks.

target = dx in {mel, bcc, akiec}; label = dx; ``dx_type`` says how dx was confirmed (label
provenance, never a feature). No patient ids: folds group by ``lesion_id``. ``localization`` is
mapped onto ISIC ``anatom_site_general`` where a site fits and is also kept as a feature, since
``trunk`` has no ISIC equivalent and hand/foot/face lose detail in the mapping.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dermstack.data.readers.build import finish
from dermstack.data.readers.csvio import RowProblems, check_ids, parse_numbers, read_csv, require_columns
from dermstack.data.readers.files import attach_files
from dermstack.data.readers.vocab import HAM_SITES, SEX, check_vocabulary, map_values
from dermstack.data.report import IngestReport
from dermstack.data.table import LesionTable, TableMeta

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
MALIGNANT = ["mel", "bcc", "akiec"]
KNOWN = {"lesion_id", "image_id", "dx", "dx_type", "age", "age_approx", "sex", "localization", "anatom_site_general",
         "dataset"}


def read_ham10000(path: Path, report: IngestReport) -> LesionTable:
    """``path`` is the folder holding ``HAM10000_metadata.csv`` (or the CSV itself)."""
    path = Path(path)
    csv = path if path.is_file() else path / "HAM10000_metadata.csv"
    df = read_csv(csv, report=report)
    require_columns(df, ["lesion_id", "image_id", "dx"], csv)
    problems = RowProblems(csv, report, "image_id")
    check_ids(df, "image_id", problems)
    problems.add(df, ~pl.col("dx").is_in(CLASSES), "dx", pl.format("dx '{}' is not one of " + "/".join(CLASSES), pl.col("dx")))
    df = parse_numbers(df, ["age", "age_approx"], problems, ranges_of={"age": "age_approx"})
    df = df.rename({"age": "age_approx"}, strict=False)
    df = problems.apply(df)
    df = check_vocabulary(df, "sex", SEX, report, null_values=("unknown",))
    if "localization" in df.columns:
        df = df.with_columns(pl.col("localization").replace("unknown", None))
        df = map_values(df, "localization", "anatom_site_general", HAM_SITES, report)
    df = df.with_columns(
        pl.col("dx").alias("label"), pl.col("dx").is_in(MALIGNANT).cast(pl.Int8).alias("target"),
        pl.lit("train").alias("split"), pl.lit("dermoscopic").alias("image_type"),
    )
    df = attach_files(df, csv.parent, problems, report,
                      refs={"image_ref": ("image_id", ".jpg"), "mask_ref": ("image_id", "_segmentation.png")})
    meta = TableMeta(dataset="ham10000", classes=CLASSES, positive_classes=MALIGNANT)
    return finish(df, report, meta, known=KNOWN)
