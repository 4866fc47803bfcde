"""Calibration of finished runs' final models: every candidate's nested-CV ECE and Brier score, the
one chosen, and the ranking metrics of the calibrated model's OOF scores against the raw ones
(calibration must never cost ranking). ``--before``: the same for another version of
``dermstack/calibration.py`` on the same OOF scores and folds, whose calibrated OOF scores were
the nested ones.

  .venv/bin/python benchmarks/calibration_ranking.py RUN_DIR [RUN_DIR ...]
      [--before <(git show COMMIT:src/dermstack/calibration.py)] [--smoke]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

from dermstack import calibration
from dermstack.metrics import evaluate
from dermstack.testing import SMOKE_HELP


def measure(module, kind: str, y: np.ndarray, s: np.ndarray, fold: np.ndarray, nested_is_oof: bool) -> dict:
    cal, nested, record = module.calibrate(kind, y, s, fold)
    oof = nested if nested_is_oof else cal.apply(s)
    return {"method": record["method"], "ece": record["after"]["ece"], "brier": record["after"]["brier"],
            "candidates": {m: [c["ece"], c["brier"]] for m, c in record["candidates"].items()},
            "ranking": evaluate(kind, y, oof)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--before", type=Path, default=None, help="Another calibration.py (its OOF scores: the nested ones).")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    versions = {"now": (calibration, False)}
    if args.before is not None:
        spec = importlib.util.spec_from_loader("calibration_before", loader=None)
        before = importlib.util.module_from_spec(spec)
        exec(compile(args.before.read_text(), str(args.before), "exec"), before.__dict__)
        versions = {"before": (before, True)} | versions
    cases = []
    if args.smoke:  # synthetic scores that over-state every probability
        rng = np.random.default_rng(0)
        s = rng.random(600)
        cases.append(("synthetic", "binary", (rng.random(600) < s ** 2).astype(int), s, np.arange(600) % 5))
    for run in args.runs:
        from dermstack.reports.rundata import RunData

        rd = RunData.load(run)
        final = rd.metrics["oof_model"]
        cases.append((f"{run} ({final})", rd.task.kind, rd.task.y, rd.scores(final), rd.folds.fold_of(rd.task.image_ids)))
    for name, kind, y, s, fold in cases:
        out = {"run": name, "raw": evaluate(kind, y, s)}
        out |= {v: measure(module, kind, y, s, fold, nested) for v, (module, nested) in versions.items()}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
