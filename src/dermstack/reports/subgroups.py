"""Performance per subgroup (skin tone, sex, age, site, image type) with bootstrap CIs and the gap to overall.

Small groups are flagged (``small``) and still reported: hiding them would hide exactly the
groups a fairness review is about.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from dermstack.features.patient import age_bin
from dermstack.metrics import TASK_METRICS, bootstrap_draws, percentile_ci
from dermstack.progress import progress_bar
from dermstack.reports.curves import OperatingPoint, threshold_at_specificity
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)

#: attribute -> candidate LesionTable columns; every present column becomes its own attribute.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "skin tone": ("skin_tone", "skin_tone_class", "fitzpatrick_skin_type", "fitzpatrick"),
    "sex": ("sex",),
    "age": ("age_approx", "age"),
    "site": ("anatom_site_general", "anatom_site_general_challenge", "localization", "site", "anatom_site"),
    "image type": ("image_type",),
}
MISSING = "(missing)"


@dataclass(frozen=True)
class SubgroupSettings:
    n_boot: int = 200
    min_n: int = 30
    #: binary only: groups with fewer positives than this are flagged too
    min_pos: int = 5
    #: binary only: recall/specificity per group at the threshold reaching this specificity overall
    specificity: float = 0.95
    seed: int = 0


def subgroup_columns(df: pl.DataFrame) -> dict[str, pl.Series]:
    """Group label per row for each subgroup attribute present (missing values form their own group)."""
    out: dict[str, pl.Series] = {}
    for attribute, candidates in ATTRIBUTES.items():
        for col in candidates:
            if col not in df.columns or df[col].null_count() == df.height:
                continue
            name = attribute if attribute in ("sex", "age", "image type") else f"{attribute} ({col})"
            if attribute == "age":
                s = df.select(age_bin(pl.col(col).cast(pl.Float64))).to_series()
            else:
                s = group_labels(df[col])
            out[name] = s.fill_null(MISSING).alias(name)
            if attribute in ("age", "sex", "image type"):
                break
    return out


def group_labels(s: pl.Series) -> pl.Series:
    """A column's values as group names; whole numbers stored as floats (MILK10k's skin tone) read
    as integers, "1" rather than "1.0"."""
    if s.dtype.is_float() and (s.drop_nulls() % 1 == 0).all():
        s = s.cast(pl.Int64)
    return s.cast(pl.String)


def group_metrics(task: str, y: np.ndarray, threshold: float | None) -> dict[str, Callable]:
    """Metric functions of a subgroup: the task's metrics, plus recall/specificity at a fixed threshold."""
    fns = dict(TASK_METRICS[TaskKind(task)])
    if TaskKind(task).binary and threshold is not None:
        fns["recall_at_threshold"] = lambda y, s: _defined(OperatingPoint.at(y, s, threshold).recall)
        fns["specificity_at_threshold"] = lambda y, s: _defined(OperatingPoint.at(y, s, threshold).specificity)
    return fns


def _defined(v: float) -> float:
    if np.isnan(v):
        raise ValueError("undefined on this sample")
    return v


def _safe(fn: Callable, y: np.ndarray, s: np.ndarray) -> float:
    try:
        return float(fn(y, s))
    except ValueError:
        return float("nan")


def subgroup_table(task: str, y: np.ndarray, score: np.ndarray, groups: dict[str, pl.Series],
                   settings: SubgroupSettings = SubgroupSettings(), model: str = "") -> pl.DataFrame:
    """Long table: kind, attribute, group, n, n_pos, metric, value, ci_low, ci_high, overall, gap, small,
    note, best, worst. ``kind`` is "overall", "group", or "best - worst": per attribute and metric, the
    best minus the worst group among those not flagged small (nor missing), with a bootstrap CI."""
    y, score = np.asarray(y), np.asarray(score)
    threshold = threshold_at_specificity(y, score, settings.specificity) if TaskKind(task).binary else None
    fns = group_metrics(task, y, threshold)
    overall = {name: _safe(fn, y, score) for name, fn in fns.items()}
    rows, _ = _group_rows("overall", "all", np.arange(len(y)), y, score, fns, overall, settings, task, 0)
    jobs = [(a, g, np.flatnonzero(labels.to_numpy() == g)) for a, labels in groups.items()
            for g in sorted(labels.unique().to_list(), key=group_order)]
    draws: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for k, (attribute, group, idx) in enumerate(progress_bar(jobs, desc=f"subgroups {model}".strip(), unit="group", leave=False), 1):
        block, draws[attribute, group] = _group_rows(attribute, group, idx, y[idx], score[idx], fns, overall, settings, task, k)
        rows += block
    rows += [gap for attribute in groups for name in fns if (gap := _best_worst(rows, draws, attribute, name)) is not None]
    out = pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.col("best", "worst").cast(pl.String))
    return out.with_columns(pl.lit(model).alias("model")).select("model", pl.exclude("model"))


