"""A weighted mean of saved models' scores, itself a saved model.

The mean ensemble weights each member once (its scores averaged over its own seeds and folds
first), the same way on OOF rows, test rows and new data, so the OOF metric it reports is the
metric of the model that predicts. Weights are stored in ``model.json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dermstack.crossfit import check_same_plan, fold_metrics
from dermstack.data.folds import FoldPlan
from dermstack.errors import DataError
from dermstack.predictions import ModelResult, Predictions
from dermstack.saved import Inputs, SavedModel, model_spec, write_model
from dermstack.task import TaskSpec


def combine(matrices: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """sum_m w_m * scores_m / sum_m w_m."""
    w = np.asarray(weights, dtype=float)
    if len(matrices) != len(w) or w.sum() <= 0 or (w < 0).any():
        raise DataError(f"weights {w.tolist()} do not fit {len(matrices)} members")
    return np.tensordot(w / w.sum(), np.stack(matrices), axes=1)


def weighted_mean(outs: list[ModelResult], task: TaskSpec, plan: FoldPlan, weights: list[float] | None = None,
                  out_dir: Path | None = None, name: str = "mean") -> ModelResult:
    """The weighted mean of ``outs`` (equal weights by default) as a model of its own."""
    names = [o.name for o in outs]
    check_same_plan(outs, plan)
    weights = list(weights) if weights is not None else [1.0] * len(outs)
    fold_of = plan.fold_of(task.image_ids)
    oof = combine([o.oof.matrix(task.image_ids, task.classes, source=f"model {o.name!r} OOF") for o in outs], weights)
    test_ids = outs[0].test.image_ids()
    test = (combine([o.test.matrix(test_ids, task.classes, source=f"model {o.name!r} test") for o in outs], weights) if test_ids
            else np.zeros((0, len(task.classes))))
    metrics = fold_metrics(task, oof, [np.flatnonzero(fold_of == k) for k in range(plan.n_splits)])
    metrics.update(base_models=names, weights=dict(zip(names, weights)))
    result = ModelResult(name, Predictions.from_scores(name, task.image_ids, task.classes, oof, fold=fold_of),
                         Predictions.from_scores(name, test_ids, task.classes, test), metrics)
    if out_dir:
        write_model(Path(out_dir) / name, model_spec(name, "mean", task, {"members": names}, weights=weights), result)
    return result


class SavedWeighted(SavedModel):
    def predict(self, inputs: Inputs) -> np.ndarray:
        return combine([inputs.matrix(m) for m in self.spec["needs"]["members"]], self.spec["weights"])
