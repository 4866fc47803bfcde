"""Clinical operating metrics, the patient bootstrap and honest model comparison, per-class thresholds,
thresholds with a guaranteed sensitivity.

Pure functions on arrays (scores follow the conventions in docs/ARCHITECTURE.md: ``(n,)`` binary,
``(n, C)`` otherwise); the caller puts their results in ``metrics.json`` and the report.

Conventions shared by every function here:

* A lesion is *flagged* at threshold ``t`` when ``score >= t``. Tied scores cannot be separated by
  any threshold, so every operating point is a vertex of the ROC curve (one vertex per distinct
  score, no interpolation): a tie group is flagged whole or not at all.
* "Reaches sensitivity q" means ``TP / P >= q`` (likewise for specificity, computed as ``TN / N``)
  with a tolerance of 1e-12, so 19 of 20 reaches 0.95 despite floating point.
* A value that is undefined on the data (no positives for a sensitivity, no negatives for a
  specificity) is NaN, never an exception, so bootstrap resamples that lack a class just drop out.
* Bootstraps resample *patients* with replacement and keep all of a patient's lesions together
  (lesions of one patient are correlated, so resampling rows gives intervals that are too narrow).
  A resample is a count per patient; a lesion's weight is its patient's count.
"""

from dermstack.clinical.bootstrap import metric_bootstrap, metric_draws, operating_points, paired_bootstrap, patient_resamples
from dermstack.clinical.guarantee import guaranteed_rank, sensitivity_threshold
from dermstack.clinical.operating import (
    flagged_per_cancer,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    specificity_threshold,
    top_k_sensitivity,
)
from dermstack.clinical.thresholds import apply_thresholds, tune_thresholds

__all__ = ["apply_thresholds", "flagged_per_cancer", "guaranteed_rank", "metric_bootstrap", "metric_draws",
           "operating_points", "paired_bootstrap", "patient_resamples", "sensitivity_at_specificity",
           "sensitivity_threshold", "specificity_at_sensitivity", "specificity_threshold", "top_k_sensitivity",
           "tune_thresholds"]
