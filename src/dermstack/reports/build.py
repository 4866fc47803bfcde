"""``build_report``: the run's report directory: ``index.html`` plus the numbers behind every plot."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import write_json, write_parquet
from dermstack.crossfit import align_rows
from dermstack.metrics import bootstrap_ci, evaluate
from dermstack.reports import plots, shap_plots
from dermstack.reports.curves import BinaryCurves, class_views
from dermstack.reports.heldout import held_out_section
from dermstack.reports.html import Section, figure, figures, paragraph, table, write_page
from dermstack.reports.rundata import RunData
from dermstack.reports.shap_ import ShapValues, explain_model, feature_importance, group_contributions, sample_rows
from dermstack.reports.subgroups import SubgroupSettings, subgroup_report
from dermstack.reports.summary import headline, summary_section
from dermstack.rundir import REPORT_FILES, claim_dir, is_report
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)


@dataclass
class ReportSettings:
    #: rows explained per model: all positives plus a fold-stratified sample of negatives (None: every row)
    shap_sample: int | None = 2000
    n_boot: int = 200
    threshold: float = 0.5
    specificity: float = 0.95
    top_features: int = 15
    min_group_n: int = 30
    seed: int = 0

    @classmethod
    def for_run(cls, run_dir: Path, shap_sample: int | None = None, **settings) -> ReportSettings:
        """Settings for ``run_dir``'s report; ``shap_sample`` None: the ``[report] shap_sample`` of the run's
        ``config.toml`` (the default without one), so that a report built again explains the rows the
        run's own report did; 0: every row."""
        if shap_sample is None:
            from dermstack.config import ReportConfig, RunConfig

            config = Path(run_dir) / "config.toml"
            shap_sample = (RunConfig.from_toml(config).report if config.is_file() else ReportConfig()).shap_sample
        return cls(shap_sample=shap_sample or None, **settings)


@dataclass
class ModelShap:
    values: ShapValues
    groups: dict[str, str]
    shares: pl.DataFrame
    importance: pl.DataFrame
    #: what the values add up to and how they were combined (the final model's explanation)
    caption: str | None = None


def model_metrics(run: RunData, settings: ReportSettings) -> pl.DataFrame:
    """Every task metric of every model's OOF scores, with a bootstrap CI of the primary metric."""
    primary = run.task.primary_metric
    rows = []
    for model in run.model_names:
        idx, y, s = run.scored(model)
        lo, hi = bootstrap_ci(run.task.metrics[primary], y, s, n=settings.n_boot, seed=settings.seed)
        rows.append({"model": model, "n": len(idx), **evaluate(run.task.kind, y, s), f"{primary}_ci_low": lo,
                     f"{primary}_ci_high": hi})
    return pl.DataFrame(rows)


def model_curves(run: RunData, settings: ReportSettings) -> dict[str, dict[str, BinaryCurves]]:
    """model -> class -> curves (one-vs-rest for several classes)."""
    out = {}
    for model in run.model_names:
        _, y, s = run.scored(model)
        out[model] = {c: BinaryCurves.compute(c, yc, sc, specificities=(0.8, 0.9, settings.specificity), threshold=settings.threshold)
                      for c, yc, sc in class_views(run.task.kind, run.task.classes, y, s)}
    return out


def shap_for_run(run: RunData, settings: ReportSettings, out_dir: Path) -> dict[str, ModelShap]:
    """Out-of-fold SHAP of every booster model of the run, on the explicit sample; npz under ``out_dir/shap``."""
    if run.folds is None or run.features is None or not run.explained_dirs:
        log.warning("no SHAP: the run lacks folds.parquet, features.parquet or booster / linear models")
        return {}
    ids = run.task.image_ids
    rows = sample_rows(run.task.y, run.folds.fold_of(ids), settings.shap_sample, settings.seed)
    sample_ids = [ids[i] for i in rows]
    folds = run.folds.fold_of(sample_ids)
    positives = _positive_rows(run.task.kind, run.task.y[rows])
    out = final_model_shap(run, sample_ids, folds, positives, out_dir)
    for model_dir in run.explained_dirs:
        models, groups = run.fold_models(model_dir)
        features = align_rows(run.features_for(model_dir), sample_ids, source=str(run.root / "features.parquet"))
        sv = explain_model(model_dir.name, models, features, folds, run.task.classes)
        sv.write(out_dir / "shap" / f"{model_dir.name}.npz")
        out[model_dir.name] = ModelShap(sv, groups, group_contributions(sv, groups, positives), feature_importance(sv, groups))
    return out


