"""Benchmark: the kNN kind's neighbour pass and scores at size (what ``params.max_rows`` bounds).

    flock /tmp/dermstack-cpu.lock .venv/bin/python benchmarks/knn_scale.py [--rows 2500,10000,20000] [--dim 1280] [--smoke]

For each size: random unit vectors of ``--dim`` dimensions as the training rows (5 folds) and 2 % more
as test rows; one :func:`dermstack.knn.neighbours.candidates` pass (25 neighbours per fold), then the
scores of the 5 fold models and the 10 pair models from it, as a run's ``model-knn`` and
``nested-knn`` stages do (each stage makes its own pass). Prints seconds per pass and per scoring,
peak RSS, and the seconds per (10,000 rows)^2 that extrapolate the pass to other sizes.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from dermstack.knn.neighbours import candidates, unit_rows
from dermstack.testing import SMOKE_HELP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="2500,10000,20000", help="training rows, comma-separated")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    sizes = [200] if args.smoke else [int(r) for r in args.rows.split(",")]
    dim = 16 if args.smoke else args.dim
    rng = np.random.default_rng(0)
    for n in sizes:
        n_test = max(1, n // 50)
        x = unit_rows(rng.normal(size=(n + n_test, dim)).astype(np.float32))
        fold = rng.integers(0, 5, n)
        labels = (rng.random((n, 1)) < 0.2).astype(np.float32)
        t0 = time.perf_counter()
        cand = candidates(x[:n], fold, labels, x, 25, 5)
        t1 = time.perf_counter()
        every = range(5)
        for kept in [[f for f in every if f != k] for k in every] + [[f for f in every if f not in (j, k)]
                                                                      for j in every for k in every if j < k]:
            cand.scores(np.arange(n + n_test), kept, 25, "distance")
        t2 = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        per = (t1 - t0) / ((n + n_test) * n / 1e8)
        print(f"rows {n:>7,} x {dim} d: neighbour pass {t1 - t0:7.2f} s, 15 models' scores {t2 - t1:6.2f} s, "
              f"peak RSS {peak:.2f} GiB; {per:.2f} s per (10,000 rows)^2")


if __name__ == "__main__":
    main()
