"""The report's first screen: what a reader needs before any detail, on one laptop screen.

:func:`headline` gathers the numbers (JSON, also written to ``summary.json``) from ``metrics.json``
and the report's own tables; :func:`summary_section` renders them. Keys that ``metrics.json`` may
lack (``primary_ci``, ``clinical``, ``thresholds``, ``ensemble``, ``calibration``) fall back to the
report's own bootstrap or read "not computed", so an older run still gets a truthful summary.
"""
from __future__ import annotations

import math

import polars as pl

from dermstack.clinical_report import format_ci as _ci
from dermstack.reports.html import Section, esc, paragraph, table
from dermstack.taskkind import TaskKind

#: how many features the first screen lists as drivers of the final prediction
TOP_DRIVERS = 8
TOP_DRIVERS_MULTI = 5
#: subgroups below overall listed on the first screen (all are in the Subgroups section)
BELOW_SHOWN = 5
#: attributes whose groups and best-worst gap the first screen shows in full
SKIN_TONE = "skin tone"
NOT_COMPUTED = "not computed"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)




def headline(run, metrics: pl.DataFrame, operating_points: pl.DataFrame, shaps: dict, subgroups: pl.DataFrame,
             n_boot: int) -> dict:
    """The first screen's numbers: dataset, final model and why, primary metric with CI, calibration,
    drivers, operating points, subgroups below overall and the skin-tone groups with their gap."""
    t, m, final = run.task, run.metrics, run.final_model
    primary = t.primary_metric
    out = {"dataset": run.table.meta.dataset, "task": str(t.kind), "target": t.target_name if t.kind.binary else None,
           "classes": list(t.classes), "rows": len(t.image_ids), "positives": int(t.y.sum()) if t.kind.binary else None,
           "folds": run.folds.n_splits if run.folds is not None else None,
           "fold_groups": run.folds.group_column if run.folds is not None else None, "final_model": final,
           "submitted": m.get("submission_model"), "primary_metric": primary}
    ens = m.get("ensemble") or {}
    out["chosen"] = {"method": ens.get("method"), "why": ens.get("why")} if ens else None
    out["primary"] = _primary(m.get("primary_ci"), metrics.filter(pl.col("model") == final), primary, n_boot)
    out["other_metrics"] = {k: v for k, v in (m.get("oof") or {}).items() if k not in (primary, "seconds", "brier", "ece") and _finite(v)}
    cal = m.get("calibration") or {}
    out["calibration"] = ({k: cal.get(k) for k in ("method", "chosen_by", "bins", "of")}
                          | {"ece": [cal["before"].get("ece"), cal["after"].get("ece")],
                             "brier": [cal["before"].get("brier"), cal["after"].get("brier")]}) if cal.get("before") else None
    out["drivers"] = _drivers(shaps, final)
    out["operating_points"] = _operating_points(m, operating_points, final, t.kind.binary)
    out["thresholds"] = ({k: m["thresholds"].get(k) for k in ("f1_before", "f1_after")} if m.get("thresholds") else None)
    mine = subgroups.filter(pl.col("model") == final) if not subgroups.is_empty() else subgroups
    out["below_overall"] = _below_overall(mine, primary)
    metrics_shown = [primary] + (["roc_auc"] if t.kind.binary and primary != "roc_auc" else [])
    out["skin_tone"] = _skin_tone(mine, metrics_shown)
    return out


def _primary(stored: dict | None, row: pl.DataFrame, primary: str, n_boot: int) -> dict:
    if stored and _finite(stored.get("value")):
        return {"value": stored["value"], "ci_low": stored.get("ci_low"), "ci_high": stored.get("ci_high"),
                "source": f"metrics.json: {stored.get('n_boot', '?')} bootstrap resamples of {stored.get('unit', 'rows')}"}
    if row.is_empty():
        return {"value": None, "ci_low": None, "ci_high": None, "source": NOT_COMPUTED}
    r = row.row(0, named=True)
    return {"value": r[primary], "ci_low": r.get(f"{primary}_ci_low"), "ci_high": r.get(f"{primary}_ci_high"),
            "source": f"report: {n_boot} bootstrap resamples of rows"}


