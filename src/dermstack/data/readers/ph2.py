"""PH2: ``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` (+ ``IMDxxx_lesion.bmp`` mask)
and the label table ``PH2_dataset.csv`` (preferred), ``.txt`` or ``.xlsx``.

``Clinical Diagnosis`` 0/1/2 = common nevus / atypical nevus / melanoma; target = melanoma.
The CSV/TXT end in a legend block (not data), detected after the first blank row and ignored.
The other columns are expert dermoscopic criteria (annotations that encode the diagnosis), kept
in the table but never features; PH2 has no other metadata, so a labelled case without an
image carries nothing to learn from and is skipped with its id in the report.
"""
from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from dermstack.data.readers.build import finish
from dermstack.data.readers.csvio import ROW, RowProblems, check_ids, read_csv
from dermstack.data.readers.files import attach_files
from dermstack.data.readers.vocab import IMAGE_TYPE
from dermstack.data.report import IngestReport
from dermstack.data.table import LesionTable, TableMeta
from dermstack.errors import DataError

CLASSES = ["common nevus", "atypical nevus", "melanoma"]
LABEL_FILES = ("PH2_dataset.csv", "PH2_dataset.txt", "PH2_dataset.xlsx")
CASE = re.compile(r"^IMD\d+$")
IMAGES = {"image_ref": ("image_id", ".bmp"), "mask_ref": ("image_id", "_lesion.bmp")}


def read_ph2(path: Path, report: IngestReport) -> LesionTable:
    """``path`` is the PH2 folder (label file + ``PH2 Dataset images``) or a label file."""
    path = Path(path)
    label_file = path if path.is_file() else next((path / f for f in LABEL_FILES if (path / f).is_file()), None)
    if label_file is None:
        raise DataError(f"no label file ({', '.join(LABEL_FILES)})", file=str(path))
    df = _read_xlsx(label_file, report) if label_file.suffix == ".xlsx" else _read_table(label_file, report)
    df = df.rename({"Name": "image_id", "Image Name": "image_id"}, strict=False)
    if "image_id" not in df.columns or "Clinical Diagnosis" not in df.columns:
        raise DataError("needs the columns Name and Clinical Diagnosis", file=str(label_file),
                        column="Name" if "image_id" not in df.columns else "Clinical Diagnosis")
    problems = RowProblems(label_file, report, "image_id")
    check_ids(df, "image_id", problems)
    problems.add(df, ~pl.col("image_id").str.contains(CASE.pattern), "Name",
                 pl.format("'{}' is not a PH2 case name (IMDnnn)", pl.col("image_id")))
    code = pl.col("Clinical Diagnosis").cast(pl.Int64, strict=False)
    problems.add(df, ~code.is_in([0, 1, 2]), "Clinical Diagnosis", pl.format("'{}' is not 0, 1 or 2", pl.col("Clinical Diagnosis")))
    df = problems.apply(df).with_columns(
        code.replace_strict(dict(enumerate(CLASSES)), default=None, return_dtype=pl.String).alias("label"),
        (code == 2).cast(pl.Int8).alias("target"), pl.lit("train").alias("split"),
        pl.lit(IMAGE_TYPE["dermoscopic"]).alias("image_type"),
    ).rename({"Clinical Diagnosis": "clinical_diagnosis"})
    root = label_file.parent
    df = attach_files(df, root, problems, report, refs=IMAGES, missing="skip")
    criteria = [c for c in df.columns if c not in ("image_id", "clinical_diagnosis", "label", "target", "split", "image_type",
                                                   "image_ref", "mask_ref") and not c.startswith("__")]
    if criteria:
        report.note(f"expert dermoscopic criteria kept as annotations, not features: {', '.join(criteria)}")
    return finish(df, report, TableMeta(dataset="ph2", classes=CLASSES, positive_classes=["melanoma"]), not_features=criteria)


def _read_table(path: Path, report: IngestReport) -> pl.DataFrame:
    """CSV (comma) or TXT (tab) label table; the legend block after the first blank row is dropped."""
    separator = "\t" if path.suffix == ".txt" else ","
    df = read_csv(path, separator=separator, report=report, count=False, keep_blank=True)
    data_columns = [c for c in df.columns if c != ROW]
    blank = df.filter(pl.all_horizontal(pl.col(data_columns).is_null()))
    if blank.height:
        start = blank[ROW].min()
        tail = df.filter(pl.col(ROW) >= start)
        names = tail[data_columns[0]].drop_nulls()
        if names.str.contains(CASE.pattern).any():
            row = tail.filter(pl.col(data_columns[0]).str.contains(CASE.pattern))[ROW][0]
            raise DataError("case rows after the blank line where the legend starts", file=str(path), row=row)
        report.note(f"{path.name}: legend block at rows {start}-{tail[ROW].max()} ignored (not data)")
        df = df.filter(pl.col(ROW) < start)
    report.rows_read += df.height
    return df


def _read_xlsx(path: Path, report: IngestReport) -> pl.DataFrame:
    """The original spreadsheet: header row starts with 'Image Name'; diagnosis is an X in one of three columns."""
    import openpyxl

    sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    head = next((i for i, r in enumerate(rows) if r and r[0] == "Image Name"), None)
    if head is None:
        raise DataError("no header row starting with 'Image Name'", file=str(path))
    header = [str(h).split("\n")[0].strip() if h else f"column_{j}" for j, h in enumerate(rows[head])]
    marks = [header.index(c.title()) for c in CLASSES]
    records = []
    for i, r in enumerate(rows[head + 1:], start=head + 2):
        if r[0] is None:
            continue
        coded = [k for k, j in enumerate(marks) if str(r[j] or "").strip().upper() == "X"]
        records.append({ROW: i, "Name": str(r[0]).strip(), "Clinical Diagnosis": str(coded[0]) if len(coded) == 1 else None,
                        **{h: None if v is None else str(v).strip() for h, v in zip(header[5:], r[5:])}})
    report.rows_read += len(records)
    return pl.DataFrame(records, infer_schema_length=None)
