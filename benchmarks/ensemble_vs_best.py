"""The default config (no [[models]], method = "auto") on every dev dataset: the final model's OOF
primary metric against its best member's, and calibration before/after. Target: final >= best
member - 0.002 everywhere, ECE <= 0.02 on HAM10000 (binary).

  .venv/bin/python benchmarks/ensemble_vs_best.py [--data ../shared/data] [--only ham10000,ph2] [--demo runs/demo] [--smoke]

A run that fails is reported and makes the exit status 1. ``--smoke``: a tiny copy of each dataset
(``dermstack.testing.tiny_copy``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dermstack.config import RunConfig
from dermstack.testing import SMOKE_HELP, shared_data_dir, smoke_dataset, smoke_work

ROOT = Path(__file__).resolve().parents[1]

#: name -> [data] and [extract] lines of a config a new user would write
DATASETS = {
    "ham10000": ('format = "ham10000"\npath = "{d}/ham10000-dev"', 'backbones = ["efficientnet_lite0"]'),
    "ham10000-multiclass": ('format = "ham10000"\npath = "{d}/ham10000-dev"\ntask = "multiclass"', ""),
    "ph2": ('format = "ph2"\npath = "{d}/ph2-dev"', ""),
    "isic-archive-2024": ('format = "isic-archive"\npath = "{d}/isic-archive-dev/2024-export"', 'backbones = ["efficientnet_lite0"]'),
    "isic-archive-current": ('format = "isic-archive"\npath = "{d}/isic-archive-dev/current"', 'backbones = ["efficientnet_lite0"]'),
    "ddi": ('format = "ddi"\npath = "{d}/ddi"', ""),
    "milk10k": ('format = "milk10k"\npath = "{d}/milk10k-dev"\ntask = "multilabel"', ""),
    "isic2024-train-sample": ('format = "isic2024"\npath = "{d}/isic2024-train-sample"', ""),
}


def summarise(name: str, metrics: dict, seconds: float | None = None) -> dict:
    primary = metrics["primary_metric"]
    members = {m: v[primary] for m, v in metrics["models"].items()}
    best = max(members, key=members.get)
    cal = metrics.get("calibration") or {}
    row = {"data": name, "n_train": metrics["n_train"], "metric": primary, "final": metrics["oof_model"],
           "final_score": metrics["oof"][primary], "best_member": best, "best_score": members[best],
           "ece_before": cal.get("before", {}).get("ece"), "ece_after": cal.get("after", {}).get("ece"), "seconds": seconds}
    row["final_minus_best"] = row["final_score"] - row["best_score"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_data_dir() or ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ensemble_vs_best")
    ap.add_argument("--only", default=None, help="Comma-separated dataset names.")
    ap.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo", help="A finished `make demo` run to include.")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(DATASETS)
    if args.smoke:
        args.out, args.demo = smoke_work("ensemble_vs_best"), Path("/nonexistent")
    rows, failed = [], []
    for name in names:
        data, extract = DATASETS[name]
        cfg = args.out / f"{name}.toml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(f"[data]\n{data.format(d=args.data.resolve())}\n\n[extract]\n{extract}\n")
        if args.smoke:
            cfg.write_text(smoke_dataset(RunConfig.from_toml(cfg), args.out / "data" / name).to_toml())
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(cfg), "--out", str(args.out / name)],
                           capture_output=True, text=True)
        if r.returncode:
            print(f"{name}: run failed (exit {r.returncode}): {(r.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            failed.append(name)
            continue
        rows.append(summarise(name, json.loads((args.out / name / "metrics.json").read_text()), time.perf_counter() - t0))
        print(json.dumps(rows[-1]), flush=True)
    if (args.demo / "metrics.json").exists():
        rows.append(summarise("make demo", json.loads((args.demo / "metrics.json").read_text())))
    print(f"\n{'data':24} {'rows':>6} {'metric':11} {'final':>24} {'best member':>24} {'final-best':>10} {'ECE before->after':>18}")
    for r in rows:
        ece = f"{r['ece_before']:.3f}->{r['ece_after']:.3f}" if r["ece_before"] is not None else ""
        print(f"{r['data']:24} {r['n_train']:>6} {r['metric']:11} {r['final'][:14]:>14} {r['final_score']:.4f} "
              f"{r['best_member'][:14]:>14} {r['best_score']:.4f} {r['final_minus_best']:>+10.4f} {ece:>18}")
    worst = min((r["final_minus_best"] for r in rows), default=0.0)
    print(f"worst final - best member: {worst:+.4f} (target >= -0.002)")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    if failed:
        sys.exit(f"{len(failed)} dataset(s) failed: {failed}")


if __name__ == "__main__":
    main()
