"""Linear probe: logistic regression on standardised full-dimensional embeddings plus table features.

The standard way frozen features are evaluated, and on a few hundred images often better than
boosters on a PCA of them. ``kind = "logistic"`` in ``[[models]]``; saved without pickle and applied
through the registry (:class:`~dermstack.linear.probe.SavedLinear`).
"""
from dermstack.linear.cv import cross_validate_linear
from dermstack.linear.probe import LinearParams, Probe, SavedLinear

__all__ = ["LinearParams", "Probe", "SavedLinear", "cross_validate_linear"]
