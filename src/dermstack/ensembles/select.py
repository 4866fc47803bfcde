"""``[ensemble] method = "auto"``: the final model is whichever of the best single member, the mean,
ensemble selection (greedy) and the level-2 stack scores best on the primary metric, each evaluated
by nested cross-validation on the run's FoldPlan (an ensemble's OOF score for fold k comes from
weights or a learner fitted on the other folds' OOF scores only).

Why choose at all: which combination wins depends on the data. With few positives a logistic stack
over-fits its inputs and loses to its best member (the demo's 60 positives: stack 0.845 ROC-AUC, its
LightGBM member 0.890); with many diverse members it wins. Because the best member is a candidate,
the final model never scores below it. Ties go to the simpler candidate (single < mean < greedy <
stack). The choice, every candidate's score and the reason are recorded in ``metrics.json``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from dermstack.atomic import write_json
from dermstack.data.folds import FoldPlan
from dermstack.metrics import evaluate
from dermstack.predictions import ModelResult
from dermstack.registry import auto_candidates, ensemble_methods
from dermstack.task import TaskSpec

log = logging.getLogger(__name__)

CHOICE_FILE = "ensemble_choice.json"


def primary_score(result: ModelResult, task: TaskSpec) -> float:
    return float(evaluate(task.kind, task.y, result.oof.matrix(task.image_ids, task.classes))[task.primary_metric])


def select_ensemble(outs: list[ModelResult], task: TaskSpec, plan: FoldPlan, out_dir: Path | None = None) -> tuple[ModelResult, dict]:
    """(the chosen model, the record of the choice); every candidate ensemble is saved in ``out_dir``."""
    metric = task.primary_metric
    members = {o.name: primary_score(o, task) for o in outs}
    best = max(outs, key=lambda o: members[o.name])
    results = {best.name: best}
    candidates, methods = auto_candidates(), ensemble_methods()
    for method in candidates:
        results[method] = methods[method].fit(outs, task, plan, out_dir=out_dir)
    scores = {name: members[name] if name in members else primary_score(r, task) for name, r in results.items()}
    chosen = max(results, key=lambda n: scores[n])  # dicts keep order: ties go to the simpler candidate
    record = {
        "method": "auto", "metric": metric, "chosen": chosen, "best_member": best.name,
        "candidates": {("best member: " + n if n == best.name else n): scores[n] for n in results},
        "members": members,
        "why": (f"highest nested-CV OOF {metric} ({scores[chosen]:.4f}) among the best member {best.name!r} "
                f"({scores[best.name]:.4f}), " + ", ".join(f"{m} ({scores[m]:.4f})" for m in candidates)),
    }
    log.info("ensemble: %s", record["why"])
    if out_dir:
        write_json(Path(out_dir) / CHOICE_FILE, record)
    return results[chosen], record
