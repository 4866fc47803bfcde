"""`dermstack compare RUN_A RUN_B [RUN_C ...] --out DIR`: is one run's final model better than another's?

Each later run's model is paired with the first run's (the reference) on the OOF rows both scored,
on the patient resamples ``metrics.json`` uses (:func:`dermstack.clinical.paired_bootstrap`,
:mod:`dermstack.clinical_report`'s unit, count and seed): the difference (run minus reference) in
the primary metric and in ROC-AUC with its 95 % CI and p-value, Holm-corrected over the runs
compared, overall and per subgroup (:func:`dermstack.reports.subgroups.subgroup_columns`). OOF
scores are only paired when every run cross-validated the same rows in the same folds: otherwise
the difference would mix the models with the splits, and the runs are refused.

Folders written by ``dermstack evaluate`` (two runs scored on one external dataset) are paired the
same way on the external rows every evaluation scored (:func:`compare_evaluations`): the same
labels, the same patient resamples of those rows, the same subgroups.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dermstack.atomic import read_json, write_json
from dermstack.clinical import paired_bootstrap
from dermstack.clinical_report import N_BOOT, SEED, bootstrap_units, format_ci
from dermstack.data.table import LesionTable
from dermstack.errors import DataError, reading
from dermstack.metrics import PRIMARY_METRIC, ROC_AUC_METRIC
from dermstack.predictions import Predictions
from dermstack.reports import plots
from dermstack.reports.html import Section, figure, paragraph, table, write_page
from dermstack.reports.rundata import RunData
from dermstack.reports.subgroups import MISSING, SubgroupSettings, group_order, subgroup_columns
from dermstack.taskkind import TaskKind

log = logging.getLogger(__name__)

#: the second metric of every comparison, per task (the primary metric is the first)


@dataclass
class Side:
    """One run of a comparison: its data, the model compared and how tables name it."""

    run: RunData
    model: str
    label: str

    @property
    def root(self) -> Path:
        return self.run.root


@dataclass
class EvaluationSide:
    """One ``dermstack evaluate`` folder of a comparison: its predictions of the external rows, those
    rows as read (``lesions.parquet``), ``evaluation.json``, the model compared and its label."""

    root: Path
    evaluation: dict
    predictions: pl.DataFrame
    rows: LesionTable
    model: str
    label: str

    def scores(self, ids: list[str], classes: list[str]) -> np.ndarray:
        cols = [self.model] if TaskKind(self.evaluation["task"]).binary else [f"{self.model}:{c}" for c in classes]
        frame = pl.DataFrame({"image_id": ids}).join(self.predictions, on="image_id", how="left", maintain_order="left")
        out = frame.select(cols).to_numpy().astype(np.float64)
        return out[:, 0] if len(cols) == 1 else out


def is_evaluation(folder: Path) -> bool:
    return (Path(folder) / "evaluation.json").is_file()


def load_sides(run_dirs: list[Path], models: list[str]) -> list[Side] | list[EvaluationSide]:
    """Each run (checked current) with its final model, or ``models[i]`` (one name: every run); or,
    when every folder is a ``dermstack evaluate`` output, each evaluation with its final model."""
    if len(run_dirs) < 2:
        raise DataError("compare needs at least two run directories (or evaluation folders)")
    if models and len(models) not in (1, len(run_dirs)):
        raise DataError(f"--model is given {len(models)} times for {len(run_dirs)} runs: give it once (every run) or once per run")
    kinds = {is_evaluation(d) for d in run_dirs}
    if len(kinds) > 1:
        raise DataError("compare pairs run directories (out-of-fold scores) or evaluation folders (`dermstack evaluate` "
                        "on the same external rows), not both: " + ", ".join(f"{d} ({'evaluation' if is_evaluation(d) else 'run'})"
                                                                             for d in run_dirs))
    names = [Path(d).name for d in run_dirs]
    sides = []
    for i, d in enumerate(run_dirs):
        label = names[i] if names.count(names[i]) == 1 else str(d)
        chosen = (models[i] if len(models) > 1 else models[0]) if models else None
        if kinds == {True}:
            sides.append(_evaluation_side(Path(d), chosen, label))
            continue
        run = RunData.load(d)
        model = chosen or run.final_model
        if model not in run.model_names:
            raise DataError(f"no model {model!r} in this run (has {run.model_names})", file=str(d))
        sides.append(Side(run, model, f"{label} ({model})"))
    return sides


def _evaluation_side(d: Path, model: str | None, label: str) -> EvaluationSide:
    e = read_json(d / "evaluation.json", "evaluation")
    with reading(d / "predictions.parquet", "predictions"):
        preds = pl.read_parquet(d / "predictions.parquet")
    model = model or e["final"]
    if model not in e["models"]:
        raise DataError(f"no model {model!r} in this evaluation (has {list(e['models'])})", file=str(d / "evaluation.json"))
    return EvaluationSide(d, e, preds, LesionTable.read(d / "lesions.parquet"), model, f"{label} ({model})")


def _labels_of(side: EvaluationSide, ids: list[str]) -> np.ndarray:
    """The evaluation's labels of ``ids`` as ``TaskSpec.y`` holds them."""
    kind, classes = TaskKind(side.evaluation["task"]), side.evaluation["classes"]
    lab = pl.DataFrame({"image_id": ids}).join(side.predictions, on="image_id", how="left", maintain_order="left")["label"]
    if kind.binary:
        return lab.to_numpy().astype(np.int8)
    index = {c: k for k, c in enumerate(classes)}
    if kind.exclusive:
        return np.array([index[v] for v in lab.to_list()], dtype=np.int64)
    return np.array([[int(c in v.split(";")) for c in classes] for v in lab.to_list()], dtype=np.int8)


