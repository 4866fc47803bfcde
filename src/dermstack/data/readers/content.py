"""The SHA-256 of every image's bytes, recorded at ingest: byte-identical files are the same image
whatever they are called (the overlap audit, :mod:`dermstack.data.audit`).

The hex digest equals ``sha256sum FILE`` of the file (or of the JPEG bytes stored under an HDF5 key),
so a user can check a match by hand. HDF5 datasets stored contiguously are hashed straight from a
memory map of the file (the ISIC 2024 layout: 401,059 crops; the reader gets them in the pass that
checks the images, :func:`~dermstack.data.readers.imagecheck.hdf5_problems`), others are read
through h5py; files are read whole. ``hashlib`` leaves the GIL while it hashes, so a few threads hash.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from dermstack.data.readers.imagecheck import HASH_THREADS, hdf5_digests
from dermstack.data.table import hash_column, image_views, parse_image_ref
from dermstack.errors import DataError


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def image_digests(refs: list[str | None]) -> list[str | None]:
    """SHA-256 hex digest of each ``image_ref``'s bytes, None for a missing or unreadable image."""
    out: list[str | None] = [None] * len(refs)
    files: list[tuple[int, str]] = []
    h5: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, ref in enumerate(refs):
        if ref:
            path, key = parse_image_ref(ref)
            if key is None:
                files.append((i, path))
            else:
                h5[path].append((i, key))
    if files:
        with ThreadPoolExecutor(HASH_THREADS) as pool:
            for (i, _), digest in zip(files, pool.map(_file_digest, [p for _, p in files])):
                out[i] = digest
    for path, items in h5.items():
        try:
            found = hdf5_digests(Path(path), [k for _, k in items])
        except DataError:  # not an HDF5 file (any more): those images have no digest
            found = {}
        for i, key in items:
            out[i] = found.get(key)
    return out


def with_digests(df: pl.DataFrame, source: str | None = None) -> pl.DataFrame:
    """``df`` with the digest column of every image column (:func:`dermstack.data.table.image_views`;
    ``source``: the file or folder its errors name) that a reader has not filled already."""
    return df.with_columns(pl.Series(hash_column(view), image_digests(df[ref].to_list()), pl.String)
                           for view, ref in image_views(df, source).items() if ref in df.columns and hash_column(view) not in df.columns)


def hashed_views(df: pl.DataFrame) -> dict[str, str]:
    """View -> digest column of each image column ``df`` has a digest column for."""
    return {view: hash_column(view) for view in image_views(df) if hash_column(view) in df.columns}


__all__ = ["hashed_views", "image_digests", "with_digests"]
