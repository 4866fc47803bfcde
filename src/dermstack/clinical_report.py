"""The clinical, comparison and held-out-group blocks of a run's ``metrics.json``.

:mod:`dermstack.clinical` computes; this module decides what a run reports: the final model's
primary metric with a patient-bootstrap interval, its binary operating points (each with its
threshold, and for a target sensitivity the threshold with a guarantee) or its nested-CV macro-F1
thresholds and one-vs-rest operating points per class, a paired bootstrap of every other model
against it, and with ``[cv] group`` every model's figures on each held-out group. All bootstraps
use one seed, so every interval and difference is taken over the same resampled cohorts.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl

from dermstack import clinical
from dermstack.clinical.guarantee import METHOD as GUARANTEE_METHOD
from dermstack.clinical.guarantee import sensitivity_threshold
from dermstack.clinical.operating import rates, specificity_threshold
from dermstack.data.folds import FoldPlan
from dermstack.data.groups import SMALL_POSITIVES, SMALL_ROWS
from dermstack.data.table import LesionTable
from dermstack.metrics import ROC_AUC_METRIC, evaluate
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)

#: bootstrap resamples (of UNIT_COLUMNS) of every interval and comparison (no config key sets it)
N_BOOT = 200
SEED = 0
#: who a resample draws, in order of preference: lesions of one patient are correlated, so a
#: patient is drawn whole; without patient ids, a lesion (its images together); else an image
UNIT_COLUMNS = ("patient_id", "lesion_id", "image_id")
#: the operating points' targets: specificity at these sensitivities (each also with a guaranteed
#: threshold), sensitivity at these specificities, lesions flagged per cancer at this sensitivity
SENSITIVITIES = (0.8, 0.95)
SPECIFICITIES = (0.9, 0.95)
FLAG_SENSITIVITY = 0.8
#: ``[clinical] delta`` when no config gives one (dermstack.config.sections.ClinicalConfig)
DELTA = 0.05
#: past this many held-out groups their figures come without intervals (a bootstrap per group,
#: model and metric would take longer than the models)
MAX_GROUP_INTERVALS = 50


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
                     plan: FoldPlan, n_boot: int = N_BOOT, seed: int = SEED, delta: float = DELTA) -> dict:
    """``primary_ci``, ``clinical`` (binary) or ``thresholds`` (multiclass, multi-label), ``comparison``
    (every model in ``scores`` but ``final``, paired against ``final``) and, when the plan is grouped by
    a column, ``held_out_groups``, from the OOF ``scores`` of the training rows on ``plan`` (its folds
    nest the thresholds). ``delta``: the guaranteed thresholds' ``[clinical] delta``."""
    t0 = time.perf_counter()
    units, unit = bootstrap_units(table, task.image_ids)
    primary, y, s_final = task.primary_metric, task.y, scores[final]
    out = {"primary_ci": {**clinical.metric_bootstrap(y, s_final, units, primary, n_boot, seed), "unit": unit,
                          "model": final, "metric": primary}}
    if task.kind.binary:
        out["clinical"] = binary_operating_points(y, s_final, units, n_boot, seed, delta, final)
        out["clinical"]["bootstrap"]["unit"] = unit
        if unit != "patient_id":  # a "patient" of one lesion has it in its top 15: the value would be 1 by construction
            out["clinical"]["top_15_sensitivity"] = {
                "value": None, "ci_low": None, "ci_high": None, "n_valid": 0,
                "note": f"not computed: needs a patient_id on every row (resampling unit here: {unit})"}
        out["clinical"]["model"] = final
    else:
        out["thresholds"] = {**clinical.tune_thresholds(y, s_final, plan.fold_of(task.image_ids), task.kind),
                             "model": final, "classes": task.classes,
                             "one_vs_rest": one_vs_rest_points(task, s_final, units, n_boot, seed, delta),
                             "guarantee": _guarantee(delta, final)}
    out["comparison"] = compare_models(y, {n: s for n, s in scores.items() if n != final}, s_final, units, primary,
                                       n_boot, seed)
    out["comparison"] |= {"reference": final, "unit": unit}
    points = [v for k, v in (out.get("clinical") or {}).items() if k.startswith("specificity_at_sensitivity")]
    groups = held_out_groups(task, scores, final, plan, units, unit, n_boot, seed, points)
    if groups:
        out["held_out_groups"] = groups
    log.info("clinical metrics and %d paired comparisons (%d bootstrap resamples of %s) in %.1f s",
             len(out["comparison"]["models"]), n_boot, unit, time.perf_counter() - t0)
    return out


def _guarantee(delta: float, model: str) -> dict:
    return {"delta": delta, "confidence": 1 - delta, "method": GUARANTEE_METHOD, "scores": f"out-of-fold scores of {model}",
            "assumes": "positives exchangeable with the new data's and independent of each other"}


def _pct(q: float) -> str:
    return f"{100 * q:g}"