def compare_evaluations(sides: list[EvaluationSide], n_boot: int = N_BOOT, seed: int = SEED,
                        settings: SubgroupSettings = SubgroupSettings()) -> dict:
    """``compare.json`` of evaluations: every later side against the first on the external rows every
    side scored, paired on the same patient resamples of those rows (as :func:`compare_runs`)."""
    ref = sides[0]
    kind, classes = TaskKind(ref.evaluation["task"]), ref.evaluation["classes"]
    for s in sides[1:]:
        if (s.evaluation["task"], s.evaluation["classes"], s.evaluation.get("target")) != (
                ref.evaluation["task"], classes, ref.evaluation.get("target")):
            raise DataError(f"{s.label} against {ref.label}: different tasks ({s.evaluation['task']} {s.evaluation['classes']} "
                            f"vs {ref.evaluation['task']} {classes}); a paired comparison scores both against the same labels")
    shared = set(ref.predictions["image_id"].to_list())
    for s in sides[1:]:
        shared &= set(s.predictions["image_id"].to_list())
    ids = [i for i in ref.predictions["image_id"].to_list() if i in shared]
    if not ids:
        raise DataError(f"the evaluations {[s.label for s in sides]} share no scored row: were they run on the same data?")
    y = _labels_of(ref, ids)
    for s in sides[1:]:
        if not np.array_equal(_labels_of(s, ids), y):
            raise DataError(f"{s.label} against {ref.label}: the same rows have different labels; a paired comparison "
                            "needs the same labelled data")
    rows = ref.rows.df.filter(pl.col("image_id").is_in(ids))
    rows = pl.DataFrame({"image_id": ids}).join(rows, on="image_id", how="left", maintain_order="left")
    units, unit = bootstrap_units(LesionTable(rows, ref.rows.meta), ids)
    comparisons = paired_comparisons(kind, y, [s.scores(ids, classes) for s in sides], units, subgroup_columns(rows), sides,
                                     n_boot, seed, settings)
    return {"task": kind, "classes": classes, "primary_metric": PRIMARY_METRIC[kind],
            "metrics": [PRIMARY_METRIC[kind], ROC_AUC_METRIC[kind]],
            "reference": {"run": str(ref.root), "model": ref.model, "label": ref.label},
            "n_rows": len(ids), "n_positive": int(y.sum()) if kind.binary else None,
            "unit": unit, "n_boot": n_boot, "seed": seed, "difference": "run minus reference",
            "external": {"data": sorted({s.evaluation["data"] for s in sides}),
                         "scored_by_one_only": {s.label: s.predictions.height - len(ids) for s in sides}},
            "holm": f"p_holm: Holm over the {len(comparisons)} evaluations compared with the reference, per metric (and per subgroup)",
            "comparisons": comparisons}