def final_model_shap(run: RunData, sample_ids: list[str], folds: np.ndarray, positives: np.ndarray | None,
                     out_dir: Path) -> dict[str, ModelShap]:
    """The final model's explanation (:mod:`dermstack.reports.final_shap`) as the report's first ModelShap; ``shap/final.npz``."""
    from dermstack.reports.final_shap import explain_final

    fin = explain_final(run, sample_ids, folds)
    fin.values.write(out_dir / "shap" / "final.npz")
    sv = fin.values
    return {sv.model: ModelShap(sv, fin.groups, group_contributions(sv, fin.groups, positives), feature_importance(sv, fin.groups),
                                fin.caption)}


def _positive_rows(kind: str, y: np.ndarray) -> np.ndarray | None:
    return (y == 1) if TaskKind(kind).binary else None


def _curves_section(run: RunData, curves: dict[str, dict[str, BinaryCurves]], settings: ReportSettings) -> Section:
    sec = Section("curves", "Curves and operating points")
    final = run.final_model
    if run.task.kind.binary:
        order = {m: curves[m]["target"] for m in [final, *[m for m in curves if m != final]]}
    else:
        order = {f"{final}: {c}": v for c, v in curves[final].items()}
    calib, note = order, "Calibration (equal-count bins of the OOF score)."
    if "calibrated" in curves:  # the final model's scores before and after calibration (dermstack.calibration)
        cls = "target" if run.task.kind.binary else run.explained_class
        after, nested = curves["calibrated"][cls], run.nested_calibrated()
        if nested is not None:  # the nested-CV calibrated scores, what the run's Brier and ECE are of
            after = next((BinaryCurves.compute(c, yc, sc) for c, yc, sc in class_views(run.task.kind, run.task.classes, *nested)
                          if c == cls), after)
        calib = {f"{final} (before)": curves[final][cls], "calibrated (after)": after}
        note = (f"Calibration of the final model{'' if run.task.kind.binary else f', class {cls}'} before and after "
                "(after: each fold through the calibrator fitted on the other folds, what the Brier score and ECE are of; "
                "the submission applies the calibrator fitted on every row, which keeps the final model's ranking); "
                "equal-count bins of the OOF score.")
    sec.add(figures(figure(plots.roc_figure(order),
                           f"ROC; the shaded band is the ISIC 2024 pAUC region (TPR >= 0.8), filled under {next(iter(order))}."),
                    figure(plots.pr_figure(order), "Precision-recall."),
                    figure(plots.calibration_figure(calib), note)))
    ops = operating_points(curves)
    if run.task.kind.binary:
        op = ops.filter((pl.col("model") == final) & (pl.col("rule") == f"specificity >= {settings.specificity:g}")).row(0, named=True)
        op5 = ops.filter((pl.col("model") == final) & (pl.col("rule") == f"threshold {settings.threshold:g}")).row(0, named=True)
        cms = [figure(plots.confusion_figure([[o["tn"], o["fp"]], [o["fn"], o["tp"]]], ["benign", "malignant"], f"{final}: {o['rule']}"),
                      f"threshold {o['threshold']:.4g}: recall {o['recall']:.3f}, specificity {o['specificity']:.3f}") for o in (op5, op)]
        sec.add("<h3>Confusion matrices</h3>", figures(*cms))
    else:
        from dermstack.metrics import confusion_matrix

        _, y, s = run.scored(final)
        if y.ndim == 1:
            sec.add("<h3>Confusion matrix (argmax)</h3>",
                    figure(plots.confusion_figure(confusion_matrix(y, s), run.task.classes, f"{final}: argmax")))
    sec.add("<h3>Recall at fixed specificity</h3>", table(ops.drop("tp", "fp", "fn", "tn")))
    return sec


