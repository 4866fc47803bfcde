"""The ``[[models]] params`` of ``kind = "mlp"``, apart from the network so that checking a config
(and registering the kind) does not import torch."""
from __future__ import annotations

import dataclasses
from typing import Annotated

from annotated_types import Ge, Gt, Lt, MaxLen, MinLen
from pydantic import Strict

from dermstack.config.limits import Batch, Epochs, Folds, Hidden, Resamples, Threads
from dermstack.config.problems import schema
from dermstack.config.types import NonNegInt, one_of


@schema("[[models]] params", frozen=True)
class MLPParams:
    """``hidden``: units of each hidden layer (one or two); ``class_weight``: balanced (each class's
    rows weigh as much in the loss) or none; ``start``: ``probe`` (the network is the linear probe
    plus a hidden-layer residual that starts at zero, see :func:`~dermstack.mlp.net.fit_mlp`) or ``random`` (a plain
    MLP from a random start); ``patience``: epochs without a better inner-validation loss before
    stopping; ``permutations``: sampled orderings per row for the contributions."""

    hidden: Annotated[list[Hidden], MinLen(1), MaxLen(2)] = (256,)
    dropout: Annotated[float, Strict(), Ge(0), Lt(1)] = 0.3
    lr: Annotated[float, Strict(), Gt(0)] = 1e-3
    weight_decay: Annotated[float, Strict(), Ge(0)] = 1e-4
    epochs: Epochs = 100
    batch_size: Batch = 128
    patience: NonNegInt = 8
    class_weight: one_of("class_weight", ("none", "balanced")) = "balanced"
    start: one_of("start", ("probe", "random")) = "probe"
    inner_splits: Folds = 5
    permutations: Resamples = 16
    threads: Threads = 1

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}