def check_pairable(ref: Side, other: Side) -> None:
    """A DataError saying why two runs cannot be paired: another task, other rows or other folds."""
    a, b = ref.run, other.run
    where = f"{other.label} against {ref.label}"
    if (a.task.kind, a.task.classes) != (b.task.kind, b.task.classes):
        raise DataError(f"{where}: different tasks ({a.task.kind} {a.task.classes} vs {b.task.kind} {b.task.classes}); "
                        "a paired comparison scores both models against the same labels")
    if a.folds is None or b.folds is None:
        missing = a.root if a.folds is None else b.root
        raise DataError("no folds.parquet: a paired comparison needs to check that both runs used the same folds",
                        file=str(missing / "folds.parquet"))
    fa, fb = (r.folds.folds.select("image_id", "fold") for r in (a, b))
    only_a, only_b = fa.join(fb, on="image_id", how="anti"), fb.join(fa, on="image_id", how="anti")
    if only_a.height or only_b.height:
        raise DataError(f"{where}: different training rows ({only_a.height} only in {a.root}, e.g. "
                        f"{only_a['image_id'].head(3).to_list()}; {only_b.height} only in {b.root}, e.g. "
                        f"{only_b['image_id'].head(3).to_list()}); a paired comparison needs the same rows: "
                        "run both configs on the same data")
    moved = fa.join(fb, on="image_id").filter(pl.col("fold") != pl.col("fold_right"))
    if moved.height:
        how = {r.root: (f"fold file {r.folds.source['file']}" if r.folds.source else
                        f"{r.folds.n_splits} folds, seed {r.folds.seed}") for r in (a, b)}
        raise DataError(f"{where}: different FoldPlans ({moved.height} rows in another fold, e.g. "
                        f"{moved['image_id'][0]!r}; {how[a.root]} vs {how[b.root]}); a paired comparison needs the "
                        "same folds: use the same [cv] n_splits and seed, or the same [cv] folds file")


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN, left out of the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def _effect(d: dict) -> dict:
    return {"value": d["value_a"], "reference_value": d["value_b"], "difference": d["diff"],
            "ci95": [d["ci_low"], d["ci_high"]], "p_value": d["p_value"], "n_valid": d["n_valid"]}


def compare_runs(sides: list[Side], n_boot: int = N_BOOT, seed: int = SEED,
                 settings: SubgroupSettings = SubgroupSettings()) -> dict:
    """``compare.json``: every later side against the first, overall and per subgroup (see the module docstring)."""
    t0 = time.perf_counter()
    ref = sides[0]
    for other in sides[1:]:
        check_pairable(ref, other)
    task, ids = ref.run.task, ref.run.task.image_ids
    scores = [Predictions(s.run.oof).for_model(s.model).matrix(ids, task.classes, require=False) for s in sides]
    keep = np.logical_and.reduce([np.isfinite(s.reshape(len(ids), -1)).all(axis=1) for s in scores])
    if not keep.any():
        raise DataError(f"the models {[s.label for s in sides]} share no scored training row")
    idx = np.flatnonzero(keep)
    y = task.y[idx]
    for s in sides[1:]:
        pos = {i: k for k, i in enumerate(s.run.task.image_ids)}
        if not np.array_equal(s.run.task.y[[pos[ids[i]] for i in idx]], y):
            raise DataError(f"{s.label} against {ref.label}: the runs label the same rows differently "
                            "(another [data] target?); a paired comparison needs the same labels")
    scores = [s[idx] for s in scores]
    shared = [ids[i] for i in idx]
    units, unit = bootstrap_units(ref.run.table, shared)
    groups = {a: g.gather(idx) for a, g in subgroup_columns(ref.run.train).items()}
    comparisons = paired_comparisons(task.kind, y, scores, units, groups, sides, n_boot, seed, settings)
    log.info("compared %d runs on %d rows (%d resamples of %s) in %.1f s", len(sides), len(idx), n_boot, unit,
             time.perf_counter() - t0)
    plan = ref.run.folds
    return {"task": task.kind, "classes": task.classes, "primary_metric": task.primary_metric,
            "metrics": [task.primary_metric, ROC_AUC_METRIC[task.kind]],
            "reference": {"run": str(ref.run.root), "model": ref.model, "label": ref.label},
            "n_rows": len(idx), "n_positive": int(y.sum()) if task.kind.binary else None,
            "unit": unit, "n_boot": n_boot, "seed": seed, "difference": "run minus reference",
            "folds": {"n_splits": plan.n_splits, "seed": plan.seed, "group_column": plan.group_column, "source": plan.source},
            "holm": f"p_holm: Holm over the {len(comparisons)} runs compared with the reference, per metric (and per subgroup)",
            "comparisons": comparisons}


