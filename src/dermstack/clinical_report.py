"""The clinical and comparison blocks of a run's ``metrics.json``.

:mod:`dermstack.clinical` computes; this module decides what a run reports: the final model's
primary metric with a patient-bootstrap interval, its binary operating points or its nested-CV
macro-F1 thresholds, and a paired bootstrap of every other model against it. All bootstraps use
one seed, so every interval and difference is taken over the same resampled cohorts.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl

from dermstack import clinical
from dermstack.data.table import LesionTable
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)

#: patient resamples of every interval and comparison (no config key sets it)
N_BOOT = 200
SEED = 0
#: who a resample draws, in order of preference: lesions of one patient are correlated, so a
#: patient is drawn whole; without patient ids, a lesion (its images together); else an image
UNIT_COLUMNS = ("patient_id", "lesion_id", "image_id")


def bootstrap_units(table: LesionTable, image_ids: list[str]) -> tuple[np.ndarray, str]:
    """The resampling unit of each training row (``patient_id``, else ``lesion_id``, else
    ``image_id``, per row) and a description of which columns supplied it."""
    rows = pl.DataFrame({"image_id": image_ids}).join(
        table.df.select(c for c in UNIT_COLUMNS if c in table.df.columns), on="image_id", how="left",
        maintain_order="left")
    present = [c for c in UNIT_COLUMNS if c in rows.columns]
    exprs = [pl.when(pl.col(c).cast(pl.String).str.len_chars() > 0).then(pl.lit(f"{c}:") + pl.col(c).cast(pl.String))
             for c in present]
    units = rows.select(pl.coalesce(exprs).alias("unit"))["unit"]
    source = units.str.extract(r"^([a-z_]+):")
    used = {c: int((source == c).sum()) for c in present}
    used = {c: n for c, n in used.items() if n}
    unit = next(iter(used)) if len(used) == 1 else ", else ".join(f"{c} ({n} rows)" for c, n in used.items())
    return units.to_numpy(), unit


def clinical_metrics(table: LesionTable, task: TaskSpec, scores: dict[str, np.ndarray], final: str,
                     folds: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """``primary_ci``, ``clinical`` (binary) or ``thresholds`` (multiclass, multi-label), and
    ``comparison`` (every model in ``scores`` but ``final``, paired against ``final``) from the
    OOF ``scores`` of the training rows; ``folds`` are the rows' CV folds (nested thresholds)."""
    t0 = time.perf_counter()
    units, unit = bootstrap_units(table, task.image_ids)
    primary, y, s_final = task.primary_metric, task.y, scores[final]
    out = {"primary_ci": {**clinical.metric_bootstrap(y, s_final, units, primary, n_boot, seed), "unit": unit,
                          "model": final, "metric": primary}}
    if task.kind.binary:
        out["clinical"] = clinical.operating_points(y, s_final, units, n_boot, seed)
        out["clinical"]["bootstrap"]["unit"] = unit
        if unit != "patient_id":  # a "patient" of one lesion has it in its top 15: the value would be 1 by construction
            out["clinical"]["top_15_sensitivity"] = {
                "value": None, "ci_low": None, "ci_high": None, "n_valid": 0,
                "note": f"not computed: needs a patient_id on every row (resampling unit here: {unit})"}
        out["clinical"]["model"] = final
    else:
        out["thresholds"] = {**clinical.tune_thresholds(y, s_final, folds, task.kind), "model": final,
                             "classes": task.classes}
    out["comparison"] = compare_models(y, {n: s for n, s in scores.items() if n != final}, s_final, units, primary,
                                       n_boot, seed)
    out["comparison"] |= {"reference": final, "unit": unit}
    log.info("clinical metrics and %d paired comparisons (%d patient resamples) in %.1f s",
             len(out["comparison"]["models"]), n_boot, time.perf_counter() - t0)
    return out


def compare_models(y, scores: dict[str, np.ndarray], reference: np.ndarray, units, metric: str,
                   n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """``paired_bootstrap`` of each model against the reference scores, on the same resamples."""
    return {"metric": metric, "n_boot": n_boot, "seed": seed,
            "models": {name: clinical.paired_bootstrap(y, s, reference, units, metric, n_boot, seed)
                       for name, s in scores.items()}}


def format_ci(value, lo, hi, fmt: str = ".3f") -> str:
    """``0.912 [0.880, 0.940]``: "n/a" for a missing value, the value alone for a missing interval."""
    def finite(v) -> bool:
        return isinstance(v, (int, float)) and np.isfinite(v)
    if not finite(value):
        return "n/a"
    return f"{value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]" if finite(lo) and finite(hi) else f"{value:{fmt}}"


def _ci(d: dict, fmt: str = ".4f") -> str:
    return format_ci(d.get("value"), d.get("ci_low"), d.get("ci_high"), fmt)


def summary_lines(metrics: dict) -> list[str]:
    """What ``dermstack run`` prints of these blocks: the final model's primary metric with its
    interval, then its operating points (binary) or macro F1 before/after thresholds."""
    lines = []
    ci = metrics.get("primary_ci")
    if ci:
        lines.append(f"final ({ci['model']}) {ci['metric']} = {_ci(ci)} (95% CI, {ci['n_boot']} resamples of {ci['unit']})")
    op = metrics.get("clinical")
    if op:
        top = op["top_15_sensitivity"]
        lines.append(f"operating points: flagged per cancer at 80% sensitivity {_ci(op['flagged_per_cancer_at_sensitivity_80'], '.2f')}, "
                     f"top-15 sensitivity {top.get('note') or _ci(top, '.3f')}")
        lines.append("  " + ", ".join(f"{k.replace('_', ' ')} {_ci(v, '.3f')}" for k, v in op.items()
                                     if k.startswith(("sensitivity_at", "specificity_at"))))
    th = metrics.get("thresholds")
    if th:
        lines.append(f"per-class thresholds ({th['rule']}, nested CV): macro F1 {th['f1_before']:.4f} -> {th['f1_after']:.4f}")
    rep = metrics.get("repeats")
    if rep:
        fin = rep["models"].get("final")
        if fin:
            lines.append(f"{rep['n']} CV repeats (fold seeds {rep['fold_seeds']}): final {rep['metric']} "
                         f"{fin['mean']:.4f} +- {fin['std']:.4f}")
    return lines
