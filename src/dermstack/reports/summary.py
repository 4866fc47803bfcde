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
from dermstack.clinical_report import submitted_model
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
           "fold_groups": _fold_groups(run.folds), "final_model": final,
           "submitted": submitted_model(m), "primary_metric": primary}
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
    out["guarantee"] = _guarantee(m)
    out["held_out"] = _held_out(m.get("held_out_groups"), final)
    mine = subgroups.filter(pl.col("model") == final) if not subgroups.is_empty() else subgroups
    out["below_overall"] = _below_overall(mine, primary)
    metrics_shown = [primary] + (["roc_auc"] if t.kind.binary and primary != "roc_auc" else [])
    out["skin_tone"] = _skin_tone(mine, metrics_shown)
    return out


def _fold_groups(plan) -> str | None:
    """What the folds keep whole: the patient (else lesion, image) column, and the ``[cv] group`` column."""
    if plan is None:
        return None
    return plan.group_column + (f" and {plan.grouping['column']}" if plan.grouping else "")


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
        unit = ((m["clinical"].get("bootstrap") or {}).get("unit") or (m.get("primary_ci") or {}).get("unit")
                or "rows")  # an older metrics.json does not name its unit
        return {"source": f"metrics.json clinical (bootstrap resamples of {unit})",
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


def _guarantee(m: dict) -> dict | None:
    """Per target sensitivity: the empirical threshold and the guaranteed one (binary), or how many
    classes have a guaranteed one-vs-rest threshold (several classes); None when metrics.json lacks them."""
    clinical, th = m.get("clinical") or {}, m.get("thresholds") or {}
    points = {k: v for k, v in clinical.items() if isinstance(v, dict) and v.get("guaranteed")
              and k.startswith("specificity_at_sensitivity")}
    if points:
        g = next(iter(points.values()))["guaranteed"]
        return {"delta": g["delta"], "n_pos": g["n_pos"],
                "rows": [{"target": v["target_sensitivity"], "threshold": v["threshold"], "specificity": v["specificity"],
                          "guaranteed": v["guaranteed"]["threshold"], "sensitivity_g": v["guaranteed"]["sensitivity"],
                          "specificity_g": v["guaranteed"]["specificity"], "note": v["guaranteed"]["note"]}
                         for v in points.values()]}
    ovr = th.get("one_vs_rest")
    if ovr:
        keys = [k for k in next(iter(ovr.values())) if k.startswith("specificity_at_sensitivity")]
        return {"delta": (th.get("guarantee") or {}).get("delta"), "classes": len(ovr),
                "per_target": [{"target": next(iter(ovr.values()))[k]["target_sensitivity"],
                                "with": sum(v[k]["guaranteed"]["threshold"] is not None for v in ovr.values())} for k in keys]}
    return None


#: held-out groups listed on the first screen, worst first (all are in the Held-out groups section)
HELD_OUT_SHOWN = 4


def _held_out(h: dict | None, final: str) -> dict | None:
    """The final model's primary metric and ROC-AUC on each held-out group (``[cv] group``), worst first."""
    if not h:
        return None
    model = final if h["groups"] and final in h["groups"][0]["models"] else h.get("final")
    primary, auc = h["metrics"]
    rows = []
    for g in h["groups"]:
        fig = g["models"].get(model) or {}
        p, a = fig.get(primary) or {}, fig.get(auc) or {}
        rows.append({"group": g["group"], "fold": g["fold"], "n": g["n"], "n_positive": g["n_positive"], "small": g["small"],
                     "note": g["note"], "value": p.get("value"), "ci": p.get("ci95") or [None, None],
                     "auc": a.get("value"), "auc_ci": a.get("ci95") or [None, None]})
    rows.sort(key=lambda r: r["value"] if _finite(r["value"]) else math.inf)
    return {"column": h["column"], "leave_one_group_out": h["leave_one_group_out"], "n_groups": h["n_groups"],
            "merged": [m["group"] for m in h.get("merged") or []], "model": model, "metrics": [primary, auc], "rows": rows}


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
    left = [_render_dataset(h), _render_final(h), _render_primary(h), _render_held_out(h), _render_calibration(h),
            _render_drivers(h)]
    right = [_render_operating(h), _render_guarantee(h), _render_below(h), _render_skin_tone(h)]
    if not TaskKind(h["task"]).binary:  # a per-class operating table fills the right column: fairness goes left
        left, right = left + right[3:], right[:3]
        right.append(paragraph("Macro metrics within a subgroup average over the classes present in it, so small "
                               "groups read lower by construction: compare groups with each other, not with 'all'."))
    return Section("summary", "Summary").add(f'<div class="summary"><div>{"".join(left)}</div><div>{"".join(right)}</div></div>')


def _render_dataset(h: dict) -> str:
    what = f"{h['task']}" + (f" ({h['target']} vs rest)" if h["target"] else f", {len(h['classes'])} classes")
    rows = f"{h['rows']} training rows" + (f", {h['positives']} positives" if h["positives"] is not None else "")
    how = "leave-one-group-out CV" if (h.get("held_out") or {}).get("leave_one_group_out") else f"{h['folds']}-fold CV"
    folds = f"; {how} grouped by {h['fold_groups']}, out-of-fold scores" if h["folds"] else ""
    return f"<h3>Data</h3><p><b>{esc(h['dataset'])}</b> · {esc(what)} · {esc(rows)}{esc(folds)}</p>"


def _how_chosen(chosen: dict | None) -> str:
    """Only ``method = "auto"`` records a reason; a fixed method, or none, is the config's choice."""
    if not chosen:
        return "how it was chosen: not recorded (no metrics.json ensemble)"
    if chosen.get("why"):
        return f"chosen by <code>{esc(chosen['method'])}</code>: {esc(chosen['why'])}"
    if chosen.get("method") == "none":
        return "no ensemble (one model, or <code>[ensemble] method = \"none\"</code>)"
    return f"set by the config: <code>[ensemble] method = \"{esc(chosen.get('method') or '?')}\"</code>"


def _render_final(h: dict) -> str:
    how = _how_chosen(h["chosen"])
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
    few = h.get("held_out") or not TaskKind(h["task"]).binary  # room for the held-out groups, or for fairness
    shown = d["features"][:TOP_DRIVERS_MULTI if few else TOP_DRIVERS]
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


def _render_guarantee(h: dict) -> str:
    g = h.get("guarantee")
    if not g:
        return ""
    source = f", {g['n_pos']} positives" if "n_pos" in g else ""
    title = f"<h3>Sensitivity with a guarantee (P &ge; {1 - g['delta']:g}, delta {g['delta']:g}{source})</h3>"
    if "classes" in g:
        per = ", ".join(f"{r['with']} of {g['classes']} classes at sensitivity {r['target']:g}" for r in g["per_target"])
        short = any(r["with"] < g["classes"] for r in g["per_target"])
        return (title + f"<p>one-vs-rest thresholds with the guarantee: {esc(per)}"
                f"{' (the others have too few positives)' if short else ''}; per class in Clinical operating points</p>")

    def num(v) -> str:
        return f"{v:.3f}" if _finite(v) else "n/a"
    rows = [{"target sensitivity": f"{r['target']:g}", "threshold (OOF spec.)": f"{r['threshold']:.4g} ({num(r['specificity'])})"
             if _finite(r["threshold"]) else "n/a",
             "guaranteed threshold (OOF sens., spec.)": (f"{r['guaranteed']:.4g} ({num(r['sensitivity_g'])}, {num(r['specificity_g'])})"
                                                         if _finite(r["guaranteed"]) else "undefined: too few positives")}
            for r in g["rows"]]
    return title + table(pl.DataFrame(rows), collapse=None)


def _render_held_out(h: dict) -> str:
    o = h.get("held_out")
    if not o:
        return ""
    how = "one held out per fold" if o["leave_one_group_out"] else "each kept in one fold"
    title = f"<h3>Held-out groups: {esc(o['column'])} ({o['n_groups']} groups, {how})</h3>"
    primary, auc = o["metrics"]
    rows = [{"group": _short(r["group"]) + (" *" if r["small"] else ""),
             "n": f"{r['n']}" + (f" ({r['n_positive']})" if r["n_positive"] is not None else ""),
             f"{primary} [95% CI]": _ci(r["value"], *r["ci"]), auc: _ci(r["auc"], None, None)}
            for r in o["rows"][:HELD_OUT_SHOWN]]
    more = len(o["rows"]) - HELD_OUT_SHOWN
    merged = f"; merged by a patient: {', '.join(o['merged'])}" if o["merged"] else ""
    note = (f"{esc(o['model'])} on each group&rsquo;s out-of-fold rows, worst first; n (positives); * small"
            f"{esc(merged)}" + (f"; {more} more in Held-out groups" if more > 0 else ""))
    return title + table(pl.DataFrame(rows), collapse=None) + f'<p class="note">{note}</p>'


#: characters of a group name on the first screen (ISIC attributions run to 140)
SHORT_NAME = 38


def _short(name: str) -> str:
    return name if len(name) <= SHORT_NAME else name[:SHORT_NAME - 1] + "\u2026"


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
