"""Find each row's image (and mask) file under a dataset folder with one directory walk, and check it."""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from dermstack.data.readers.build import IMAGE_PROBLEM, resolve_images
from dermstack.data.readers.csvio import RowProblems
from dermstack.data.readers.imagecheck import file_problem, index_files
from dermstack.data.report import IngestReport

#: What to do with a row whose main image is absent: keep it as metadata only and list it, or skip it.
MISSING_POLICIES = ("list", "skip")


def attach_files(df: pl.DataFrame, root: Path, problems: RowProblems, report: IngestReport,
                 refs: dict[str, tuple[str, str]], missing: str = "list", optional: bool = False) -> pl.DataFrame:
    """Fill each ref column with the file named ``df[column] + suffix`` found anywhere under ``root``.

    ``refs`` maps a ref column (``image_ref`` first, then e.g. ``mask_ref``) to (id column, suffix).
    A corrupt file skips its row. A row without its ``image_ref`` file is listed as a missing
    image or skipped (``missing``); when ``optional`` and the folder holds none of the images,
    one note says the data is metadata only. Other refs that are absent are counted in a note.
    """
    assert missing in MISSING_POLICIES
    found, dangling = index_files(root)
    if dangling:
        report.note(f"{len(dangling)} dangling symbolic links under {root} not followed, e.g. "
                    + ", ".join(f"{d} -> {os.readlink(d)}" for d in dangling[:3]))
    used: set[str] = set()
    reasons: list[pl.Series] = []
    for ref, (column, suffix) in refs.items():
        names = [None if i is None else f"{i}{suffix}" for i in df[column].to_list()]
        paths = [found.get(n) if n else None for n in names]
        used.update(n for n in names if n)
        bad = [f"{b} ({p})" if p and (b := file_problem(p)) else None for p in paths]
        reasons.append(pl.Series(bad, dtype=pl.String))
        df = df.with_columns(pl.Series(ref, [str(p.resolve()) if p else None for p in paths], pl.String))
    df = df.with_columns(pl.coalesce(reasons).alias(IMAGE_PROBLEM))
    with_image = df.filter(pl.col("image_ref").is_not_null())
    for ref, (column, suffix) in list(refs.items())[1:]:
        if absent := with_image[ref].null_count():
            report.note(f"{absent} of {with_image.height} rows with an image have no {ref} file (<{column}>{suffix})")
    if stray := sorted(set(found) - used):
        report.note(f"{len(stray)} image files under {root} match no metadata row (not read), e.g. {stray[:3]}")
    if df["image_ref"].null_count() == df.height:
        report.note(f"no image files under {root}: {df.height} rows read as metadata only")
        if optional:
            return resolve_images(df, problems, report, record_missing=False)
    if missing == "skip":
        problems.add(df, pl.col("image_ref").is_null(), "image_ref", f"no image file (<id>{refs['image_ref'][1]}) under {root}")
    return resolve_images(df, problems, report, record_missing=missing == "list")