def _drivers(shaps: dict, final: str) -> dict | None:
    """The first explained model: the final model's own explanation when there is one
    (:func:`~dermstack.reports.build.shap_for_run` puts it first), named so the reader sees which."""
    if not shaps:
        return None
    name = next(iter(shaps))
    imp = shaps[name].importance.sort("mean_abs_shap", descending=True).head(TOP_DRIVERS)
    return {"model": name, "features": imp.select("feature", "group", "mean_abs_shap").to_dicts()}


def _operating_points(m: dict, ops: pl.DataFrame, final: str, binary: bool) -> dict:
    clinical = {k: v for k, v in (m.get("clinical") or {}).items() if isinstance(v, dict) and "value" in v}
    if clinical:
        return {"source": "metrics.json clinical (patient bootstrap)",
                "rows": [{"metric": k, "value": v.get("value"), "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high"),
                          "n_valid": v.get("n_valid"), "note": v.get("note")} for k, v in clinical.items()]}
    mine = ops.filter(pl.col("model") == final) if not ops.is_empty() else ops
    if mine.is_empty():
        return {"source": NOT_COMPUTED, "rows": []}
    if binary:
        cols = ["rule", "threshold", "recall", "specificity", "precision"]
        return {"source": f"report: OOF scores of {final}", "rows": mine.select(cols).to_dicts()}
    wide = mine.pivot(on="rule", index="class", values="recall")
    return {"source": f"report: OOF scores of {final}, recall one-vs-rest at each rule",
            "rows": wide.select("class", *[c for c in wide.columns if c.startswith("specificity")]).to_dicts()}


def _below_overall(mine: pl.DataFrame, primary: str) -> list[dict] | None:
    """Groups whose primary-metric CI lies wholly below the overall value (None: no subgroup columns)."""
    if mine.is_empty() or "kind" not in mine.columns or mine.filter(pl.col("kind") == "group").is_empty():
        return None
    below = mine.filter((pl.col("kind") == "group") & (pl.col("metric") == primary) & (pl.col("ci_high") < pl.col("overall")))
    return below.select("attribute", "group", "n", "value", "ci_low", "ci_high", "overall", "small").to_dicts()


def _skin_tone(mine: pl.DataFrame, metrics: list[str]) -> list[dict]:
    """Per skin-tone attribute: each group's value and CI per metric, and the best-worst gap."""
    if mine.is_empty() or "kind" not in mine.columns:
        return []
    tone = mine.filter(pl.col("attribute").str.starts_with(SKIN_TONE) & pl.col("metric").is_in(metrics))
    overall = mine.filter((pl.col("kind") == "overall") & pl.col("metric").is_in(metrics))
    overall = overall.select("group", "n", "n_pos", "metric", "value", "ci_low", "ci_high", "small").to_dicts()
    out = []
    for attribute in tone["attribute"].unique(maintain_order=True).to_list():
        part = tone.filter(pl.col("attribute") == attribute)
        groups = part.filter(pl.col("kind") == "group")
        gaps = part.filter(pl.col("kind") == "best - worst")
        out.append({"attribute": attribute, "metrics": metrics, "overall": overall,
                    "groups": groups.select("group", "n", "n_pos", "metric", "value", "ci_low", "ci_high", "small").to_dicts(),
                    "gaps": gaps.select("metric", "best", "worst", "value", "ci_low", "ci_high").to_dicts()})
    return out


# -- rendering -------------------------------------------------------------------------------------


