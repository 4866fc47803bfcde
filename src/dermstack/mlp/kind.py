"""``kind = "mlp"``: the small MLP of :mod:`dermstack.mlp.net` as a model kind of the registry,
cross-validated like the linear probe on each fold's Design of full embeddings and table features.
The network (torch) is imported when a fold is fitted or a saved one read, not to register the kind."""
from __future__ import annotations

from typing import TYPE_CHECKING

from dermstack.linear.cv import cross_validate_design
from dermstack.linear.explain import explain_design_model
from dermstack.linear.probe import SavedLinear
from dermstack.mlp.params import MLPParams
from dermstack.registry import FitInputs, ModelKind, register

if TYPE_CHECKING:
    from dermstack.mlp.net import FittedMLP

KIND = "mlp"


def _cross_validate(inputs: FitInputs):
    from dermstack.mlp.net import fit_mlp

    m = inputs.model
    params = MLPParams(**m.params)
    return cross_validate_design(inputs.features, inputs.store, inputs.task, inputs.plan, m, KIND, params, fit_mlp,
                                 inputs.out_dir, executor=inputs.executor)


class SavedMLP(SavedLinear):
    """An ``mlp`` model folder: the networks of every fold and seed, averaged (inputs as the linear probe's).
    It gives no feature group (no pair networks are fitted)."""

    feature_group = None

    def probes(self) -> list[FittedMLP]:
        from dermstack.mlp.net import FittedMLP

        return [FittedMLP.load(self.dir / e["stem"], self.spec["task"]) for e in self.spec["models"]]


register(ModelKind(
    KIND, "an MLP on the standardised full embeddings plus table features: the linear probe plus a residual of one "
    "or two hidden layers (dropout) starting at zero, class-weighted, its epochs chosen on an inner grouped split",
    MLPParams, _cross_validate, SavedMLP, explain_design_model, reads=("ingest", "folds", "features", "extract"),
    config_keys=("extract.backbones",), smoke={"params": {"hidden": [8], "epochs": 5, "inner_splits": 2}}))
