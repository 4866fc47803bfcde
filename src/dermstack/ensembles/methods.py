"""The ensemble methods (and the ``calibrated`` step) in the registry (:mod:`dermstack.registry`):
how each is fitted, loaded and explained in the final-model SHAP."""
from __future__ import annotations

from functools import partial

from dermstack.calibration import SavedCalibrated
from dermstack.ensembles.explain import explain_calibrated, explain_level2, explain_mean
from dermstack.ensembles.stacking import SavedLevel2, stack_models
from dermstack.ensembles.weighted import SavedWeighted, weighted_mean
from dermstack.registry import EnsembleMethod, register


def _mean(outs, task, plan, out_dir=None):
    return weighted_mean(outs, task, plan, out_dir=out_dir)


def _level2(method, outs, task, plan, out_dir=None):
    return stack_models(outs, task, plan, method=method, out_dir=out_dir)


register(EnsembleMethod("mean", "every member once, its seeds averaged first", _mean, SavedWeighted, explain_mean,
                        auto_candidate=True))
register(EnsembleMethod("greedy", "Caruana ensemble selection with replacement, best step kept (nested CV)",
                        partial(_level2, "greedy"), SavedLevel2, explain_level2, auto_candidate=True,
                        group_members=True, min_members=2))
register(EnsembleMethod("stack", "logistic regression on the members' logits (nested CV)", partial(_level2, "stack"),
                        SavedLevel2, explain_level2, auto_candidate=True, group_members=True, min_members=2))
register(EnsembleMethod("rank", "weighted mean of the members' rank-transformed scores (nested CV)",
                        partial(_level2, "rank"), SavedLevel2, explain_level2, group_members=True, min_members=2))
register(EnsembleMethod("calibrated", "the final model's scores calibrated (Platt or isotonic by nested-CV Brier)",
                        None, SavedCalibrated, explain_calibrated))
