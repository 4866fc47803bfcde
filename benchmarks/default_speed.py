"""The default run on a HAM10000-size data set: each stage's seconds, and features + models against
115 s (a tenth of AutoGluon 1.6.3's ~1,146 s on the same 7,536-image inputs).

The data set is the HAM10000 dev data (2,479 images) resampled to ``--images`` rows: whole lesions
are drawn again, every copy of an image gets a new ``image_id`` (a link to the same JPEG and mask)
and keeps its ``lesion_id``, so the copies of a lesion stay in one fold as the originals would. The
config is the one a new user writes: ``[data]`` and ``backbones = ["efficientnet_lite0"]``.

  .venv/bin/python benchmarks/default_speed.py [--images 7500] [--data ../shared/data] [--smoke] [--reuse-extract]

``--reuse-extract`` keeps the data set, ingest, folds and embeddings of an earlier run in ``--out``
and times the stages after them again (extraction is outside the budget, and 7,500 images take
minutes on a shared CPU).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dermstack.testing import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 115.0
#: the stages the budget covers: features, each member model and the pair models of a nested score
#: group (extraction, ensembles and calibration are reported beside it)
TIMED = ("features", "model-", "nested-")
NOT_TIMED = ("model-calibrated",)
#: the stage records --reuse-extract keeps
KEPT = ("ingest", "folds", "extract")


def resample(src: Path, dst: Path, images: int, seed: int = 0) -> int:
    """A HAM10000 layout in ``dst`` with ``images`` rows drawn lesion by lesion from ``src``; the
    number of rows written (whole lesions: at most one lesion's images more)."""
    with open(src / "HAM10000_metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lesions: dict[str, list[dict]] = {}
    for r in rows:
        lesions.setdefault(r["lesion_id"], []).append(r)
    order = list(lesions)
    rng = np.random.default_rng(seed)
    found = {p.stem: p for p in (src / "images").rglob("*.jpg")}
    masks = {p.name: p for p in (src / "masks").rglob("*_segmentation.png")}
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    out, copy = [], 0
    while len(out) < images:
        for lesion in rng.permutation(order):
            if len(out) >= images:
                break
            for r in lesions[lesion]:
                new = dict(r, image_id=r["image_id"] if copy == 0 else f"{r['image_id']}_r{copy}")
                os.symlink(found[r["image_id"]].resolve(), dst / "images" / f"{new['image_id']}.jpg")
                mask = masks.get(f"{r['image_id']}_segmentation.png")
                if mask is not None:
                    os.symlink(mask.resolve(), dst / "masks" / f"{new['image_id']}_segmentation.png")
                out.append(new)
        copy += 1
    with open(dst / "HAM10000_metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(out)
    return len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_data_dir() or ROOT.parent / "shared" / "data")
    ap.add_argument("--images", type=int, default=7500)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "default_speed")
    ap.add_argument("--smoke", action="store_true", help="a 300-image set: that the benchmark runs, not its figures")
    ap.add_argument("--reuse-extract", action="store_true", help="keep an earlier run's data and embeddings in --out")
    args = ap.parse_args()
    images = 300 if args.smoke else args.images
    data, cfg, run_dir = args.out / "data", args.out / "default.toml", args.out / "run"
    if args.reuse_extract and (run_dir / "stages" / "extract.json").exists():
        n = sum(1 for _ in (data / "images").iterdir())
        for record in (run_dir / "stages").glob("*.json"):
            if record.stem not in KEPT:
                record.unlink()
    else:
        n = resample(args.data / "ham10000-dev", data, images)
        cfg.write_text(f'[data]\nformat = "ham10000"\npath = "{data.resolve()}"\n\n[extract]\nbackbones = ["efficientnet_lite0"]\n')
        shutil.rmtree(run_dir, ignore_errors=True)
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(cfg), "--out", str(run_dir)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    if r.returncode:
        sys.exit(f"dermstack run failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    stages = {}
    for p in sorted((run_dir / "stages").glob("*.json")):
        record = json.loads(p.read_text())
        if "seconds" in record:
            stages[record["stage"]] = float(record["seconds"])
    timed = {s: v for s, v in stages.items() if s.startswith(TIMED) and s not in NOT_TIMED}
    total = sum(timed.values())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    primary = metrics["primary_metric"]
    # CPU seconds of the run and its worker processes: with other jobs on the machine, wall seconds
    # overstate what the run needs
    print(f"{n} images ({n / 2479:.2f}x the dev data), default config, run wall {wall:.1f} s, CPU {cpu:.1f} s "
          f"(load average {os.getloadavg()[0]:.1f} at the end)")
    for s, v in stages.items():
        print(f"  {s:24} {v:8.1f} s{'' if s in timed else '   (not in the budget)'}")
    print(f"features + models: {total:.1f} s = {total / BUDGET_S:.2f} of {BUDGET_S:.0f} s")
    print(f"final {metrics['oof_model']}: {primary} {metrics['oof'][primary]:.4f}, "
          f"ROC-AUC {metrics['oof'].get('roc_auc', float('nan')):.4f}; "
          + ", ".join(f"{m} {v[primary]:.4f}" for m, v in metrics["models"].items()))
    (args.out / "summary.json").write_text(json.dumps({"images": n, "stages": stages, "features_models_s": total,
                                                       "budget_s": BUDGET_S, "wall_s": wall, "cpu_s": cpu,
                                                       "oof": metrics["oof"]}, indent=2))


if __name__ == "__main__":
    main()
