"""Benchmark: patient-bootstrap cost of `dermstack.clinical` at ISIC 2024 training size.

    flock /tmp/dermstack-heavy.lock .venv/bin/python benchmarks/clinical_scale.py [--rows 401059] [--boot 200] [--smoke]

Synthetic binary task: 401,059 lesions, about 400 cancers, about 1,000 patients, random scores
with a shift for cancers. Prints seconds for
  1. operating_points (every clinical operating metric, --boot patient resamples, vectorised);
  2. the same intervals computed the plain way (rows of each resample repeated, point functions
     called per resample), timed on --loop resamples and scaled to --boot, and their ratio;
  3. paired_bootstrap of pauc_tpr80 and of roc_auc between two models on the same resamples
     (vectorised ROC curves), and pauc_tpr80 through the generic path (the metric called on each
     resample's rows, as for any other metric), timed on --loop resamples and scaled;
  4. tune_thresholds (nested over 5 folds) at MILK10k size: 10,480 lesions, 11 classes;
  5. the row-bootstrap intervals of roc_auc and pauc_tpr80 that every model's metrics.json gets
     (crossfit.fold_metrics: both metrics on one set of --boot resamples), against each metric drawn alone.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dermstack import clinical, metrics
from dermstack.testing import SMOKE_HELP


def synthetic(n: int, n_pos: int, n_patients: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, n_pos, replace=False)] = 1
    patient = rng.integers(0, n_patients, n)
    s_a = rng.random(n) + y * 0.6
    s_b = rng.random(n) + y * 0.5
    return y, s_a, s_b, patient


def milk10k_like(n: int = 10_480, n_classes: int = 11, seed: int = 0):
    """Imbalanced classes with the rare ones under-scored, as a model trained on them would."""
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.full(n_classes, 0.7))
    y = rng.choice(n_classes, n, p=prior)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[y] + 1.5 * np.log(prior)
    s = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, s, rng.integers(0, 5, n)


def loop_bootstrap(y, s, patient, n_boot: int, seed: int) -> None:
    """The unvectorised equivalent of operating_points' intervals (what the vectorised code replaces)."""
    codes = np.unique(patient, return_inverse=True)[1]
    counts = clinical.patient_resamples(codes.max() + 1, n_boot, seed)
    for row in counts:
        idx = np.repeat(np.arange(len(y)), row[codes])
        yy, ss = y[idx], s[idx]
        clinical.flagged_per_cancer(yy, ss, 0.8)
        for q in (0.9, 0.95):
            clinical.sensitivity_at_specificity(yy, ss, q)
        for q in (0.8, 0.95):
            clinical.specificity_at_sensitivity(yy, ss, q)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=401_059)
    ap.add_argument("--positives", type=int, default=400)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--loop", type=int, default=10, help="resamples timed for the plain-loop figure")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.positives, args.patients, args.boot, args.loop = 3000, 40, 200, 10, 2
    y, s_a, s_b, patient = synthetic(args.rows, args.positives, args.patients)
    print(f"{args.rows:,} rows, {y.sum()} positives, {len(np.unique(patient))} patients, {args.boot} patient resamples")

    sec, out = timed(clinical.operating_points, y, s_a, patient, n_boot=args.boot, seed=0)
    print(f"operating_points (vectorised)        {sec:8.2f} s")
    loop_sec, _ = timed(loop_bootstrap, y, s_a, patient, args.loop, 0)
    loop_sec *= args.boot / args.loop
    print(f"same intervals, loop over resamples  {loop_sec:8.2f} s  "
          f"(timed on {args.loop}, scaled; {loop_sec / sec:.0f}x slower)")
    for name in ("pauc_tpr80", "roc_auc"):
        sec, cmp = timed(clinical.paired_bootstrap, y, s_a, s_b, patient, name, n_boot=args.boot, seed=0)
        print(f"paired_bootstrap {name:12s}        {sec:8.2f} s  (diff {cmp['diff']:+.4f}, "
              f"95% CI {cmp['ci_low']:+.4f}..{cmp['ci_high']:+.4f}, p {cmp['p_value']:.3f})")
    generic = lambda yy, ss: metrics.pauc_tpr80(yy, ss)  # noqa: E731 (not the registered function: no fast path)
    sec, _ = timed(clinical.paired_bootstrap, y, s_a, s_b, patient, generic, n_boot=args.loop, seed=0)
    print(f"paired_bootstrap pauc_tpr80, generic {sec * args.boot / args.loop:8.2f} s  (timed on {args.loop}, scaled)")
    yc, sc, folds = milk10k_like(1000 if args.smoke else 10_480)
    for task, labels in (("multiclass", yc), ("multilabel", np.eye(sc.shape[1], dtype=int)[yc])):
        sec, tuned = timed(clinical.tune_thresholds, labels, sc, folds, task)
        print(f"tune_thresholds {task:10s} 10,480x11 {sec:8.2f} s  (macro F1 {tuned['f1_before']:.3f} -> "
              f"{tuned['f1_after']:.3f} nested)")
    roc = {"roc_auc": metrics.roc_auc, "pauc_tpr80": metrics.pauc_tpr80}
    together, _ = timed(metrics.bootstrap_cis, roc, y, s_a, n=args.boot)
    alone = sum(timed(metrics.bootstrap_ci, fn, y, s_a, n=args.boot)[0] for fn in roc.values())
    print(f"row bootstrap roc_auc + pauc_tpr80   {together:8.2f} s  (each drawn alone {alone:.2f} s; {alone / together:.1f}x)")
    for name in ("flagged_per_cancer_at_sensitivity_80", "top_15_sensitivity", "sensitivity_at_specificity_90"):
        v = out[name]
        print(f"  {name}: {v['value']:.4g} (95% CI {v['ci_low']:.4g}..{v['ci_high']:.4g})")


if __name__ == "__main__":
    main()
