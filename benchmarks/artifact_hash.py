"""How long recording and checking a run directory's artifacts takes at ISIC 2024 size (401,059 rows).

Writes a features-like parquet (401,059 rows x 80 float columns) and a long OOF predictions
parquet (401,059 rows x 3 seeds) to a temporary folder and times the content hash that stage
records keep (``dermstack.provenance.artifact``: SHA-256), against BLAKE2b for comparison.
Command: ``PYTHONPATH=src .venv/bin/python benchmarks/artifact_hash.py`` (``--smoke``: 2,000 rows)
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.provenance import artifact

ROWS = 401_059


def blake2b(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--smoke", action="store_true", help="2,000 rows: checks the script runs")
    args = ap.parse_args()
    rows = 2000 if args.smoke else args.rows
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{i:07d}" for i in range(rows)]
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "features.parquet": pl.DataFrame({"image_id": ids} | {f"f{j}": rng.normal(size=rows) for j in range(80)}),
            "oof.parquet": pl.DataFrame({"image_id": ids * 3, "model": "lightgbm", "seed": np.repeat([0, 1, 2], rows),
                                         "fold": rng.integers(0, 5, 3 * rows), "class": "target",
                                         "score": rng.random(3 * rows)}),
        }
        for name, df in files.items():
            path = Path(tmp) / name
            df.write_parquet(path)
            t0 = time.perf_counter()
            artifact(path)
            t1 = time.perf_counter()
            blake2b(path)
            t2 = time.perf_counter()
            print(f"{name}: {path.stat().st_size / 2**20:.1f} MiB, record (SHA-256) {t1 - t0:.3f} s, BLAKE2b {t2 - t1:.3f} s")


if __name__ == "__main__":
    main()
