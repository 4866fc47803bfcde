"""The linear probe as a model kind of the registry (:mod:`dermstack.registry`), and its scores as
the ``probe`` feature group of the boosters (:mod:`dermstack.linear.nested`)."""
from __future__ import annotations

from pathlib import Path

from dermstack.features.scores import ScoreViews, fold_features, views_file
from dermstack.linear.cv import cross_validate_linear
from dermstack.linear.explain import explain_design_model
from dermstack.linear.feature import GROUP, RELATIONS
from dermstack.linear.nested import nested_probe_views
from dermstack.linear.probe import LinearParams, SavedLinear
from dermstack.registry import FeatureGroup, FitInputs, ModelKind, register

#: training rows up to which the default model set includes the linear probe (cheap and strong on few rows)
LINEAR_PROBE_MAX_ROWS = 12_000


def _cross_validate(inputs: FitInputs):
    return cross_validate_linear(inputs.features, inputs.store, inputs.task, inputs.plan, inputs.model, inputs.out_dir,
                                 executor=inputs.executor)


def _fit_views(inputs: FitInputs):
    return nested_probe_views(inputs.features, inputs.store, inputs.task, inputs.plan, inputs.model, inputs.out_dir)


def _fold_features(inputs: FitInputs, model_dir: Path):
    views = ScoreViews.read(views_file(model_dir), model_dir.name)
    return fold_features(inputs.features, inputs.table, inputs.task, views, GROUP, RELATIONS)


#: the pair probes' views as the boosters' ``probe`` features: only where ``[ensemble] score_features`` names
#: the probe. Not a default: it helped multiclass and multi-label runs on equal inputs but cost macro ROC-AUC on
#: HAM10000 7-class with mask features and pAUC on HAM10000 binary (docs/results.md, "The linear probe's nested score")
PROBE_GROUP = FeatureGroup(GROUP, _fit_views, lambda d: [views_file(d), views_file(d).parent], _fold_features)

register(ModelKind(
    "logistic", "logistic regression on the standardised full embeddings plus table features, C by inner grouped CV",
    LinearParams, _cross_validate, SavedLinear, explain_design_model, reads=("ingest", "folds", "features", "extract"),
    config_keys=("extract.backbones",), default=lambda profile: profile.n_train <= LINEAR_PROBE_MAX_ROWS,
    feature_group=PROBE_GROUP))