def operating_points(curves: dict[str, dict[str, BinaryCurves]]) -> pl.DataFrame:
    return pl.DataFrame([{"model": m, "class": c, **p} for m, cs in curves.items() for c, v in cs.items() for p in v.operating_points])


def _shap_sections(run: RunData, shaps: dict[str, ModelShap], settings: ReportSettings, metrics: pl.DataFrame) -> list[Section]:
    groups_sec = Section("shap-groups", "SHAP by feature group")
    top_sec = Section("top-features", "Top features")
    dep_sec = Section("dependence", "Metadata dependence")
    no_explainer = [paragraph(f"Model {name} (kind {kind}) has no explainer: no SHAP of its own; the final model's SHAP "
                              f"takes it as one term, its score ('{name} (score)').", "warn")
                    for name, kind in run.unexplained.items()]
    if not shaps:
        msg = paragraph("No SHAP values: the run has no model whose kind explains it feature by feature (booster, linear probe, "
                        "MLP), or lacks folds/features.", "warn")
        return [groups_sec.add(msg, *no_explainer), top_sec.add(msg), dep_sec.add(msg)]
    first = next(iter(shaps.values())).values
    n_pos = int(_positive_rows(run.task.kind, run.task.y).sum()) if run.task.kind.binary else None
    groups_sec.add(paragraph(
        f"Explained rows per model: {len(first)} of {len(run.task.image_ids)} training rows"
        + (f" (every positive of {n_pos}, plus negatives sampled per fold)" if len(first) < len(run.task.image_ids) and n_pos else "")
        + "; each row is explained by the boosters of its own fold (out-of-fold), averaged over seeds. "
          "Shares are of the mean |SHAP| in raw-score (log-odds) units."))
    groups_sec.add(*[paragraph(f"The final model comes first. {m.caption}") for m in shaps.values() if m.caption], *no_explainer)
    shares = pl.concat([m.shares for m in shaps.values()])
    groups_sec.add(figure(shap_plots.group_share_figure(shares), "Share of |SHAP| per feature group"),
                   table(shares.with_columns(pl.col("share").round(4))))
    lead = _lead_model(shaps, metrics, run)
    cls = run.explained_class
    for name, m in shaps.items():
        top_sec.add(f"<h3>{name}</h3>", figures(
            figure(shap_plots.beeswarm_figure(m.values, cls, settings.top_features),
                   f"{name}: SHAP per row" + (f" (class {cls})" if cls else "")),
            figure(shap_plots.bar_figure(m.importance, settings.top_features), f"{name}: mean |SHAP|, coloured by group")))
        if cls is not None:  # several outputs: the plots show one class, so list every class's drivers
            per_class = m.values.top_features_by_class(5).pivot(on="class", index="rank", values="feature")
            top_sec.add(paragraph(f"{name}: the five features of largest mean |SHAP| for each class "
                                  "(the plots above sum |SHAP| over classes or show one class)."), table(per_class))
    m = shaps[lead]
    concepts = shap_plots.concept_features(m.values.features, m.groups)
    dep_sec.add(paragraph(f"Model {lead}. Metadata features found: "
                          + (", ".join(f"{k} = {v}" for k, v in concepts.items()) or "none")))
    figs = [figure(shap_plots.dependence_figure(m.values, f, cls=cls), f"{concept}: {f}") for concept, f in concepts.items()]
    if "age" in concepts and "site" in concepts:
        figs.append(figure(shap_plots.dependence_figure(m.values, concepts["age"], concepts["site"], cls),
                           "Age x site: SHAP of age coloured by anatomical site"))
    dep_sec.add(figures(*figs))
    return [groups_sec, top_sec, dep_sec]


def _lead_model(shaps: dict[str, ModelShap], metrics: pl.DataFrame, run: RunData) -> str:
    """The booster model with the best primary metric."""
    primary = run.task.primary_metric
    ranked = metrics.filter(pl.col("model").is_in(list(shaps))).sort(primary, descending=True, nulls_last=True)
    return ranked["model"][0] if ranked.height else next(iter(shaps))