def paired_comparisons(kind, y: np.ndarray, scores: list[np.ndarray], units: np.ndarray, groups: dict[str, pl.Series],
                       sides: list, n_boot: int, seed: int, settings: SubgroupSettings) -> list[dict]:
    """Each later side's scores against the first's on the same rows and patient resamples: the primary
    metric and ROC-AUC, overall and per subgroup, with Holm-adjusted p-values over the sides."""
    metrics = [PRIMARY_METRIC[kind], ROC_AUC_METRIC[kind]]
    comparisons = []
    for side, s in zip(sides[1:], scores[1:]):
        overall = {m: _effect(paired_bootstrap(y, s, scores[0], units, m, n_boot, seed)) for m in metrics}
        rows = []
        for attribute, labels in groups.items():
            for group in sorted(labels.unique().to_list(), key=group_order):
                rows_g = np.flatnonzero((labels == group).to_numpy())
                n_pos = int(y[rows_g].sum()) if kind.binary else None
                small = len(rows_g) < settings.min_n or (n_pos is not None and n_pos < settings.min_pos)
                for m in metrics:
                    d = paired_bootstrap(y[rows_g], s[rows_g], scores[0][rows_g], units[rows_g], m, n_boot, seed)
                    rows.append({"attribute": attribute, "group": group, "n": len(rows_g), "n_pos": n_pos, "small": small,
                                 "metric": m, **_effect(d)})
        comparisons.append({"run": str(side.root), "model": side.model, "label": side.label,
                            "metrics": overall, "subgroups": rows})
    _adjust(comparisons, metrics)
    return comparisons


def _adjust(comparisons: list[dict], metrics: list[str]) -> None:
    """``p_holm`` beside each p-value: the family is one metric (one subgroup) across the runs compared."""
    for m in metrics:
        for c, p in zip(comparisons, holm([c["metrics"][m]["p_value"] for c in comparisons])):
            c["metrics"][m]["p_holm"] = p
    keys = {(r["attribute"], r["group"], r["metric"]) for c in comparisons for r in c["subgroups"]}
    for key in keys:
        rows = [r for c in comparisons for r in c["subgroups"] if (r["attribute"], r["group"], r["metric"]) == key]
        for r, p in zip(rows, holm([r["p_value"] for r in rows])):
            r["p_holm"] = p


# -- the page -----------------------------------------------------------------------------------------


def _p(p: float | None, n_valid: int) -> str:
    """A bootstrap p-value of 0 means every resample favoured one model: p < 1 / resamples."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    return f"p < {1 / max(n_valid, 1):.2g}" if p == 0 else f"p = {p:.3g}"


def comparison_sentence(c: dict, result: dict) -> str:
    parts = []
    for m in result["metrics"]:
        e = c["metrics"][m]
        lo, hi = e["ci95"]
        sign = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
        p = _p(e["p_value"], e["n_valid"]) + (f", Holm {_p(e['p_holm'], e['n_valid'])}" if len(result["comparisons"]) > 1 else "")
        parts.append(f"{m} {e['reference_value']:.3f} -> {e['value']:.3f}, difference "
                     f"{format_ci(e['difference'], lo, hi, '+.3f')} ({p}; {sign})")
    return f"{c['label']} minus {result['reference']['label']}: " + "; ".join(parts) + "."


def _frame(c: dict, result: dict) -> pl.DataFrame:
    return pl.DataFrame([{"metric": m, "reference": e["reference_value"], "run": e["value"], "difference": e["difference"],
                          "ci_low": e["ci95"][0], "ci_high": e["ci95"][1], "p_value": e["p_value"], "p_holm": e["p_holm"]}
                         for m, e in c["metrics"].items()])


def _subgroup_frame(c: dict) -> pl.DataFrame:
    return pl.DataFrame([{"attribute": r["attribute"], "group": r["group"], "n": r["n"], "n_pos": r["n_pos"],
                          "metric": r["metric"], "reference": r["reference_value"], "run": r["value"],
                          "difference": r["difference"], "ci_low": r["ci95"][0], "ci_high": r["ci95"][1],
                          "p_value": r["p_value"], "small": r["small"]} for r in c["subgroups"]],
                        infer_schema_length=None)


#: what compare writes into its folder
COMPARE_FILES = ("compare.json", "compare.html")


def is_compare(folder: Path) -> bool:
    """``folder`` holds a comparison dermstack wrote (its ``compare.json``); compare writes only its own
    two file names, so files of the user's beside them stay."""
    try:
        result = read_json(folder / COMPARE_FILES[0])
    except (OSError, DataError):
        return False
    return isinstance(result, dict) and {"reference", "comparisons", "primary_metric"} <= result.keys()


