"""Parquet with a JSON description in the file metadata, written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from dermstack.atomic import atomic_path
from dermstack.errors import DataError, reading


def write_described(df: pl.DataFrame, path: str | Path, key: bytes, description: dict) -> Path:
    """Write ``df`` to ``path`` (via a temporary file, then rename) with ``description`` under ``key``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = df.to_arrow()
    md = dict(arrow.schema.metadata or {})
    md[key] = json.dumps(description).encode()
    with atomic_path(path) as tmp:
        pq.write_table(arrow.replace_schema_metadata(md), tmp)
    return path


def read_described(path: str | Path, key: bytes, what: str) -> tuple[pl.DataFrame, dict]:
    """Read a frame written by :func:`write_described`; a file without ``key`` is not a ``what``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such {what} file", file=str(path))
    with reading(path, what):
        arrow = pq.read_table(path)
        raw = (arrow.schema.metadata or {}).get(key)
        if raw is None:
            raise DataError(f"not a dermstack {what}", file=str(path))
        return pl.from_arrow(arrow), json.loads(raw)
