"""The report's "Held-out groups" section: metrics.json ``held_out_groups`` (``[cv] group``), the final
model's figures per group first, then every model's."""
from __future__ import annotations

import polars as pl

from dermstack.clinical_report import format_ci
from dermstack.reports.html import Section, esc, paragraph, table
from dermstack.reports.rundata import RunData


def held_out_section(run: RunData) -> Section | None:
    """metrics.json ``held_out_groups``: every model's figures on each held-out group (``[cv] group``)."""
    h = run.metrics.get("held_out_groups")
    if not h:
        return None
    sec = Section("held-out", "Held-out groups")
    how = ("leave-one-group-out: one group held out per fold" if h["leave_one_group_out"]
           else "grouped K-fold: each group kept whole in one fold")
    merged = "".join(f" {m['group']} are held out together: {m['patients']} {m['by']}(s) have rows in several "
                     f"(e.g. {', '.join(m['examples'][:3])})." for m in h.get("merged") or [])
    sec.add(paragraph(f"Folds grouped by {h['column']} as well as by patient ({how}; {h['n_groups']} groups). Each group's "
                      f"figures are on its out-of-fold rows, scored by models that never saw the group; 95% CIs from "
                      f"{h['n_boot']} bootstrap resamples of {h['unit']} within the group. Small: under 30 rows or 5 "
                      f"positives.{merged}"))
    primary, auc = h["metrics"]
    final = []
    for g in h["groups"]:
        fig = g["models"].get(h["final"]) or {}
        row = {"group": g["group"], "fold": g["fold"], "n": g["n"], "positives": g["n_positive"],
               primary: _ci_cell(fig.get(primary) or {}), auc: _ci_cell(fig.get(auc) or {})}
        for t in g.get("at_thresholds") or []:
            q = f"{t['target_sensitivity']:g}"
            row[f"sens. / spec. at the {q} threshold"] = _pair(t["sensitivity"], t["specificity"])
            row[f"at the guaranteed {q} threshold"] = _pair(t["guaranteed_sensitivity"], t["guaranteed_specificity"])
        final.append(row | {"small": g["small"]})
    sec.add(f"<h3>Final model {esc(h['final'])}</h3>", table(pl.DataFrame(final, infer_schema_length=None)))
    if final and any(k.startswith("sens.") for k in final[0]):
        sec.add(paragraph("Sensitivity and specificity within each group at the run's thresholds (chosen on every group's "
                          "out-of-fold scores together): where the promise of a threshold holds group by group, and where "
                          "a site flags more benign lesions.", "note"))
    sec.add("<h3>Every model</h3>")
    rows = []
    for g in h["groups"]:
        for name, fig in g["models"].items():
            rows.append({"group": g["group"], "fold": g["fold"], "n": g["n"], "positives": g["n_positive"],
                         "model": name + (" (final)" if name == h["final"] else ""),
                         primary: _ci_cell(fig[primary]), auc: _ci_cell(fig[auc]), "small": g["small"], "note": g["note"] or ""})
    return sec.add(table(pl.DataFrame(rows, infer_schema_length=None)))


def _pair(a, b) -> str:
    return " / ".join("n/a" if v is None or v != v else f"{v:.3f}" for v in (a, b))


def _ci_cell(fig: dict) -> str:
    return format_ci(fig.get("value"), *(fig.get("ci95") or [None, None]), ".4f")
