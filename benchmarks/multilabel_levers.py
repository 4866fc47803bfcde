"""MILK10k metadata-only (11-class multi-label, macro F1): levers against the default config, each on
the same folds, over several fold seeds, so that only what holds across seeds is kept.

Per fold seed (``[cv] seed``), every variant is run with the default config's models and ensemble:

- ``default``: the boosters' multi-label default, ``class_weight = "balanced"``;
- ``class_weight=sqrt`` / ``class_weight=none``: every booster with that class weight instead;
- each variant again with **per-class thresholds chosen by nested CV** (``metrics.json``
  ``thresholds``: fold k's rows decided by the thresholds fitted on the other folds), against the
  same variant's 0.5 threshold.

A variant's paired difference from ``default`` is ``dermstack compare``'s (same folds, patient
bootstrap, 95% CI); thresholds against 0.5 are paired on the same resamples by the same
``paired_bootstrap``, on the 0/1 decisions.

  .venv/bin/python benchmarks/multilabel_levers.py [--data ../shared/data/milk10k-dev] [--seeds 42 43 44]
      [--out runs/multilabel_levers] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dermstack.boosting.kind import SMOKE as BOOSTER_SMOKE
from dermstack.testing import SMOKE_HELP, shared_data_dir, smoke_work, tiny_copy

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[data]
format = "milk10k"
path = "{data}"
task = "multilabel"

[cv]
seed = {seed}
{splits}{models}"""
BOOSTERS = ("lightgbm", "xgboost", "catboost")
VARIANTS = {"default": None, "class_weight=sqrt": "sqrt", "class_weight=none": "none"}


def models_toml(class_weight: str | None, smoke: bool = False) -> str:
    """The default model set (boosters and the linear probe), the boosters with ``class_weight``; at the
    smoke size named, with the boosters' smoke rounds and two values of the probe's C."""
    if class_weight is None and not smoke:
        return ""
    params = {**(BOOSTER_SMOKE["params"] if smoke else {}), **({"class_weight": class_weight} if class_weight else {})}
    inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items())
    blocks = [f'\n[[models]]\nkind = "{k}"\nparams = {{ {inline} }}\n' for k in BOOSTERS]
    probe = '\n[[models]]\nkind = "logistic"\n' + ("params = { C = [0.1, 1.0] }\n" if smoke else "")
    return "".join(blocks) + probe


def thresholded(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y, 0.5 decisions, nested-CV threshold decisions, patient units, fold ids) of a run's final model."""
    from dermstack.clinical.thresholds import apply_thresholds
    from dermstack.clinical_report import bootstrap_units
    from dermstack.reports.rundata import RunData

    rd = RunData.load(run)
    s, fold = rd.scores(rd.final_model), rd.folds.fold_of(rd.task.image_ids)
    th = rd.metrics["thresholds"]["fold_thresholds"]
    tuned = np.zeros_like(s)
    for k, t in th.items():
        rows = fold == int(k)
        tuned[rows] = apply_thresholds(s[rows], t, "multilabel")
    units, _ = bootstrap_units(rd.table, rd.task.image_ids)
    return rd.task.y, (s >= 0.5).astype(float), tuned, units, fold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=(shared_data_dir() or ROOT.parent / "shared" / "data") / "milk10k-dev")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "multilabel_levers")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    from dermstack.clinical import paired_bootstrap

    if args.smoke:
        args.out = smoke_work("multilabel_levers")
        args.data = tiny_copy("milk10k", args.data, args.out / "data", task="multilabel", per_class=9)
        args.seeds = args.seeds[:1]
    variants = dict(list(VARIANTS.items())[:2]) if args.smoke else VARIANTS
    splits = "n_splits = 3\n" if args.smoke else ""
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        runs = {}
        for name, cw in variants.items():
            d = args.out / f"seed{seed}" / name.replace("=", "-")
            d.mkdir(parents=True, exist_ok=True)
            models = models_toml(cw, args.smoke)
            (d / "config.toml").write_text(CONFIG.format(data=args.data.resolve(), seed=seed, splits=splits, models=models))
            done = subprocess.run([sys.executable, "-m", "dermstack.cli", "run", str(d / "config.toml"), "--out", str(d / "run")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode:  # a variant that cannot fit this data is a finding, not the end of the benchmark
                said = [line[line.index("Error:"):] for line in done.stderr.replace("\r", "\n").splitlines() if "Error:" in line]
                error = said[0] if said else done.stderr[-300:]
                rows.append({"seed": seed, "variant": name, "error": error})
                print(json.dumps(rows[-1]), flush=True)
                continue
            runs[name] = d / "run"
        cmp_dir = args.out / f"seed{seed}" / "compare"
        subprocess.run([sys.executable, "-m", "dermstack.cli", "compare", *map(str, runs.values()), "--out", str(cmp_dir)],
                       check=True, stdout=subprocess.DEVNULL)
        compared = json.loads((cmp_dir / "compare.json").read_text())
        base = None
        for name, run in runs.items():
            y, half, tuned, units, _ = thresholded(run)
            th = paired_bootstrap(y, tuned, half, units, "macro_f1")
            m = json.loads((run / "metrics.json").read_text())
            row = {"seed": seed, "variant": name, "final": m["oof_model"], "macro_f1": m["oof"]["macro_f1"],
                   "macro_f1_thresholds": th["value_a"], "thresholds_diff": [th["diff"], th["ci_low"], th["ci_high"]]}
            if base is None:
                base = (y, tuned, units)
            else:
                vs = paired_bootstrap(y, tuned, base[1], units, "macro_f1")
                row["vs_default_thresholds"] = [vs["diff"], vs["ci_low"], vs["ci_high"]]
                row["vs_default"] = _compared(compared, run)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "result.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{'seed':>4} {'variant':18} {'final':10} {'F1@0.5':>7} {'F1 thr':>7}  thr - 0.5 [95% CI]      "
          "vs default @0.5 [CI]     vs default thr [CI]")
    for r in rows:
        if "error" in r:
            print(f"{r['seed']:>4} {r['variant']:18} fails: {r['error']}")
            continue

        def ci(v):
            return f"{v[0]:+.4f} [{v[1]:+.3f}, {v[2]:+.3f}]" if v else " " * 24
        print(f"{r['seed']:>4} {r['variant']:18} {r['final']:10} {r['macro_f1']:7.4f} {r['macro_f1_thresholds']:7.4f}  "
              f"{ci(r['thresholds_diff'])}  {ci(r.get('vs_default'))}  {ci(r.get('vs_default_thresholds'))}")


def _compared(compared: dict, run: Path) -> list[float]:
    """(difference, 95% CI) of ``run``'s macro F1 against the reference in a compare.json."""
    entry = next(c for c in compared["comparisons"] if Path(c["run"]) == Path(run))
    e = entry["metrics"]["macro_f1"]
    return [e["difference"], *e["ci95"]]


if __name__ == "__main__":
    main()
