"""The linear probe as a model kind of the registry (:mod:`dermstack.registry`)."""
from __future__ import annotations

from dermstack.linear.cv import cross_validate_linear
from dermstack.linear.explain import explain_design_model
from dermstack.linear.probe import LinearParams, SavedLinear
from dermstack.registry import FitInputs, ModelKind, register

#: training rows up to which the default model set includes the linear probe (cheap and strong on few rows)
LINEAR_PROBE_MAX_ROWS = 12_000


def _cross_validate(inputs: FitInputs):
    return cross_validate_linear(inputs.features, inputs.store, inputs.task, inputs.plan, inputs.model, inputs.out_dir,
                                 executor=inputs.executor)


register(ModelKind(
    "logistic", "logistic regression on the standardised full embeddings plus table features, C by inner grouped CV",
    LinearParams, _cross_validate, SavedLinear, explain_design_model, reads=("ingest", "folds", "features", "extract"),
    config_keys=("extract.backbones",), default=lambda profile: profile.n_train <= LINEAR_PROBE_MAX_ROWS))