def _subgroup_section(run: RunData, subgroups: pl.DataFrame, settings: ReportSettings) -> Section:
    sec = Section("subgroups", "Subgroups and fairness")
    if subgroups.is_empty() or subgroups.filter(pl.col("attribute") != "overall").is_empty():
        return sec.add(paragraph("No subgroup columns (skin tone, sex, age, site, image type) in this table.", "warn"))
    final = run.final_model
    mine = subgroups.filter(pl.col("model") == final)
    sec.add(paragraph(f"Model {final}. Intervals: {settings.n_boot} bootstrap resamples (95%). Groups with fewer than "
                      f"{settings.min_group_n} rows (or, binary, fewer than 5 positives) are marked * / greyed, not hidden. "
                      f"Recall and specificity are at the threshold that reaches specificity {settings.specificity:g} overall."))
    metrics = [run.task.primary_metric] + (["roc_auc", "recall_at_threshold"] if run.task.kind.binary else [])
    groups = mine.filter(pl.col("kind") != "best - worst")
    sec.add(figures(*[figure(plots.subgroup_figure(groups, m, f"{final}: {m} by subgroup"), m) for m in metrics]))
    gaps = mine.filter(pl.col("kind") == "best - worst")
    if not gaps.is_empty():
        sec.add("<h3>Best minus worst group</h3>", paragraph(
            "Per attribute, the best minus the worst group not flagged small (nor missing); the interval combines "
            "independent bootstraps of the two groups."),
            table(gaps.select("attribute", "metric", "best", "worst", "value", "ci_low", "ci_high")))
    sec.add("<h3>Every group</h3>", table(groups.drop("model", "kind", "best", "worst"), max_rows=400, row_class="small"))
    return sec


def _overview_section(run: RunData, metrics: pl.DataFrame, shaps: dict[str, ModelShap]) -> Section:
    t = run.task
    # a binary task's one score column is called "target": name what it scores instead
    what = {"positive class": f"{t.target_name} (vs rest)"} if t.kind.binary else {"classes": ", ".join(t.classes)}
    facts = {"dataset": run.table.meta.dataset, "task": t.kind, **what,
             "training rows": len(t.image_ids), "final model": run.final_model,
             "models explained with SHAP": ", ".join(shaps) or "none"}
    if t.kind.binary:
        facts["positives"] = int(t.y.sum())
    facts_html = table(pl.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]}))
    section = Section("overview", "Overview").add(facts_html)
    for note in t.few_positive_notes():  # said where the numbers are shown, not only in metrics.json
        section.add(paragraph(f"Note: {note}."))
    return section.add("<h3>Out-of-fold metrics per model</h3>", table(metrics))


_NO_BLOCK = ("metrics.json has no {key} block: the run directory predates it, or is a stage-by-stage folder "
             "without metrics.json; re-run `dermstack run CONFIG --out RUN_DIR` to add it.")


