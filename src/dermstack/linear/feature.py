"""Linear-probe scores as the ``probe`` feature group of a booster: the group's name, the columns
beside each score and the pair probes' record (:mod:`dermstack.linear.nested` fits them)."""
from __future__ import annotations

#: the FeatureSet group a linear probe's scores become for the boosters that read them
GROUP = "probe"
#: the columns beside each score (:data:`dermstack.features.scores.RELATIONS`): within the patient
#: (z-score, rank, ratio to the mean) and the z-score within the site x age band x sex cohort
RELATIONS = ("pz", "prank", "pratio", "cz")
#: what the pair probes' folder records beside ``views.parquet``: the stems of the pair probes
NESTED_JSON = "nested.json"