def binary_operating_points(y, s, units, n_boot: int = N_BOOT, seed: int = SEED, delta: float = DELTA,
                            model: str = "the model") -> dict:
    """:func:`dermstack.clinical.operating_points` with each point's threshold on ``s``: the
    empirical one with the ``sensitivity`` and ``specificity`` it has here, and for a target
    sensitivity also ``guaranteed`` (:func:`dermstack.clinical.guarantee.sensitivity_threshold`)."""
    out = clinical.operating_points(y, s, units, n_boot, seed, specificities=SPECIFICITIES, sensitivities=SENSITIVITIES,
                                    flag_sensitivity=FLAG_SENSITIVITY)
    for q in SENSITIVITIES:
        out[f"specificity_at_sensitivity_{_pct(q)}"] |= sensitivity_threshold(y, s, q, delta)
    out[f"flagged_per_cancer_at_sensitivity_{_pct(FLAG_SENSITIVITY)}"] |= sensitivity_threshold(y, s, FLAG_SENSITIVITY, delta)
    for q in SPECIFICITIES:
        out[f"sensitivity_at_specificity_{_pct(q)}"] |= specificity_threshold(y, s, q)
    out["guarantee"] = _guarantee(delta, model)
    return out


def one_vs_rest_points(task: TaskSpec, s: np.ndarray, units, n_boot: int = N_BOOT, seed: int = SEED,
                       delta: float = DELTA) -> dict:
    """Per class, its score column against the other classes: ``specificity_at_sensitivity_{80,95}``
    with patient-bootstrap intervals, thresholds and guaranteed thresholds, as the binary points."""
    onehot = task.y if task.kind.multilabel else np.eye(len(task.classes), dtype=int)[task.y]
    out = {}
    for c, name in enumerate(task.classes):
        yc, sc = onehot[:, c], s[:, c]
        points = clinical.operating_points(yc, sc, units, n_boot, seed, specificities=(), sensitivities=SENSITIVITIES,
                                           flag_sensitivity=FLAG_SENSITIVITY)
        out[name] = {"n_pos": int(yc.sum())}
        for q in SENSITIVITIES:
            key = f"specificity_at_sensitivity_{_pct(q)}"
            out[name][key] = points[key] | sensitivity_threshold(yc, sc, q, delta)
    return out


def held_out_groups(task: TaskSpec, scores: dict[str, np.ndarray], final: str, plan: FoldPlan, units, unit: str,
                    n_boot: int = N_BOOT, seed: int = SEED, points: list[dict] = ()) -> dict | None:
    """metrics.json ``held_out_groups``: for each held-out group of a plan grouped by a column
    (``[cv] group``), its fold, rows, positives and every model's primary metric and ROC-AUC on its
    out-of-fold rows as ``{"value", "ci95": [lo, hi]}`` (bootstrap of ``unit`` within the group), and
    (binary) ``at_thresholds``: the final model's sensitivity and specificity in the group at each
    target sensitivity's empirical and guaranteed threshold (``points``: the run's operating points,
    chosen on every group's rows: does the promise hold group by group?). None when the plan is
    grouped by patient alone."""
    names = plan.held_out_groups(task.image_ids)
    if names is None:
        return None
    fold = plan.fold_of(task.image_ids)
    metrics = [task.primary_metric, ROC_AUC_METRIC[task.kind]]
    order = sorted(np.unique(names), key=lambda g: (int(fold[names == g][0]), g))
    boot = n_boot if len(order) <= MAX_GROUP_INTERVALS else 0
    groups = []
    for g in order:
        rows = names == g
        y = task.y[rows]
        entry = {"group": str(g), "fold": int(fold[rows][0]), "n": int(rows.sum())}
        counts = task.kind.positives(y, task.classes)
        entry["n_positive"] = int(y.sum()) if task.kind.binary else None
        entry["classes"] = None if task.kind.binary else counts
        entry["small"] = bool(entry["n"] < SMALL_ROWS or (task.kind.binary and entry["n_positive"] < SMALL_POSITIVES))
        entry["note"] = ("one class only: its ROC-AUC and pAUC are undefined" if task.kind.binary and
                         entry["n_positive"] in (0, entry["n"]) else None)
        entry["models"] = {}
        for name, s in scores.items():
            entry["models"][name] = {}
            if not boot:  # too many groups for intervals: the values alone
                values = evaluate(task.kind, y, s[rows])
                entry["models"][name] = {m: {"value": values[m], "ci95": [None, None]} for m in metrics}
                continue
            for m in metrics:
                b = clinical.metric_bootstrap(y, s[rows], units[rows], m, boot, seed)
                entry["models"][name][m] = {"value": b["value"], "ci95": [b["ci_low"], b["ci_high"]]}
        if task.kind.binary:
            entry["at_thresholds"] = [_at_thresholds(p, y.astype(bool), scores[final][rows]) for p in points]
        groups.append(entry)
    g = plan.grouping or {}
    return {"column": g.get("column"), "leave_one_group_out": bool(g.get("leave_one_group_out")),
            "n_groups": len(order), "merged": g.get("merged", []), "missing": g.get("missing", 0), "final": final,
            "metrics": metrics, "n_boot": boot, "seed": seed, "unit": unit,
            "note": None if boot else f"{len(order)} groups: figures without intervals (over {MAX_GROUP_INTERVALS})",
            "groups": groups}


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


