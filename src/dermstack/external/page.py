"""``evaluation.html``: one self-contained page, summary first (the report's HTML: inline CSS, one
inline script, nothing fetched). The first screen: what was evaluated and what was left out as the
run's own training data, the gap between the new data and the run's out-of-fold figure, each
operating point's promised and realised sensitivity, and the worst subgroup."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from dermstack.clinical_report import format_ci
from dermstack.reports.html import Section, esc, paragraph, table
from dermstack.reports.html import write_page as _write_page

#: operating points on the first screen (the rest in their section)
SUMMARY_POINTS = 6


def ci_text(d: dict | None, fmt: str = ".3f") -> str:
    """``0.912 [0.880, 0.940]`` of a ``{"value", "ci95"}`` figure."""
    if not d:
        return "n/a"
    lo, hi = d.get("ci95") or (None, None)
    return format_ci(d.get("value"), lo, hi, fmt)


def num_text(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def overlap_sentence(e: dict) -> str:
    counts = e["audit"]["counts"]
    n = sum(counts.values())
    if not n:
        checked = [k for k, v in e["audit"]["checked"].items() if v is True]
        return f"No row was found in the run's training data (checked: {', '.join(checked)})."
    how = ", ".join(f"{v} by {k}" for k, v in counts.items())
    return f"{n} rows are the run's training data ({how}): {e['overlap_policy']}."


def _not_checked(e: dict) -> str:
    missed = {k: v for k, v in e["audit"]["checked"].items() if v is not True}
    return "; ".join(f"{k} not checked: {v}" for k, v in missed.items())


def gap_sentence(e: dict) -> str:
    m = e["models"][e["final"]]
    p = e["primary_metric"]
    if not m.get("gap"):
        return f"{p} {ci_text(m[p])} (no out-of-fold figure to compare with)."
    return (f"{p} {ci_text(m[p])} here against {ci_text(m['oof'][p])} out of fold: gap {ci_text(m['gap'][p], '+.3f')}; "
            f"ROC-AUC {ci_text(m['roc_auc'])} against {ci_text(m['oof']['roc_auc'])} (gap {ci_text(m['gap']['roc_auc'], '+.3f')}).")


def operating_frame(e: dict, limit: int | None = None) -> pl.DataFrame:
    """One row per threshold the run chose: promised out of fold, realised here (the first ``limit``)."""
    rows = []
    for op in [op for op in e["operating_points"] if "threshold" in op][:limit]:
        promised = op["promised"]
        which, q = next(iter(op["target"].items()))
        point = (f"{op['class']}: " if op.get("class") else "") + f"{which} ≥ {q:g}"
        kind = op["kind"] if op.get("delta") is None else f"guaranteed, δ = {op['delta']:g}"
        rows.append({"promise": point, "threshold": f"{op['threshold']:.4g}", "kind": kind,
                     "OOF sens.": num_text(promised.get("sensitivity")), "realised sens.": ci_text(op["sensitivity"]),
                     "OOF spec.": num_text(promised.get("specificity")), "realised spec.": ci_text(op["specificity"]),
                     "held": "yes" if op["held"] else "no"})
    return pl.DataFrame(rows)


def rule_frame(e: dict) -> pl.DataFrame:
    """The run's macro-F1 decision rule (several classes): promised by nested CV, realised here."""
    return pl.DataFrame([{"rule": op["rule"], "promised macro F1": num_text(op["promised"]["macro_f1"]),
                          "realised macro F1": num_text(op["macro_f1"]["value"]),
                          "argmax / 0.5 here": num_text(op["macro_f1_default_rule"]["value"])}
                         for op in e["operating_points"] if "macro_f1" in op])


def operating_tables(e: dict, limit: int | None = None) -> str:
    ops = operating_frame(e, limit)
    more = sum("threshold" in op for op in e["operating_points"]) - ops.height
    parts = [table(t, collapse=None if limit else 15) for t in (rule_frame(e), ops) if t.height]
    if more > 0:
        parts.append(paragraph(f"{more} more (one vs rest per class) under Operating points."))
    return "".join(parts) or "<p>no operating point the run chose</p>"


def worst_sentence(e: dict) -> str:
    w = e["subgroups"]["worst"]
    if not w:
        return "No subgroup column with two groups large enough (see Subgroups)." if e["subgroups"]["attributes"] else \
            "The data has no subgroup column (skin tone, sex, age, site, attribution)."
    overall = e["models"][e["final"]][w["metric"]]
    return (f"{w['attribute']} = {w['group']} (n = {w['n']}{', ' + str(w['n_pos']) + ' positives' if w['n_pos'] is not None else ''}): "
            f"{w['metric']} {ci_text(w)} against {ci_text(overall)} overall.")


