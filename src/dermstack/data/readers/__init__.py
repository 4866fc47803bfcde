"""Readers of published skin-lesion datasets into a LesionTable, with an IngestReport of every decision.

>>> table, report = ingest("ham10000", "/data/ham10000")
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dermstack.data.readers.ddi import read_ddi
from dermstack.data.readers.ham10000 import read_ham10000
from dermstack.data.readers.isic2024 import read_isic2024
from dermstack.data.readers.isic_archive import read_isic_archive
from dermstack.data.readers.milk10k import read_milk10k
from dermstack.data.readers.ph2 import read_ph2
from dermstack.data.report import IngestReport
from dermstack.data.table import LesionTable
from dermstack.errors import DataError, why_missing

Reader = Callable[[Path, IngestReport], LesionTable]

#: Dataset format name -> reader(path, report).
READERS: dict[str, Reader] = {
    "isic2024": read_isic2024,
    "isic-archive": read_isic_archive,
    "ham10000": read_ham10000,
    "milk10k": read_milk10k,
    "ddi": read_ddi,
    "ph2": read_ph2,
}


#: format -> the files (any one) that mark a folder of that format, as published
MARKER_FILES: dict[str, tuple[str, ...]] = {
    "isic2024": ("train-metadata.csv", "test-metadata.csv"),
    "isic-archive": ("metadata.csv",),
    "ham10000": ("HAM10000_metadata.csv",),
    "milk10k": ("MILK10k_Training_Metadata.csv", "MILK10k_Test_Metadata.csv"),
    "ddi": ("ddi_metadata.csv",),
    "ph2": ("PH2_dataset.csv", "PH2_dataset.txt", "PH2_dataset.xlsx"),
}


def detect_format(path: str | Path) -> str | None:
    """The format whose marker file ``path`` is, or holds (None: none, or several)."""
    path = Path(path)
    names = {path.name} if path.is_file() else {p.name for p in path.iterdir()} if path.is_dir() else set()
    found = [fmt for fmt, files in MARKER_FILES.items() if names & set(files)]
    return found[0] if len(found) == 1 else None


def ingest(format: str, path: str | Path, strict: bool = False, encoding: str | None = None) -> tuple[LesionTable, IngestReport]:
    """Read the dataset ``format`` at ``path`` as published; ``strict`` turns every skip or missing image into a DataError;
    ``encoding`` declares the CSV files' encoding when it is not UTF-8."""
    if format not in READERS:
        raise DataError(f"unknown dataset format {format!r}; known: {', '.join(READERS)}")
    path = Path(path)
    if why := why_missing(path):
        raise DataError(why, file=str(path))
    report = IngestReport(dataset=format, source=str(path.resolve()), strict=strict, encoding=encoding)
    table = READERS[format](path, report)
    return table, report


__all__ = ["MARKER_FILES", "READERS", "Reader", "detect_format", "ingest"]