def _clinical_section(run: RunData) -> Section:
    """metrics.json ``primary_ci`` and ``clinical`` (binary) or ``thresholds`` (several classes)."""
    sec = Section("clinical", "Clinical operating points")
    m = run.metrics
    ci = m.get("primary_ci")
    if ci:
        sec.add(paragraph(f"Final model {ci['model']}: {ci['metric']} {_fmt(ci['value'])} (95% CI {_fmt(ci['ci_low'])} to "
                          f"{_fmt(ci['ci_high'])}; {ci['n_boot']} bootstrap resamples of {ci['unit']}, all of a "
                          "unit's lesions together)."))
    key = "clinical" if run.task.kind.binary else "thresholds"
    block = m.get(key)
    if not block:
        return sec.add(paragraph(_NO_BLOCK.format(key=key), "warn"))
    if key == "clinical":
        rows = [{"metric": name, **{k: v.get(k) for k in ("value", "ci_low", "ci_high", "n_valid", "threshold")},
                 **_guaranteed_cells(v.get("guaranteed")), "note": v.get("note", "")}
                for name, v in block.items() if isinstance(v, dict) and "value" in v]
        boot = block.get("bootstrap", {})
        sec.add(paragraph(f"Model {block.get('model', run.final_model)}, out-of-fold scores. A lesion is flagged when its score "
                          "reaches the threshold; tied scores are flagged together. Flagged per cancer at 80% sensitivity: "
                          "lesions flagged for each cancer found (the ISIC 2024 challenge paper reports 51.57 for its best "
                          "model on the 370k-lesion private set). Top-15 sensitivity: share of cancers among their "
                          f"patient's 15 highest-scored lesions, pooled. 95% CIs: {boot.get('n_boot')} resamples of "
                          f"{boot.get('unit')}; n_valid = resamples where the value is defined. threshold: the score "
                          "at which the point is reached out of fold."),
                table(pl.DataFrame(rows, infer_schema_length=None)))
        return sec.add(_guarantee_paragraph(block.get("guarantee")))
    classes = block.get("classes") or run.task.classes
    sec.add(paragraph(f"Model {block.get('model', run.final_model)}: per-class rule {block['rule']} that maximises macro F1, "
                      f"chosen by nested CV (each fold's rule fitted on the other folds). Macro F1 "
                      f"{_fmt(block['f1_before'])} with the default rule (argmax / 0.5), {_fmt(block['f1_after'])} with the "
                      "tuned rules, out of fold. The submission keeps the probabilities; the all-rows rule below is "
                      "what to apply to them."))
    cols = {"class": classes, "all rows": block["thresholds"]}
    cols |= {f"fold {k}": v for k, v in block.get("fold_thresholds", {}).items()}
    sec.add(table(pl.DataFrame(cols)))
    ovr = block.get("one_vs_rest")
    if ovr:
        rows = [{"class": c, "positives": v["n_pos"], "metric": k, **{f: p.get(f) for f in ("value", "ci_low", "ci_high", "threshold")},
                 **_guaranteed_cells(p.get("guaranteed"))}
                for c, v in ovr.items() for k, p in v.items() if isinstance(p, dict)]
        sec.add("<h3>One-vs-rest operating points per class</h3>",
                paragraph("Each class's score against the other classes, out of fold: specificity at a target sensitivity "
                          "with its 95% CI, the threshold that reaches it, and the threshold with a guarantee."),
                table(pl.DataFrame(rows, infer_schema_length=None)), _guarantee_paragraph(block.get("guarantee")))
    return sec


def _guaranteed_cells(g: dict | None) -> dict:
    """The guaranteed threshold of an operating point as table cells (none for points without a target sensitivity)."""
    if not g:
        return {"guaranteed threshold": None, "its OOF sensitivity": None, "its OOF specificity": None}
    return {"guaranteed threshold": g["threshold"], "its OOF sensitivity": g["sensitivity"],
            "its OOF specificity": g["specificity"]}


def _guarantee_paragraph(g: dict | None) -> str:
    if not g:
        return ""
    return paragraph(f"Guaranteed threshold: sensitivity at least the target with probability at least {1 - g['delta']:g} "
                     f"(delta {g['delta']:g}) on new data exchangeable with these rows: {g['method']} (exact for continuous "
                     f"scores; dermstack.clinical.guarantee). It assumes {g['assumes']}; with too few positives it is "
                     "undefined (blank), never made up. `dermstack evaluate` measures the realised sensitivity on new data.")


