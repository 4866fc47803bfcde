"""The run's final outputs: ``oof.parquet``, ``test_predictions.parquet``, ``metrics.json`` and the submission."""
from __future__ import annotations

import logging

import numpy as np

from dermstack.atomic import write_json
from dermstack.calibration import calibration_metrics
from dermstack.clinical_report import clinical_metrics
from dermstack.data.folds import FoldPlan
from dermstack.data.table import LesionTable
from dermstack.metrics import evaluate
from dermstack.outputs.submission import submission_format, write_submission
from dermstack.predictions import ModelResult, Predictions
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)
#: [cv] repeats: the child runs' folder in RUN_DIR
REPEATS_FOLDER = "repeats"


def write_outputs(run, table: LesionTable, task: TaskSpec, outs: list[ModelResult], final: ModelResult,
                  calibrated: ModelResult, plan: FoldPlan, repeats: list[dict] = ()) -> dict:
    p = run.paths
    submitted = calibrated if task.kind.binary else final
    models = outs + ([final] if final.name not in {o.name for o in outs} else []) + [calibrated]
    base, scores = {}, {}
    for o in models:  # every model scored the same way, on the run's labels
        scores[o.name] = s = o.oof.matrix(task.image_ids, task.classes, source=o.name)
        base[o.name] = {k: v for k, v in o.metrics.items() if isinstance(v, (int, float))}
        # a calibrated model's Brier and ECE are of its nested-CV scores (dermstack.calibration.calibrated_model)
        cal = o.metrics.get("calibration", {}).get("after") or calibration_metrics(task.kind, task.y, s)
        base[o.name].update(evaluate(task.kind, task.y, s) | cal)
    Predictions.concat([o.oof for o in models]).write(p.oof)
    if any(o.test.height for o in models):
        Predictions.concat([o.test for o in models]).write(p.test_predictions)
    metrics = {
        "task": task.kind, "target": task.target_name if task.kind.binary else None,
        "classes": task.classes, "dataset": table.meta.dataset,
        "n_train": len(task.image_ids), "n_test": table.test.height,
        "n_positive": int(task.y.sum()) if task.kind.binary else None,
        "unlabelled_training_rows": {"count": len(run.unlabelled), "examples": run.unlabelled[:10]},
        "primary_metric": task.primary_metric,
        "oof_model": final.name,
        "ensemble": run.ensemble_choice or {"method": run.ensemble_method(len(outs)), "chosen": final.name},
        "oof": base[final.name],
        "calibration": calibrated.metrics["calibration"],
        # binary: calibrated probabilities; multiclass/label: the final model's own scores, whose
        # argmax / 0.5 threshold is what macro F1 (their metric) scores (dermstack.calibration)
        "submission_model": submitted.name,
        "models": {o.name: base[o.name] for o in outs},
    }
    if run.clinical:
        compared = {n: scores[n] for n in [*metrics["models"], calibrated.name, final.name]}
        metrics |= clinical_metrics(table, task, compared, final.name, plan, delta=run.cfg.clinical.delta)
    if getattr(run, "audit", None) is not None:
        metrics["audit"] = run.audit
    if task.few_positives():
        metrics["notes"] = task.few_positive_notes()
        for note in metrics["notes"]:
            log.warning(note)
    if repeats:
        metrics["repeats"] = repeats_summary(metrics, list(repeats), run.cfg.cv.seed)
    write_json(p.metrics, metrics)
    if table.test.height and submitted.test.height:
        fmt = submission_format(table, task)
        if fmt is None:
            log.info("no Kaggle-style submission format for %s / %s", table.meta.dataset, task.kind)
        else:
            write_submission(submitted.test.frame, fmt, p.submission, ids=table.test["image_id"].to_list(), classes=task.classes)
            log.info("wrote %s", p.submission)
    return metrics


def repeats_summary(parent_metrics: dict, children: list[dict], seed: int) -> dict:
    """``metrics.json`` ``repeats``: the primary metric of every model (and of each run's final
    model, under ``final``) per repeat, the main run first, with mean and standard deviation."""
    runs = [parent_metrics, *children]
    primary = parent_metrics["primary_metric"]
    names = list(dict.fromkeys(n for m in runs for n in m["models"]))
    per_model = {n: [m["models"].get(n, {}).get(primary) for m in runs] for n in names}
    per_model["final"] = [m["oof"].get(primary) for m in runs]
    models = {}
    for name, values in per_model.items():
        v = np.array([np.nan if x is None else x for x in values], dtype=float)
        ok = v[np.isfinite(v)]
        models[name] = {"mean": float(ok.mean()) if len(ok) else float("nan"),
                        "std": float(ok.std(ddof=1)) if len(ok) > 1 else float("nan"), "values": v.tolist()}
    models["final"]["chosen"] = [m["oof_model"] for m in runs]
    return {"n": len(runs), "metric": primary, "fold_seeds": [seed + r for r in range(len(runs))],
            "dirs": [f"{REPEATS_FOLDER}/{r}" for r in range(1, len(runs))], "models": models}