def _at_thresholds(point: dict, y: np.ndarray, s: np.ndarray) -> dict:
    """Sensitivity and specificity of ``s`` at an operating point's empirical and guaranteed thresholds."""
    out = {"target_sensitivity": point["target_sensitivity"]}
    for key, t in (("", point["threshold"]), ("guaranteed_", point["guaranteed"]["threshold"])):
        sens, spec = rates(y, s, t) if t is not None else (float("nan"), float("nan"))
        out |= {f"{key}threshold": t, f"{key}sensitivity": sens, f"{key}specificity": spec}
    return out


def submitted_model(metrics: dict) -> str | None:
    """The model whose scores the submission holds, as a run's summaries name it (the printed one, the
    report's first screen): ``submission_model``, except that a calibrated step which chose no map
    submits the final model's own scores, so it is named by that model."""
    submitted = metrics.get("submission_model")
    if submitted == "calibrated" and (metrics.get("calibration") or {}).get("method") == "none":
        return metrics.get("oof_model")
    return submitted


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
        lines += guarantee_lines(op)
    th = metrics.get("thresholds")
    if th:
        lines.append(f"per-class thresholds ({th['rule']}, nested CV): macro F1 {th['f1_before']:.4f} -> {th['f1_after']:.4f}")
        lines += one_vs_rest_lines(th)
    lines += held_out_lines(metrics.get("held_out_groups"))
    rep = metrics.get("repeats")
    if rep:
        fin = rep["models"].get("final")
        if fin:
            lines.append(f"{rep['n']} CV repeats (fold seeds {rep['fold_seeds']}): final {rep['metric']} "
                         f"{fin['mean']:.4f} +- {fin['std']:.4f}")
    return lines


def _num(v, fmt: str = ".3f") -> str:
    return format_ci(v, None, None, fmt)


def guarantee_lines(op: dict) -> list[str]:
    """One line per target sensitivity: the empirical threshold and the guaranteed one, each with
    what it had out of fold, or why the guarantee is undefined."""
    lines = []
    for key, p in op.items():
        g = p.get("guaranteed") if isinstance(p, dict) and key.startswith("specificity_at") else None
        if not g:
            continue
        q = p["target_sensitivity"]
        head = (f"sensitivity >= {q:g}: threshold {_num(p['threshold'], '.4g')} (OOF specificity {_num(p['specificity'])}); "
                f"guaranteed with probability >= {1 - g['delta']:g} (delta {g['delta']:g}, {g['n_pos']} positives): ")
        lines.append(head + (g["note"] if g["threshold"] is None else
                             f"{g['threshold']:.4g} (OOF sensitivity {_num(g['sensitivity'])}, specificity {_num(g['specificity'])})"))
    return lines


def one_vs_rest_lines(th: dict) -> list[str]:
    """How many classes have a guaranteed one-vs-rest threshold, and which lack positives for one."""
    ovr = th.get("one_vs_rest") or {}
    if not ovr:
        return []
    delta = (th.get("guarantee") or {}).get("delta")
    out = []
    for q in SENSITIVITIES:
        key = f"specificity_at_sensitivity_{_pct(q)}"
        lacking = [c for c, v in ovr.items() if v[key]["guaranteed"]["threshold"] is None]
        need = next(iter(ovr.values()))[key]["guaranteed"]["min_positives"]
        out.append(f"one-vs-rest sensitivity >= {q:g}, guaranteed with probability >= {1 - delta:g}: "
                   f"{len(ovr) - len(lacking)} of {len(ovr)} classes"
                   + (f" (too few positives, under {need}: {', '.join(lacking)})" if lacking else ""))
    return out


#: held-out groups printed by `dermstack run` (all are in metrics.json and the report)
PRINTED_GROUPS = 12


def held_out_lines(h: dict | None) -> list[str]:
    """The final model's primary metric on each held-out group, worst first."""
    if not h:
        return []
    how = "leave-one-group-out" if h["leave_one_group_out"] else "grouped K-fold"
    metric, final = h["metrics"][0], h["final"]
    lines = [f"held-out groups ({h['column']}, {how}, {h['n_groups']} groups): final ({final}) {metric} per group"]
    if h["merged"]:
        lines.append("  merged (a patient spans them): " + "; ".join(m["group"] for m in h["merged"]))

    def value(g):
        v = g["models"][final][metric]["value"]
        return v if isinstance(v, (int, float)) and np.isfinite(v) else np.inf
    for g in sorted(h["groups"], key=value)[:PRINTED_GROUPS]:
        m = g["models"][final][metric]
        pos = f", {g['n_positive']} positive" if g["n_positive"] is not None else ""
        lines.append(f"  {g['group']}: {format_ci(m['value'], *m['ci95'], '.4f')} (n={g['n']}{pos}, fold {g['fold']})"
                     + (" small" if g["small"] else "") + (f"; {g['note']}" if g["note"] else ""))
    if len(h["groups"]) > PRINTED_GROUPS:
        lines.append(f"  ... {len(h['groups']) - PRINTED_GROUPS} more in metrics.json held_out_groups")
    return lines