def summary_section(h: dict) -> Section:
    """The first screen as a two-column grid: the model and its evidence left, decisions and fairness right."""
    left = [_render_dataset(h), _render_final(h), _render_primary(h), _render_calibration(h), _render_drivers(h)]
    right = [_render_operating(h), _render_below(h), _render_skin_tone(h)]
    if not TaskKind(h["task"]).binary:  # a per-class operating table fills the right column: fairness goes left
        left, right = left + right[2:], right[:2]
        right.append(paragraph("Macro metrics within a subgroup average over the classes present in it, so small "
                               "groups read lower by construction: compare groups with each other, not with 'all'."))
    return Section("summary", "Summary").add(f'<div class="summary"><div>{"".join(left)}</div><div>{"".join(right)}</div></div>')


def _render_dataset(h: dict) -> str:
    what = f"{h['task']}" + (f" ({h['target']} vs rest)" if h["target"] else f", {len(h['classes'])} classes")
    rows = f"{h['rows']} training rows" + (f", {h['positives']} positives" if h["positives"] is not None else "")
    folds = f"; {h['folds']}-fold CV grouped by {h['fold_groups']}, out-of-fold scores" if h["folds"] else ""
    return f"<h3>Data</h3><p><b>{esc(h['dataset'])}</b> · {esc(what)} · {esc(rows)}{esc(folds)}</p>"


def _render_final(h: dict) -> str:
    how = (f"chosen by <code>{esc(h['chosen']['method'])}</code>: {esc(h['chosen']['why'] or '')}" if h["chosen"]
           else "how it was chosen: not recorded (no metrics.json ensemble)")
    sub = f"; submitted: <code>{esc(h['submitted'])}</code>" if h.get("submitted") and h["submitted"] != h["final_model"] else ""
    return f"<h3>Final model</h3><p><b>{esc(h['final_model'])}</b>{sub}; {how}</p>"


def _render_primary(h: dict) -> str:
    p = h["primary"]
    others = ", ".join(f"{k} {v:.3f}" for k, v in h["other_metrics"].items())
    return (f"<h3>Primary metric</h3><p><b>{esc(h['primary_metric'])} {esc(_ci(p['value'], p['ci_low'], p['ci_high']))}</b> "
            f"(95% CI; {esc(p['source'])}){'; ' + esc(others) if others else ''}</p>")


def _render_calibration(h: dict) -> str:
    c = h["calibration"]
    if not c:
        return f"<h3>Calibration</h3><p>{NOT_COMPUTED}</p>"
    fmt = "{:.4f} &rarr; {:.4f}"
    ece = fmt.format(*c["ece"]) if all(_finite(v) for v in c["ece"]) else NOT_COMPUTED
    brier = fmt.format(*c["brier"]) if all(_finite(v) for v in c["brier"]) else NOT_COMPUTED
    return (f"<h3>Calibration</h3><p>ECE <b>{ece}</b> ({esc(c.get('bins') or 'bins not recorded')}), Brier {brier}; "
            f"{esc(c.get('method') or '')} chosen by {esc(c.get('chosen_by') or '?')}"
            f"{' on ' + esc(c['of']) if c.get('of') else ''}</p>")


def _render_drivers(h: dict) -> str:
    d = h["drivers"]
    if not d:
        return "<h3>Top drivers</h3><p>not computed (no booster or linear model explained)</p>"
    shown = d["features"][:TOP_DRIVERS if TaskKind(h["task"]).binary else TOP_DRIVERS_MULTI]  # several classes: room for fairness
    top = max((f["mean_abs_shap"] for f in shown), default=0) or 1
    items = "".join(f'<li><span class="bar" style="width:{80 * f["mean_abs_shap"] / top:.0f}px"></span>'
                    f'{esc(f["feature"])} <span class="note">({esc(f["group"])}, {f["mean_abs_shap"]:.3g})</span></li>'
                    for f in shown)
    whose = (f"of the final prediction, {esc(d['model'])}: contributions that add up to its score (see SHAP by feature group)"
             if d["model"] in (h["final_model"], ) or d["model"].startswith("final (")
             else f"of {esc(d['model'])} (the final model {esc(h['final_model'])} is not explained directly)")
    return f'<h3>Top drivers</h3><p class="note">mean |SHAP| {whose}</p><ul>{items}</ul>'