def summary(e: dict) -> Section:
    r = e["rows"]
    pos = f", {e['n_positive']} positives" if e["n_positive"] is not None else ""
    data = (f"<b>{esc(e['data'])}</b> ({esc(e['format'] or e['dataset'])}): {r['read']} rows read, <b>{r['scored']} "
            f"evaluated</b>{esc(pos)}, {r['excluded_overlap']} left out as overlap, {r['skipped']} skipped "
            f"(no label in the run's task, or unreadable). Intervals: 95 %, {e['bootstrap']['n_boot']} resamples of "
            f"{esc(e['unit'])}.")
    left = [f"<h3>Data</h3><p>{data}</p>",
            f"<h3>Overlap with the training data</h3><p class=\"{'bad' if e['overlap'] else ''}\">{esc(overlap_sentence(e))}</p>"
            + (paragraph(_not_checked(e)) if _not_checked(e) else ""),
            f"<h3>Gap: final model {esc(e['final'])}, here minus out of fold</h3><p><b>{esc(gap_sentence(e))}</b></p>",
            f"<h3>Worst subgroup</h3><p>{esc(worst_sentence(e))}</p>"]
    right = ["<h3>Sensitivity promised and realised</h3>" + operating_tables(e, SUMMARY_POINTS),
             *[paragraph(n, "note warn") for n in e["notes"]]]
    return Section("summary", "Summary").add(f'<div class="summary"><div>{"".join(left)}</div><div>{"".join(right)}</div></div>')


def models_frame(e: dict) -> pl.DataFrame:
    p = e["primary_metric"]
    return pl.DataFrame([{"model": name, "ROC-AUC": ci_text(m["roc_auc"]), f"{p}": ci_text(m[p]),
                          "OOF ROC-AUC": ci_text((m.get("oof") or {}).get("roc_auc")), f"OOF {p}": ci_text((m.get("oof") or {}).get(p)),
                          "gap ROC-AUC": ci_text((m.get("gap") or {}).get("roc_auc"), "+.3f"),
                          f"gap {p}": ci_text((m.get("gap") or {}).get(p), "+.3f")}
                         for name, m in e["models"].items()])


def sections(e: dict) -> list[Section]:
    out = [summary(e), Section("models", "Every model: here, out of fold, gap").add(
        paragraph("Gap = this data minus the run's out-of-fold figure; its interval combines the two data sets' "
                  "independent patient resamples."), table(models_frame(e), collapse=None))]
    c = e["calibration"]
    cal = pl.DataFrame([{"scores": f"{c['model']} (uncalibrated)", **(c["without"] or {})}]
                       + ([{"scores": f"{c['calibrated_model']} (the run's calibrator)", **c["with"]}] if c["with"] else []))
    out.append(Section("calibration", "Calibration").add(paragraph(f"ECE ({c['bins']}) and Brier score on this data; out "
                                                                   f"of fold the run measured {c.get('oof')}."), table(cal)))
    out.append(Section("operating", "Operating points").add(
        paragraph("Each threshold the run chose on its out-of-fold scores, applied unchanged to this data: empirical "
                  "(what the run measured out of fold) and guaranteed (sensitivity >= the target with probability "
                  ">= 1 - delta on exchangeable data; 'held' says whether it did here)."), operating_tables(e)))
    sub = e["subgroups"]
    groups = pl.DataFrame(sub["groups"], infer_schema_length=None) if sub["groups"] else pl.DataFrame()
    sec = Section("subgroups", "Subgroups (final model)")
    if groups.is_empty():
        sec.add(paragraph("No subgroup column in this data."))
    else:
        gaps = pl.DataFrame([{"attribute": g["attribute"], "metric": g["metric"], "worst": g["worst"], "best": g["best"],
                              "worst minus best": ci_text(g["worst_minus_best"], "+.3f")} for g in sub["gaps"]])
        sec.add(table(gaps) if gaps.height else paragraph("No attribute has two groups large enough for a gap."),
                table(groups.with_columns(pl.col("ci95").list.eval(pl.element().round(4)).cast(pl.List(pl.String))
                                          .list.join(", ")), row_class="small"))
    out.append(sec)
    overlap = pl.DataFrame([{k: v for k, v in o.items() if k != "also"} | {"also": ", ".join(o["also"])} for o in e["overlap"]],
                           infer_schema_length=None)
    out.append(Section("overlap", "Overlap audit").add(paragraph(overlap_sentence(e)), paragraph(_audit_how(e)),
                                                        table(overlap) if overlap.height else ""))
    reasons = pl.DataFrame([{"reason": k, "rows": v} for k, v in e["rows"]["reasons"].items()],
                           schema={"reason": pl.String, "rows": pl.Int64})
    out.append(Section("rows", "Rows, labels and inputs").add(
        table(pl.DataFrame([{k: v for k, v in e["rows"].items() if k != "reasons"}])), table(reasons),
        paragraph("Labels read as the run's classes: " + (", ".join(f"{k} -> {v}" for k, v in e["labels"]["mapping"].items())
                                                          or "the binary target, as every reader writes it")),
        paragraph("Feature columns the data lacks: " + ("; ".join(f"{c} (read by {', '.join(m) or 'none'})"
                                                                  for c, m in e["missing_features"].items()) or "none")),
        paragraph("Values written as the run writes them: " + ("; ".join(f"{c}: {v['mapped']}" for c, v in e["vocabulary"].items()
                                                                        if v["mapped"]) or "none"))))
    return out


def _audit_how(e: dict) -> str:
    a = e["audit"]
    checked = "; ".join(f"{k}: {'checked' if v is True else v}" for k, v in a["checked"].items())
    return (f"Near-duplicates: cosine similarity of {a['backbone'] or 'no'} embeddings (centred on the training rows' "
            f"mean) >= {a['near_threshold']}. {checked}.")


def write_page(path: str | Path, e: dict) -> Path:
    subtitle = f"{e['run']} ({e['final']}) on {e['data']} · {e['task']}" + (f" ({e['target']})" if e["target"] else "")
    return _write_page(path, "dermstack evaluate", subtitle, sections(e))
