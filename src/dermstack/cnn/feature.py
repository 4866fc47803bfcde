"""CNN scores as the ``cnn`` feature group of a booster: the group's name and columns. The pair CNNs'
views (:func:`dermstack.cnn.nested.nested_cnn_views`) become columns through the shared nested-score
code (:mod:`dermstack.features.scores`), as the linear probe's do."""
from __future__ import annotations

#: the FeatureSet group a CNN's scores become for the boosters that read them
GROUP = "cnn"
#: the columns beside each score (:data:`dermstack.features.scores.RELATIONS`): its z-score and rank
#: within the patient, as measured when the CNN feature was added (the probe's ratio and cohort
#: z-score were not measured on the CNN's scores)
RELATIONS = ("pz", "prank")
