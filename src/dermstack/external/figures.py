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


def run_thresholds(run_metrics: dict, oof_y: np.ndarray, oof_final: np.ndarray) -> list[dict]:
    """Each threshold the run chose: ``{name, class, kind, target, threshold, promised, delta}``.
    ``metrics.json`` ``clinical`` entries (and, for several classes, ``thresholds.one_vs_rest``) carry
    their empirical ``threshold`` and a ``guaranteed`` one with its ``delta``; a run written before
    they did gets the empirical thresholds again from its final model's OOF scores, by the same rule."""
    kind = TaskKind(run_metrics["task"])
    blocks = ({None: run_metrics.get("clinical") or {}} if kind.binary
              else ((run_metrics.get("thresholds") or {}).get("one_vs_rest") or {}))
    points, seen = [], set()
    for cls, entries in blocks.items():
        for name, e in entries.items():
            if not isinstance(e, dict) or not ("target_sensitivity" in e or "target_specificity" in e):
                continue
            which = "sensitivity" if "target_sensitivity" in e else "specificity"
            target = {which: e[f"target_{which}"]}
            g = e.get("guaranteed") or {}
            for k, t, promised, delta in (("empirical", e.get("threshold"), e, None),
                                          ("guaranteed", g.get("threshold"), g, g.get("delta"))):
                if t is None or (cls, k, t, which) in seen:
                    continue
                seen.add((cls, k, t, which))
                points.append({"name": name, "class": cls, "kind": k, "target": target, "threshold": float(t), "delta": delta,
                               "promised": {m: promised.get(m) for m in ("sensitivity", "specificity", "confidence", "n_pos")
                                            if m in promised}})
    # sensitivity targets first (empirical, then guaranteed), then specificity targets, per class
    points.sort(key=lambda p: (str(p["class"]), "specificity" in p["target"], *p["target"].values(), p["kind"]))
    if not points and kind.binary:
        scored = np.isfinite(oof_final)
        points = [{"name": name, "class": None, "kind": "empirical", "target": p["target"], "threshold": p["threshold"],
                   "delta": None, "promised": {"sensitivity": p["sensitivity"], "specificity": p["specificity"]}}
                  for name, p in chosen_thresholds(oof_y[scored], oof_final[scored]).items()]
    return points


def unguaranteed(run_metrics: dict) -> list[str]:
    """Why a target sensitivity has no guaranteed threshold in the run (too few positives, say)."""
    kind = TaskKind(run_metrics["task"])
    blocks = ({"": run_metrics.get("clinical") or {}} if kind.binary
              else ((run_metrics.get("thresholds") or {}).get("one_vs_rest") or {}))
    out = []
    for cls, entries in blocks.items():
        for name, e in entries.items():
            g = e.get("guaranteed") if isinstance(e, dict) else None
            if g and g.get("threshold") is None and name.startswith("specificity_at_sensitivity"):
                out.append(f"{cls + ': ' if cls else ''}no guaranteed threshold for sensitivity {e.get('target_sensitivity')} in "
                           f"the run: {g.get('note') or 'not computed'}")
    return out


def operating_figures(run_metrics: dict, oof_y: np.ndarray, oof_final: np.ndarray, new: Sample, final: str,
                      classes: list[str]) -> list[dict]:
    """Each threshold the run chose (:func:`run_thresholds`) applied unchanged to the new data: the
    sensitivity, specificity and lesions flagged per cancer it realises there, with CIs, and whether
    its target ``held`` (for a guaranteed threshold: whether the promise held). Several classes: one
    vs the rest per class, and the run's macro-F1 rule."""
    kind = TaskKind(run_metrics["task"])
    y, s = new.y, new.scores[final]
    out = []
    for p in run_thresholds(run_metrics, oof_y, oof_final):
        if p["class"] is None:
            yc, sc = y, s
        else:
            k = classes.index(p["class"])
            yc, sc = (y[:, k] if y.ndim == 2 else (y == k).astype(np.int8)), s[:, k]
        if yc.min() == yc.max():
            continue  # the class absent (or alone) here: nothing to realise
        got = realised(yc, sc, new.units, p["threshold"], new.n_boot, new.seed)
        which, q = next(iter(p["target"].items()))
        value = got[which]["value"]
        rule = f"{which} >= {q:g}" + (f" with probability >= {1 - p['delta']:g}" if p["delta"] is not None else " out of fold")
        out.append({**p, "model": final, "rule": (f"{p['class']}: " if p["class"] else "") + rule,
                    "sensitivity": got["sensitivity"], "specificity": got["specificity"],
                    "flagged_per_cancer": got["flagged_per_cancer"], "held": value is not None and value >= q - 1e-12})
    if not kind.binary and run_metrics.get("thresholds"):
        th, n = run_metrics["thresholds"], s.shape[1]
        default = np.ones(n) if kind.exclusive else np.full(n, 0.5)
        out.append({"name": "macro_f1_rule", "rule": th["rule"], "thresholds": th["thresholds"],
                    "promised": {"macro_f1": th["f1_after"]},
                    "macro_f1": {"value": _macro_f1_of(y, apply_thresholds(s, th["thresholds"], kind), kind, n)},
                    "macro_f1_default_rule": {"value": _macro_f1_of(y, apply_thresholds(s, default, kind), kind, n)}})
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
    ok = ok.filter(pl.len().over("attribute") > 1)  # a group that is the whole data is no subgroup
    worst = ok.sort("value").row(0, named=True) if ok.height else None
    return {"attributes": list(groups), "groups": [_group(r) for r in group_rows.iter_rows(named=True)], "gaps": gaps,
            "worst": _group(worst) if worst else None, "settings": {"n_boot": n_boot, "min_n": SubgroupSettings.min_n,
                                                                    "min_pos": SubgroupSettings.min_pos,
                                                                    "resampling": "rows within the group"}}


def _group(r: dict) -> dict:
    return {"attribute": r["attribute"], "group": r["group"], "n": r["n"], "n_pos": r["n_pos"], "metric": r["metric"],
            **_value(r["value"], r["ci_low"], r["ci_high"]), "small": r["small"], "note": r["note"] or None}
