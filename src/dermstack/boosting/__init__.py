"""dermstack.boosting: cross-validated LightGBM, XGBoost and CatBoost on one FoldPlan.

Public API::

    cross_validate(features, task, plan, model, out_dir=None, test=True, client=None) -> ModelResult
    create_adapter(kind, task, classes, params=None, seed=0, categorical=None) -> adapter
    load_models(model_dir) -> list of adapters;  predict_saved(model_dir, features) -> np.ndarray
"""


from dermstack.boosting.base import BoosterAdapter, FeatureMatrix, PerClassAdapter  # noqa: E402
from dermstack.boosting.cv import cross_validate
from dermstack.boosting.defaults import DEFAULT_SAMPLING, KINDS, default_params
from dermstack.boosting.registry import create_adapter, load_adapter
from dermstack.boosting.store import load_models, predict_saved

__all__ = [
    "BoosterAdapter", "DEFAULT_SAMPLING", "FeatureMatrix", "KINDS", "PerClassAdapter",
    "create_adapter", "cross_validate", "default_params", "load_adapter", "load_models", "predict_saved",
]