def claim_compare_dir(out: str | Path) -> Path:
    """``out`` ready for a comparison: never a folder of the user's files (:func:`dermstack.rundir.claim_dir`)
    nor a place inside a run directory, which a rerun of that run would refuse or remove."""
    from dermstack.rundir import claim_dir, enclosing_run_dir

    run = enclosing_run_dir(out)
    if run is not None:
        raise DataError(f"inside the run directory {run}: a comparison is not part of any one run (a rerun would "
                        "refuse or remove it); give a folder outside every run directory", file=str(out))
    return claim_dir(out, "compare folder", marker=is_compare)


def write_compare(result: dict, out: str | Path) -> Path:
    """``compare.json`` and the self-contained ``compare.html`` (summary first) in ``out`` (:func:`claim_compare_dir`)."""
    out = claim_compare_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / COMPARE_FILES[0], result)
    ref, primary = result["reference"]["label"], result["primary_metric"]
    positives = f" ({result['n_positive']} positives)" if result["n_positive"] is not None else ""
    if "folds" in result:
        rows = (f"{result['n_rows']} training rows scored out of fold by every run{positives}; the same "
                f"{result['folds']['n_splits']} folds (grouped by {result['folds']['group_column']})")
    else:
        rows = (f"{result['n_rows']} external rows ({', '.join(result['external']['data'])}) scored by every evaluation"
                f"{positives}")
    how = (f"{rows}; paired bootstrap: {result['n_boot']} resamples of {result['unit']}, the same for every model, as "
           "metrics.json. Differences are run minus reference: above 0, the run is better.")
    summary = Section("summary", "Summary").add(paragraph(how),
                                                *[paragraph(comparison_sentence(c, result), "") for c in result["comparisons"]])
    summary.add(table(pl.concat([_frame(c, result).select(pl.lit(c["label"]).alias("run vs " + ref), pl.all())
                                 for c in result["comparisons"]])))
    sections = [summary]
    for i, c in enumerate(result["comparisons"]):
        sub = _subgroup_frame(c) if c["subgroups"] else pl.DataFrame()
        sec = Section(f"subgroups{i}", f"Subgroups: {c['label']}")
        if sub.is_empty():
            sec.add(paragraph("No subgroup columns (sex, age, site, skin tone, image type) in this data."))
        else:
            sec.add(figure(plots.difference_figure(sub.filter(pl.col("group") != MISSING), primary,
                                                   f"{primary}: {c['label']} minus {ref}"),
                           f"{primary} difference per subgroup with its 95% CI; grey: fewer than "
                           f"{SubgroupSettings.min_n} rows (or 5 positives)"),
                    paragraph("Subgroup p-values are not corrected for the number of groups; read the intervals."),
                    table(sub, row_class="small"))
        sections.append(sec)
    subtitle = f"{result['task']} · reference {ref} · " + ", ".join(c["label"] for c in result["comparisons"])
    return write_page(out / COMPARE_FILES[1], "dermstack compare", subtitle, sections)


def compare(run_dirs: Sequence[str | Path], out: str | Path, models: Sequence[str] = (), n_boot: int = N_BOOT) -> dict:
    """Compare the runs (the first is the reference), or ``dermstack evaluate`` folders of the same
    external data, and write ``compare.json`` and ``compare.html`` into ``out`` (claimed before any
    work); returns what ``compare.json`` holds. ``models``: the model compared instead of each run's
    final one, once for every run or once per run."""
    claim_compare_dir(out)
    sides = load_sides([Path(d) for d in run_dirs], list(models))
    result = (compare_evaluations if isinstance(sides[0], EvaluationSide) else compare_runs)(sides, n_boot=n_boot)
    write_compare(result, out)
    return result
