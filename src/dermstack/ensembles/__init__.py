"""dermstack.ensembles: ensemble methods and level-2 learners over saved models' OOF scores.

Every ensemble is a saved model evaluated by nested CV on the run's FoldPlan; the methods register
themselves in :mod:`dermstack.registry` (:mod:`~dermstack.ensembles.methods`). Public API (import
from the submodules; this package imports nothing heavy)::

    weighted.weighted_mean(outs, task, plan, weights=None, out_dir=None) -> ModelResult
    stacking.stack_models(outs, task, plan, method="stack"|"greedy"|"rank", out_dir=None) -> ModelResult
    stacking.comparison(results, task) -> pl.DataFrame
    select.select_ensemble(outs, task, plan, out_dir) -> ModelResult     # method = "auto"
    level2.make_learner(method, task_kind, names) -> Level2
    explain: how each method's step composes its members' SHAP (the final-model explanation)

The CNN is :mod:`dermstack.cnn`; predictions on new data and submissions are :mod:`dermstack.outputs`.
"""
