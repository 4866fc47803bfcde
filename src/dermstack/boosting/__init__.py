"""dermstack.boosting: cross-validated gradient-boosted trees (LightGBM, XGBoost, CatBoost) on one FoldPlan.

Each library is a :class:`BoosterAdapter` subclass that also describes it (defaults, parameter names,
leaf and split parameters, Dask path); :mod:`~dermstack.boosting.kind` makes each a registry kind.
The boosters read the feature table only: a feature group another kind gives (the CNN's scores)
is handed to them by the pipeline.

Public API::

    cross_validate(features, task, plan, model, out_dir=None, test=True, client=None) -> ModelResult
    create_adapter(kind, task, classes, params=None, seed=0, categorical=None) -> adapter
    load_models(model_dir) -> list of adapters;  predict_saved(model_dir, features) -> np.ndarray
    adapter_class(kind) -> BoosterAdapter subclass;  booster_kinds() -> names
"""


from dermstack.boosting.base import BoosterAdapter, FeatureMatrix, PerClassAdapter, adapter_class, booster_kinds  # noqa: E402
from dermstack.boosting.cv import cross_validate
from dermstack.boosting.defaults import DEFAULT_SAMPLING, default_params
from dermstack.boosting.registry import create_adapter, load_adapter
from dermstack.boosting.store import load_models, predict_saved

__all__ = [
    "BoosterAdapter", "DEFAULT_SAMPLING", "FeatureMatrix", "PerClassAdapter", "adapter_class", "booster_kinds",
    "create_adapter", "cross_validate", "default_params", "load_adapter", "load_models", "predict_saved",
]
