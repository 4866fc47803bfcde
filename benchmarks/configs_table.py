"""Every shipped config in configs/ run as a user would (`dermstack run CONFIG`), one README row each:
the final model, its OOF primary metric with its patient-bootstrap CI where the run records one,
ROC-AUC (binary) or the task's other metrics, every member's primary metric and the wall time.

  .venv/bin/python benchmarks/configs_table.py [--only ham10000-metadata,ph2-image] [--skip ham10000-stack] [--smoke]

The configs name their data relative to the repository (../shared/data/...), so run it from the
repository root. Rows are printed as they finish and again as one Markdown table at the end, then
each model of every binary run (ROC-AUC, pAUC); runs/configs/summary.json keeps the numbers. A run
that fails is reported and makes the exit status 1. ``--smoke``: each config on a tiny copy of its
data, one CNN epoch (``dermstack.testing.smoke_dataset``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dermstack.config import RunConfig
from dermstack.testing import SMOKE_HELP, smoke_dataset, smoke_work

ROOT = Path(__file__).resolve().parents[1]


def row(name: str, m: dict, seconds: float) -> dict:
    primary = m["primary_metric"]
    final = m["oof"]
    ci = m.get("primary_ci") or {}
    others = {k: v for k, v in final.items() if k in ("roc_auc", "pauc_tpr80", "macro_f1", "balanced_accuracy", "macro_auc")
              and k != primary}
    return {"config": name, "n_train": m["n_train"], "metric": primary, "final": m["oof_model"], "value": final[primary],
            "ci": [ci.get("ci_low"), ci.get("ci_high")] if ci else None, "others": others,
            "members": {k: v.get(primary) for k, v in m["models"].items()},
            "ensemble": (m.get("ensemble") or {}).get("why"), "seconds": round(seconds, 1),
            "each": {k: {s: v.get(s) for s in ("roc_auc", "pauc_tpr80")} for k, v in {**m["models"], m["oof_model"]: m["oof"]}.items()}
            if m["task"] == "binary" else {}}


def markdown(r: dict) -> str:
    ci = f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r["ci"] and r["ci"][0] is not None else ""
    others = ", ".join(f"{k} {v:.3f}" for k, v in r["others"].items())
    members = ", ".join(f"{k} {v:.3f}" for k, v in r["members"].items() if v is not None)
    return (f"| `configs/{r['config']}.toml` | {r['n_train']:,} | {r['final']} | {r['metric']} **{r['value']:.3f}**{ci}"
            f"{' (' + others + ')' if others else ''} | {members} | {r['seconds']:.0f} s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "configs")
    ap.add_argument("--only", default=None, help="Comma-separated config names (file stems).")
    ap.add_argument("--skip", default="", help="Comma-separated config names to leave out.")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    names = args.only.split(",") if args.only else [p.stem for p in sorted((ROOT / "configs").glob("*.toml"))
                                                     if p.stem not in args.skip.split(",")]
    if args.smoke and args.out == ap.get_default("out"):
        args.out = smoke_work("configs")
    rows, failed = [], []
    for name in names:
        config = ROOT / "configs" / f"{name}.toml"
        if args.smoke:
            (args.out / name).mkdir(parents=True, exist_ok=True)
            small = smoke_dataset(RunConfig.from_toml(config), args.out / name / "data", config.parent)
            config = args.out / name / "smoke.toml"
            config.write_text(small.to_toml())
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(config),
                            "--out", str(args.out / name / "run" if args.smoke else args.out / name)],
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            print(f"{name}: run failed (exit {r.returncode}): {(r.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            failed.append(name)
            continue
        run_dir = args.out / name / "run" if args.smoke else args.out / name
        rows.append(row(name, json.loads((run_dir / "metrics.json").read_text()), time.perf_counter() - t0))
        print(markdown(rows[-1]), flush=True)
    print("\n| config | training rows | final model | final OOF (95% CI, patients) | members | wall |\n|---|---|---|---|---|---|")
    print("\n".join(markdown(r) for r in rows))
    for r in rows:
        if r["each"]:
            print(f"\n`configs/{r['config']}.toml`, every model:\n\n| model | ROC-AUC | pAUC (TPR >= 0.8) |\n|---|---|---|")
            print("\n".join(f"| {k} | {v['roc_auc']:.3f} | {v['pauc_tpr80']:.3f} |" for k, v in r["each"].items()))
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    if failed:
        sys.exit(f"{len(failed)} config(s) failed: {failed}")


if __name__ == "__main__":
    main()
