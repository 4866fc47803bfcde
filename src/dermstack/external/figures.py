"""The numbers of ``evaluation.json``: each model on the new data beside its out-of-fold figure, the
calibration, the run's operating points promised and realised, and the subgroups.

Every interval is a patient bootstrap (:mod:`dermstack.clinical`, the engine of ``metrics.json``:
200 resamples of patients, else lesions, else images, seed 0). A gap (new data minus OOF) takes its
interval from the two data sets' independent resamples, draw by draw.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from dermstack import clinical
from dermstack.calibration import calibration_metrics
from dermstack.clinical.realised import chosen_thresholds, realised
from dermstack.clinical.thresholds import _macro_f1_of, apply_thresholds
from dermstack.metrics import PRIMARY_METRIC, ROC_AUC_METRIC, TASK_METRICS, percentile_ci
from dermstack.reports.subgroups import MISSING, SubgroupSettings, subgroup_columns, subgroup_table
from dermstack.taskkind import TaskKind


def _value(v: float, lo: float, hi: float, **extra) -> dict:
    def clean(x):
        return float(x) if x is not None and np.isfinite(x) else None
    return {"value": clean(v), "ci95": [clean(lo), clean(hi)], **extra}


class Sample:
    """Labels, scores per model and bootstrap units of one data set (the run's OOF rows, or the new rows)."""

    def __init__(self, kind: TaskKind, y: np.ndarray, scores: dict[str, np.ndarray], units: np.ndarray, n_boot: int,
                 seed: int):
        self.kind, self.y, self.scores, self.units, self.n_boot, self.seed = TaskKind(kind), y, scores, units, n_boot, seed
        self.n_units = len(np.unique(units))

    def draws(self, model: str, metric: str) -> tuple[float, np.ndarray]:
        """(the metric on all rows, its patient-bootstrap draws)."""
        y, s = self.y, self.scores[model]
        ok = np.isfinite(s.reshape(len(s), -1)).all(axis=1)  # a model that did not score a row (OOF)
        y, s, units = y[ok], s[ok], self.units[ok]
        try:
            value = float(TASK_METRICS[self.kind][metric](y, s))
        except ValueError:  # a class absent
            value = float("nan")
        if len(np.unique(units)) < 2:  # one patient: every resample is the data itself
            return value, np.full(self.n_boot, np.nan)
        return value, clinical.metric_draws(y, s, units, metric, self.n_boot, self.seed)


def model_figures(kind: TaskKind, new: Sample, oof: Sample) -> dict[str, dict]:
    """``models[name]``: the ROC-AUC (macro for several classes) and the primary metric on the new
    data, the same on the run's OOF rows (``oof``) and new minus OOF (``gap``), each with its CI."""
    metrics = {"roc_auc": ROC_AUC_METRIC[kind], PRIMARY_METRIC[kind]: PRIMARY_METRIC[kind]}
    primary = PRIMARY_METRIC[kind]
    out = {}
    for name in new.scores:
        model: dict = {}
        oof_block: dict = {"metric": primary}
        gap_block: dict = {"metric": primary}
        for key, metric in metrics.items():
            v, d = new.draws(name, metric)
            model[key] = _value(v, *percentile_ci(d), metric=metric, n_valid=int(np.isfinite(d).sum()))
            if name not in oof.scores:
                continue
            ov, od = oof.draws(name, metric)
            oof_block[key] = _value(ov, *percentile_ci(od))
            gap_block[key] = _value(v - ov, *percentile_ci(d - od))
        if name in oof.scores:
            oof_block |= {k: oof_block[primary][k] for k in ("value", "ci95")}
            gap_block |= {k: gap_block[primary][k] for k in ("value", "ci95")}
        model["oof"] = oof_block if name in oof.scores else None
        model["gap"] = gap_block if name in oof.scores else None
        out[name] = model
    return out


def calibration_figures(kind: TaskKind, y: np.ndarray, final: np.ndarray, calibrated: np.ndarray | None,
                        run_calibration: dict | None) -> dict:
    """ECE (10 equal-count bins) and Brier score of the final model's scores on the new data without
    and with the run's calibrator, beside what the run measured out of fold."""
    out = {"bins": "10 equal-count bins", "without": calibration_metrics(kind, y, final),
           "with": calibration_metrics(kind, y, calibrated) if calibrated is not None else None}
    if run_calibration:
        out |= {"method": run_calibration.get("method"),
                "oof": {"without": run_calibration.get("before"), "with": run_calibration.get("after")}}
    return out


def operating_figures(run_metrics: dict, oof_y: np.ndarray, oof_final: np.ndarray, new: Sample, final: str) -> list[dict]:
    """Each operating point the run chose: its threshold on the final model's scores, what it gave
    out of fold (``promised``), and the sensitivity and specificity it realises on the new data with
    CIs; a guaranteed threshold (``metrics.json`` ``clinical`` entries with a ``delta``) says whether
    its promise held. Multiclass / multi-label: the run's macro-F1 rule, promised and realised."""
    kind = TaskKind(run_metrics["task"])
    y, s = new.y, new.scores[final]
    if not kind.binary:
        th = run_metrics.get("thresholds")
        if not th:
            return []
        n = s.shape[1]
        decided = apply_thresholds(s, th["thresholds"], kind)
        return [{"name": "macro_f1_rule", "rule": th["rule"], "thresholds": th["thresholds"],
                 "promised": {"macro_f1": th["f1_after"]}, "macro_f1": {"value": _macro_f1_of(y, decided, kind, n)},
                 "macro_f1_default_rule": {"value": _macro_f1_of(y, apply_thresholds(s, np.ones(n) if kind.exclusive
                                                                                     else np.full(n, 0.5), kind), kind, n)}}]
    out = []
    scored = np.isfinite(oof_final)
    for name, point in chosen_thresholds(oof_y[scored], oof_final[scored]).items():
        got = realised(y, s, new.units, point["threshold"], new.n_boot, new.seed)
        target = point["target"]
        which, q = next(iter(target.items()))
        held = got[which]["value"] is not None and got[which]["value"] >= q - 1e-12
        out.append({"name": name, "kind": "empirical", "model": final, "threshold": point["threshold"],
                    "rule": f"{which} >= {q:g} out of fold", "target": target,
                    "promised": {"sensitivity": point["sensitivity"], "specificity": point["specificity"]},
                    "sensitivity": got["sensitivity"], "specificity": got["specificity"],
                    "flagged_per_cancer": got["flagged_per_cancer"], "held": bool(held)})
    out += _guaranteed(run_metrics.get("clinical") or {}, new, final)
    return out


def _guaranteed(block: dict, new: Sample, final: str) -> list[dict]:
    """Thresholds with a finite-sample guarantee (``metrics.json`` ``clinical``: any entry with a
    ``threshold`` and a ``delta``), and whether sensitivity >= target held on the new data."""
    out = []
    for name, entry in block.items():
        if not (isinstance(entry, dict) and "delta" in entry and entry.get("threshold") is not None):
            continue
        target = entry.get("target_sensitivity", entry.get("target"))
        got = realised(new.y, new.scores[final], new.units, float(entry["threshold"]), new.n_boot, new.seed)
        held = target is not None and got["sensitivity"]["value"] is not None and got["sensitivity"]["value"] >= target
        out.append({"name": name, "kind": "guaranteed", "model": final, "threshold": float(entry["threshold"]),
                    "rule": f"sensitivity >= {target} with probability >= 1 - {entry['delta']}", "delta": entry["delta"],
                    "target": {"sensitivity": target}, "promised": {k: v for k, v in entry.items() if k != "threshold"},
                    "sensitivity": got["sensitivity"], "specificity": got["specificity"],
                    "flagged_per_cancer": got["flagged_per_cancer"], "held": bool(held)})
    return out


def subgroup_figures(kind: TaskKind, rows: pl.DataFrame, y: np.ndarray, s: np.ndarray, n_boot: int, seed: int,
                     model: str) -> dict:
    """Every subgroup column the new rows have (skin tone, sex, age band, site, ``attribution``): each
    group's metrics with CIs, and per attribute and metric the worst minus the best group."""
    groups = subgroup_columns(rows)
    if "attribution" in rows.columns and rows["attribution"].null_count() < rows.height:
        groups["attribution"] = rows["attribution"].cast(pl.String).fill_null(MISSING).alias("attribution")
    if not groups:
        return {"attributes": [], "groups": [], "gaps": [], "worst": None}
    table = subgroup_table(kind, y, s, groups, SubgroupSettings(n_boot=n_boot, seed=seed), model)
    group_rows = table.filter(pl.col("kind") == "group")
    gaps = [{"attribute": r["attribute"], "metric": r["metric"], "best": r["best"], "worst": r["worst"],
             "worst_minus_best": _value(-r["value"], -r["ci_high"], -r["ci_low"])}
            for r in table.filter(pl.col("kind") == "best - worst").iter_rows(named=True)]
    primary = PRIMARY_METRIC[kind]
    ok = group_rows.filter((pl.col("metric") == primary) & ~pl.col("small") & (pl.col("group") != MISSING)
                           & pl.col("value").is_not_nan())
    worst = ok.sort("value").row(0, named=True) if ok.height else None
    return {"attributes": list(groups), "groups": [_group(r) for r in group_rows.iter_rows(named=True)], "gaps": gaps,
            "worst": _group(worst) if worst else None, "settings": {"n_boot": n_boot, "min_n": SubgroupSettings.min_n,
                                                                    "min_pos": SubgroupSettings.min_pos,
                                                                    "resampling": "rows within the group"}}


def _group(r: dict) -> dict:
    return {"attribute": r["attribute"], "group": r["group"], "n": r["n"], "n_pos": r["n_pos"], "metric": r["metric"],
            **_value(r["value"], r["ci_low"], r["ci_high"]), "small": r["small"], "note": r["note"] or None}