def _comparison_section(run: RunData) -> Section:
    """metrics.json ``comparison`` (paired bootstrap against the final model) and ``repeats``."""
    sec = Section("comparison", "Model comparison")
    comp, rep = run.metrics.get("comparison"), run.metrics.get("repeats")
    if not comp:
        sec.add(paragraph(_NO_BLOCK.format(key="comparison"), "warn"))
    else:
        rows = [{"model": name, comp["metric"]: c["value_a"], f"final ({comp['reference']})": c["value_b"],
                 "difference": c["diff"], "ci_low": c["ci_low"], "ci_high": c["ci_high"], "p_value": c["p_value"],
                 "n_valid": c["n_valid"]} for name, c in comp["models"].items()]
        sec.add(paragraph(f"Each model minus the final model {comp['reference']} in {comp['metric']}, paired: both scored "
                          f"on the same {comp['n_boot']} bootstrap resamples of {comp.get('unit', 'patients')}. "
                          "95% percentile CI of the difference; two-sided p = 2 x the share of resamples on the other "
                          "side of 0 (0 reads as p < 1 / n_valid)."))
        sec.add(table(pl.DataFrame(rows)) if rows else paragraph("No other model to compare with."))
    if not rep:
        return sec.add(paragraph("One cross-validation (`[cv] repeats = 1`): no spread over fold seeds.", "note"))
    rows = [{"model": name, "mean": v["mean"], "std": v["std"], "values": ", ".join(_fmt(x) for x in v["values"])}
            for name, v in rep["models"].items()]
    chosen = rep["models"].get("final", {}).get("chosen")
    return sec.add(f"<h3>{rep['n']} cross-validation repeats</h3>",
                   paragraph(f"{rep['metric']} of every model with the grouped CV repeated on fold seeds {rep['fold_seeds']} "
                             f"(repeat r in {', '.join(rep.get('dirs', []))}); std is the sample standard deviation."
                             + (f" Final model per repeat: {', '.join(chosen)}." if chosen else "")),
                   table(pl.DataFrame(rows)))


def _fmt(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.4g}"


def build_report(run_dir: Path, out_dir: Path, shap_sample: int | None = 2000, settings: ReportSettings | None = None) -> Path:
    """Write ``out_dir/index.html`` (self-contained) and the numbers behind it; returns the HTML path."""
    t0 = time.perf_counter()
    settings = settings or ReportSettings(shap_sample=shap_sample)
    run_dir, out_dir = Path(run_dir), claim_dir(out_dir, "report folder", owned=REPORT_FILES, marker=is_report)
    run = RunData.load(run_dir)  # checked before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = model_metrics(run, settings)
    write_parquet(out_dir / "metrics.parquet", metrics)
    curves = model_curves(run, settings)
    write_json(out_dir / "curves.json", {m: {c: asdict(v) for c, v in cs.items()} for m, cs in curves.items()})
    write_parquet(out_dir / "operating_points.parquet", operating_points(curves))
    shaps = shap_for_run(run, settings, out_dir)
    if shaps:
        write_parquet(out_dir / "shap_groups.parquet", pl.concat([m.shares for m in shaps.values()]))
        write_parquet(out_dir / "shap_importance.parquet", pl.concat([m.importance for m in shaps.values()]))
    sub_settings = SubgroupSettings(n_boot=settings.n_boot, min_n=settings.min_group_n, specificity=settings.specificity,
                                    seed=settings.seed)
    # the final model's subgroups are what the report shows; every model's would multiply the bootstrap
    # cost by the number of models (minutes for an 11-class multi-label run)
    subgroups = subgroup_report(run, [run.final_model], sub_settings)
    write_parquet(out_dir / "subgroups.parquet", subgroups)
    head = headline(run, metrics, operating_points(curves), shaps, subgroups, settings.n_boot)
    sections = [summary_section(head), _overview_section(run, metrics, shaps),
                _clinical_section(run), held_out_section(run), _comparison_section(run),  # from metrics.json
                _curves_section(run, curves, settings), *_shap_sections(run, shaps, settings, metrics),
                _subgroup_section(run, subgroups, settings)]
    sections = [sec for sec in sections if sec is not None]  # Held-out groups: only with [cv] group
    write_json(out_dir / "summary.json", {
        "run_dir": str(run_dir.resolve()), "task": run.task.kind, "final_model": run.final_model,
        "settings": asdict(settings), "shap_rows": {m: len(s.values) for m, s in shaps.items()},
        "sections": [s.id for s in sections], "first_screen": head, "seconds": round(time.perf_counter() - t0, 1)})
    path = write_page(out_dir / "index.html", f"dermstack report: {run.table.meta.dataset}",
                      f"{run_dir.resolve()} · {run.task.kind} · {len(run.task.image_ids)} training rows", sections)
    log.info("report written to %s in %.1f s", path, time.perf_counter() - t0)
    return path
