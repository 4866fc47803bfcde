"""Benchmark: `ingest("isic2024", dir)` on a full-size Kaggle layout (401,059 training rows + HDF5 crops).

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/ingest_isic2024.py [--layout DIR] [--rows N] [--smoke]

Without --layout it builds one in a temporary folder: the real rows of
``isic2024-train-sample/train-metadata.csv`` repeated under new ids, each with a small JPEG in
``train-image.hdf5``. Prints the ingest time and its ratio to the 60 s budget (lower is better),
and the share of it that the images' SHA-256 digests take (``data.readers.content``, timed again on
their own right after the ingest).
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import polars as pl
from PIL import Image

from dermstack.data.readers import ingest
from dermstack.data.readers.content import image_digests
from dermstack.testing import SMOKE_HELP, shared_data_dir

BUDGET_S = 60.0


def build_layout(out: Path, rows: int) -> None:
    """Kaggle-layout copy of the real sample, repeated to ``rows`` rows, with one tiny JPEG per row."""
    sample = pl.read_csv(shared_data_dir() / "isic2024-train-sample" / "train-metadata.csv", infer_schema=False)
    reps = -(-rows // sample.height)
    df = pl.concat([sample] * reps).head(rows).with_columns(
        pl.format("ISIC_{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(7)).alias("isic_id"))
    df.write_csv(out / "train-metadata.csv")
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buf, "JPEG")
    jpeg = np.bytes_(buf.getvalue())
    with h5py.File(out / "train-image.hdf5", "w") as f:
        for key in df["isic_id"]:
            f.create_dataset(key, data=jpeg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", type=Path, help="existing Kaggle layout (e.g. from `dermstack data synth`)")
    ap.add_argument("--rows", type=int, default=401_059)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.rows = 300
    with tempfile.TemporaryDirectory() as tmp:
        layout = args.layout
        if layout is None:
            layout = Path(tmp)
            t = time.perf_counter()
            build_layout(layout, args.rows)
            print(f"built {args.rows} rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        t = time.perf_counter()
        table, report = ingest("isic2024", layout)
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        digests = image_digests(table.df["image_ref"].to_list())
        hashing = time.perf_counter() - t
    print(f"isic2024 ingest: {report.rows_read} rows read, {report.rows_kept} kept, {len(report.skipped)} skipped, "
          f"{len(report.missing_images)} missing images")
    print(f"time {seconds:.2f} s = {seconds / BUDGET_S:.3f} of the {BUDGET_S:.0f} s budget "
          f"({report.rows_read / seconds:,.0f} rows/s)")
    print(f"image digests (SHA-256 of {sum(d is not None for d in digests):,} images): {hashing:.2f} s = "
          f"{hashing / seconds:.2f} of the ingest")


if __name__ == "__main__":
    main()