def group_order(v: str) -> tuple:
    """Missing last; age bins in age order ("<30" first)."""
    return v == MISSING, not v.startswith("<"), v


def _group_rows(attribute, group, idx, y, score, fns, overall, settings: SubgroupSettings, task: str,
                stream: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One row per metric of one group, and its bootstrap draws (``stream``: the group's own random
    stream, so the draws of two groups are independent and their difference has an honest CI)."""
    n = len(idx)
    n_pos = int(np.asarray(y).sum()) if TaskKind(task).binary else None
    notes = []
    if n < settings.min_n:
        notes.append(f"n < {settings.min_n}")
    if TaskKind(task).binary and n_pos < settings.min_pos:
        notes.append(f"positives < {settings.min_pos}")
    with warnings.catch_warnings():  # resamples without one class are expected and skipped
        warnings.simplefilter("ignore")
        draws = (bootstrap_draws(fns, y, score, n=settings.n_boot, seed=[settings.seed, stream])
                 if n > 1 and settings.n_boot else {name: np.full(settings.n_boot, np.nan) for name in fns})
    rows = []
    for name, fn in fns.items():
        value = _safe(fn, y, score)
        lo, hi = percentile_ci(draws[name])
        rows.append({"kind": "overall" if attribute == "overall" else "group", "attribute": attribute, "group": str(group),
                     "n": n, "n_pos": n_pos, "metric": name, "value": value, "ci_low": lo, "ci_high": hi,
                     "overall": overall[name], "gap": value - overall[name], "small": bool(notes), "note": "; ".join(notes),
                     "best": None, "worst": None})
    return rows, draws


def _best_worst(rows: list[dict], draws: dict, attribute: str, metric: str) -> dict | None:
    """The gap between the best and the worst well-sized group of ``attribute`` (None with under two)."""
    ok = sorted((r for r in rows if r["attribute"] == attribute and r["metric"] == metric and not r["small"]
                 and r["group"] != MISSING and np.isfinite(r["value"])), key=lambda r: -r["value"])
    if len(ok) < 2:
        return None
    best, worst = ok[0], ok[-1]
    lo, hi = percentile_ci(draws[attribute, best["group"]][metric] - draws[attribute, worst["group"]][metric])
    n_pos = None if best["n_pos"] is None else best["n_pos"] + worst["n_pos"]
    return {"kind": "best - worst", "attribute": attribute, "group": f"{best['group']} - {worst['group']}",
            "n": best["n"] + worst["n"], "n_pos": n_pos, "metric": metric, "value": best["value"] - worst["value"],
            "ci_low": lo, "ci_high": hi, "overall": best["overall"], "gap": None, "small": False,
            "note": f"best minus worst of {len(ok)} groups not flagged small; CI: independent bootstraps per group",
            "best": best["group"], "worst": worst["group"]}


def subgroup_report(run, models: list[str], settings: SubgroupSettings = SubgroupSettings()) -> pl.DataFrame:
    """:func:`subgroup_table` for each model of a :class:`~dermstack.reports.rundata.RunData`."""
    groups_all = subgroup_columns(run.train)
    frames = []
    for model in models:
        idx, y, s = run.scored(model)
        groups = {a: g.gather(idx) for a, g in groups_all.items()}
        frames.append(subgroup_table(run.task.kind, y, s, groups, settings, model))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


__all__ = ["ATTRIBUTES", "SubgroupSettings", "age_bin", "subgroup_columns", "subgroup_table", "subgroup_report"]
