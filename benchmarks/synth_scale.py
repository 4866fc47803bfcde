"""Benchmark: synthesise a full-size ISIC 2024 layout (401,059 lesions) and ingest it.

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/synth_scale.py [--lesions N] [--workers W] [--smoke]

Writes into a temporary folder (or --out), times the metadata, the images and
``dermstack.data.readers.ingest("isic2024", dir)``, and prints peak RSS (this process and its
children). Targets: metadata < 60 s, the whole synthesis a few minutes. Last line:
``synth_s=... metadata_s=... images_s=... ingest_s=... peak_rss_gib=...``.
"""
from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

from dermstack.data.readers import ingest
from dermstack.data.synth import synthesize_isic2024
from dermstack.testing import SMOKE_HELP

METADATA_BUDGET_S = 60.0
SYNTH_BUDGET_S = 300.0


def peak_rss_gib() -> float:
    """Largest resident set of this process or of any child (ru_maxrss is in KiB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 2**20


def run(out: Path, lesions: int, test_lesions: int, image_size: int, workers: int | None) -> None:
    t0 = time.perf_counter()
    summary = synthesize_isic2024(out, lesions=lesions, test_lesions=test_lesions, image_size=image_size,
                                  seed=0, workers=workers)
    synth_s = time.perf_counter() - t0
    synth_rss = peak_rss_gib()
    print(summary)
    t1 = time.perf_counter()
    table, report = ingest("isic2024", out)
    ingest_s = time.perf_counter() - t1
    print(report.summary())
    print(f"ingested {len(table):,} rows; metadata {summary.seconds_metadata:.1f} s "
          f"({summary.seconds_metadata / METADATA_BUDGET_S:.2f} of the {METADATA_BUDGET_S:.0f} s budget), "
          f"synthesis {synth_s:.1f} s ({synth_s / SYNTH_BUDGET_S:.2f} of {SYNTH_BUDGET_S:.0f} s), "
          f"{summary.image_bytes / max(lesions + test_lesions, 1):.0f} bytes per JPEG")
    print(f"synth_s={synth_s:.1f} metadata_s={summary.seconds_metadata:.1f} images_s={summary.seconds_images:.1f} "
          f"ingest_s={ingest_s:.1f} synth_peak_rss_gib={synth_rss:.2f} peak_rss_gib={peak_rss_gib():.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lesions", type=int, default=401_059)
    ap.add_argument("--test-lesions", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="image processes (default: all cores)")
    ap.add_argument("--out", type=Path, help="keep the layout here instead of a temporary folder")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.lesions, args.test_lesions, args.image_size, args.workers = 200, 10, 16, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.out:
        run(args.out, args.lesions, args.test_lesions, args.image_size, args.workers)
        return
    with tempfile.TemporaryDirectory(prefix="dermstack-synth-") as tmp:
        run(Path(tmp), args.lesions, args.test_lesions, args.image_size, args.workers)


if __name__ == "__main__":
    main()
