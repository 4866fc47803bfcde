"""Find each row's image (and mask) file under a dataset folder with one directory walk, and check it."""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from dermstack.data.readers.build import IMAGE_PROBLEM, resolve_images
from dermstack.data.readers.csvio import ROW, RowProblems
from dermstack.data.readers.imagecheck import file_problem, index_files
from dermstack.data.report import IngestReport
from dermstack.errors import DataError

#: What to do with a row whose main image is absent: keep it as metadata only and list it, or skip it.
MISSING_POLICIES = ("list", "skip")


def attach_files(df: pl.DataFrame, root: Path, problems: RowProblems, report: IngestReport,
                 refs: dict[str, tuple[str, str]], missing: str = "list", optional: bool = False) -> pl.DataFrame:
    """Fill each ref column with the file named ``df[column] + suffix`` found anywhere under ``root``.

    ``refs`` maps a ref column (``image_ref`` first, then e.g. ``mask_ref``) to (id column, suffix).
    A corrupt ``image_ref`` file skips its row; a corrupt further file (a second view, a mask) is left
    out and counted, the row kept. A row without its ``image_ref`` file is listed as a missing
    image or skipped (``missing``); when ``optional`` and the folder holds none of the images,
    one note says the data is metadata only. Other refs that are absent are counted in a note.
    """
    assert missing in MISSING_POLICIES
    found, dangling = index_files(root)
    if dangling:
        report.note(f"{len(dangling)} dangling symbolic links under {root} not followed, e.g. "
                    + ", ".join(f"{d} -> {os.readlink(d)}" for d in dangling[:3]))
    used: set[str] = set()
    for ref, (column, suffix) in refs.items():
        names = [None if i is None else f"{i}{suffix}" for i in df[column].to_list()]
        paths = [found.get(n) if n else None for n in names]
        used.update(n for n in names if n)
        bad = [f"{b} ({p})" if p and (b := file_problem(p)) else None for p in paths]
        df = df.with_columns(pl.Series(ref, [str(p.resolve()) if p else None for p in paths], pl.String),
                             pl.Series(IMAGE_PROBLEM if ref == "image_ref" else f"{IMAGE_PROBLEM}{ref}", bad, pl.String))
    with_image = df.filter(pl.col("image_ref").is_not_null())
    for ref, (column, suffix) in list(refs.items())[1:]:
        if absent := with_image[ref].null_count():
            report.note(f"{absent} of {with_image.height} rows with an image have no {ref} file (<{column}>{suffix})")
        df = _leave_out_unusable(df, ref, problems, report)
    if stray := sorted(set(found) - used):
        report.note(f"{len(stray)} image files under {root} match no metadata row (not read), e.g. {stray[:3]}")
    if df["image_ref"].null_count() == df.height:
        report.note(f"no image files under {root}: {df.height} rows read as metadata only")
        if optional:
            return resolve_images(df, problems, report, record_missing=False)
    if missing == "skip":
        problems.add(df, pl.col("image_ref").is_null(), "image_ref", f"no image file (<id>{refs['image_ref'][1]}) under {root}")
    return resolve_images(df, problems, report, record_missing=missing == "list")


def _leave_out_unusable(df: pl.DataFrame, ref: str, problems: RowProblems, report: IngestReport) -> pl.DataFrame:
    """A corrupt further file of a row (a second view, a mask) is left out, the row kept without it (as
    when the file is absent) and counted in a note; under --strict it is an error naming its row."""
    reason = f"{IMAGE_PROBLEM}{ref}"
    bad = df.filter(pl.col(reason).is_not_null() & pl.col("image_ref").is_not_null() & pl.col(IMAGE_PROBLEM).is_null())
    if bad.height:
        first = bad.select(problems.key, ROW, problems.file(bad), reason).row(0)
        if report.strict:
            raise DataError(f"{first[3]} [{first[0]}] (--strict)", first[2], first[1], ref)
        report.note(f"{ref}: {bad.height} unusable files left out, their rows kept without them (features of this file "
                    f"null), e.g. {first[0]} (row {first[1]}): {first[3]}")
    return df.with_columns(pl.when(pl.col(reason).is_null()).then(pl.col(ref)).alias(ref)).drop(reason)


def split_files(path: Path, names: dict[str, str], layout: str) -> tuple[Path, dict[str, Path]]:
    """The folder of a dataset published as one metadata file per split, and the split files to read:
    those the folder ``path`` holds, or the one ``path`` names (that split alone, its images found
    beside it, as a user pointing at ``test-metadata.csv`` means)."""
    path = Path(path)
    if path.is_file():
        split = next((s for s, name in names.items() if name == path.name), None)
        if split is None:
            raise DataError(f"not a {layout} metadata file: give the folder that holds {' or '.join(names.values())} "
                            "(and its images)", file=str(path))
        return path.parent, {split: path}
    parts = {s: path / name for s, name in names.items() if (path / name).is_file()}
    if not parts:
        raise DataError(f"no {' or '.join(names.values())} here ({layout} layout)", file=str(path))
    return path, parts
