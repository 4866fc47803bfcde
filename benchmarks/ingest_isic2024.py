"""Benchmark: `ingest("isic2024", dir)` on a full-size Kaggle layout (401,059 training rows + HDF5 crops).

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/ingest_isic2024.py [--layout DIR] [--rows N] [--smoke]

Without --layout it builds one in a temporary folder: the real rows of
``isic2024-train-sample/train-metadata.csv`` repeated under new ids, each with a small JPEG in
``train-image.hdf5``. Prints the ingest time and its ratio to the 60 s budget (lower is better),
and what the images' SHA-256 digests cost: the same ingest again with the digests left out
(``imagecheck._mapped_digests`` replaced by a no-op), rounds alternating.
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

from dermstack.data.readers import imagecheck, ingest
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
    ap.add_argument("--rounds", type=int, default=2, help="ingests with and without the digests, alternating")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.rounds = 300, 1
    real_digests = imagecheck._mapped_digests
    with tempfile.TemporaryDirectory() as tmp:
        layout = args.layout
        if layout is None:
            layout = Path(tmp)
            t = time.perf_counter()
            build_layout(layout, args.rows)
            print(f"built {args.rows} rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        seconds, without = [], []
        for _ in range(args.rounds):
            for times, digests in ((seconds, real_digests), (without, no_digests)):
                imagecheck._mapped_digests = digests
                t = time.perf_counter()
                table, report = ingest("isic2024", layout)
                times.append(time.perf_counter() - t)
        imagecheck._mapped_digests = real_digests
    best, bare = min(seconds), min(without)
    print(f"isic2024 ingest: {report.rows_read} rows read, {report.rows_kept} kept, {len(report.skipped)} skipped, "
          f"{len(report.missing_images)} missing images")
    print(f"time {best:.2f} s = {best / BUDGET_S:.3f} of the {BUDGET_S:.0f} s budget ({report.rows_read / best:,.0f} rows/s; "
          f"best of {args.rounds})")
    print(f"without the image digests: {bare:.2f} s; the digests add {best - bare:.2f} s = {(best - bare) / bare:.2f} of the ingest")


def no_digests(*args, **kwargs) -> dict:
    return {}


if __name__ == "__main__":
    main()