def _render_operating(h: dict) -> str:
    o = h["operating_points"]
    thr = h.get("thresholds")
    thr_html = (f"<p>macro F1, tuned per-class thresholds (nested CV): {h['thresholds']['f1_before']:.3f} &rarr; "
                f"{h['thresholds']['f1_after']:.3f}</p>" if thr and _finite(thr.get("f1_before")) and _finite(thr.get("f1_after")) else
                ("" if TaskKind(h["task"]).binary else f"<p>tuned thresholds: {NOT_COMPUTED}</p>"))
    if not o["rows"]:
        return f"<h3>Operating points</h3><p>{NOT_COMPUTED}</p>{thr_html}"
    df = pl.DataFrame(o["rows"], infer_schema_length=None)
    if "ci_low" in df.columns:  # clinical metrics: value and CI in one cell
        df = pl.DataFrame({"metric": df["metric"],
                           "value [95% CI]": [_ci(*r[:3]) if _finite(r[0]) or not r[3] else "n/a: needs patient ids"
                                              for r in df.select("value", "ci_low", "ci_high", "note").iter_rows()],
                           "n_valid": df["n_valid"]})
    return f"<h3>Operating points</h3>{paragraph(o['source'])}{table(df, collapse=None)}{thr_html}"


def _render_below(h: dict) -> str:
    below = h["below_overall"]
    title = f"<h3>Subgroups below overall ({esc(h['primary_metric'])} CI under the overall value)</h3>"
    if below is None:
        return title + "<p>no subgroup columns in this table</p>"
    if not below:
        return title + "<p>none</p>"
    tones = {s["attribute"] for s in h.get("skin_tone") or []}
    shown = [r for r in below if r["attribute"] not in tones]  # skin-tone groups: in the fairness table
    items = "".join(f'<li class="bad">{esc(r["attribute"])} = {esc(r["group"])}: n={r["n"]}, '
                    f'{esc(_ci(r["value"], r["ci_low"], r["ci_high"]))} vs {r["overall"]:.3f}{" (small)" if r["small"] else ""}</li>'
                    for r in shown[:BELOW_SHOWN])
    rest = len(below) - min(len(shown), BELOW_SHOWN)
    more = (f"<p class=\"note\">{rest} more below overall (skin-tone groups in the fairness table, the rest in "
            "Subgroups and fairness)</p>") if rest else ""
    return title + (f"<ul>{items}</ul>" if items else "") + more


def _render_skin_tone(h: dict) -> str:
    """One small table per skin-tone attribute: a row per group (and overall), a column per metric
    holding value [CI], and the best-minus-worst row."""
    parts = []
    for s in h["skin_tone"]:
        wide: dict[str, dict] = {}
        for r in [*s["overall"], *s["groups"]]:
            row = wide.setdefault(r["group"], {"group": r["group"] + (" *" if r["small"] else ""), "n": r["n"], "positives": r["n_pos"]})
            row[r["metric"]] = _ci(r["value"], r["ci_low"], r["ci_high"])
        for g in s["gaps"]:
            row = wide.setdefault("", {"group": "best - worst", "n": None, "positives": None})
            row[g["metric"]] = f"{_ci(g['value'], g['ci_low'], g['ci_high'])} ({g['best']} - {g['worst']})"
        shown = pl.DataFrame(list(wide.values()), infer_schema_length=None)
        shown = shown.drop("positives") if shown["positives"].null_count() == shown.height else shown
        no_gap = "" if s["gaps"] else paragraph("gap: fewer than two groups that are not flagged small", "warn")
        parts.append(f"<h3>Fairness: {esc(s['attribute'])}</h3>{table(shown, collapse=None)}{no_gap}")
    note = paragraph("95% bootstrap CIs; the gap's CI from independent bootstraps per group; * small group, not in the gap.")
    return "".join(parts) + note if parts else ""
