"""The fine-tuned CNN as a model kind of the registry (:mod:`dermstack.registry`), and its scores as
the ``cnn`` feature group of the boosters (:mod:`dermstack.cnn.nested`)."""
from __future__ import annotations

from pathlib import Path

from dermstack.cnn.feature import GROUP, RELATIONS
from dermstack.cnn.nested import nested_cnn_views
from dermstack.cnn.params import CNNParams
from dermstack.cnn.train import SavedCNN, cross_validate_cnn
from dermstack.features.scores import ScoreViews, fold_features, views_file
from dermstack.registry import FeatureGroup, FitInputs, ModelKind, ScoreTerm, register


def _cross_validate(inputs: FitInputs):
    return cross_validate_cnn(inputs.table, inputs.task, inputs.plan, inputs.model, inputs.out_dir, executor=inputs.executor)


def _fit_views(inputs: FitInputs):
    return nested_cnn_views(inputs.table, inputs.task, inputs.plan, inputs.model, inputs.out_dir)


def _fold_features(inputs: FitInputs, model_dir: Path):
    views = ScoreViews.read(views_file(model_dir), model_dir.name)
    return fold_features(inputs.features, inputs.table, inputs.task, views, GROUP, RELATIONS)


#: the pair CNNs' views as the boosters' ``cnn`` features
CNN_GROUP = FeatureGroup(GROUP, _fit_views, lambda d: [views_file(d), views_file(d).parent], _fold_features,
                         default=lambda kind, n_train: True)
#: one CNN epoch at 32 px on a few draws (smoke runs and tests)
SMOKE = {"epochs": 1, "image_size": 32, "params": {"samples_per_epoch": 32, "batch_size": 16}}

register(ModelKind(
    "cnn", "a timm backbone fine-tuned on the images (explained as one term, its score)", CNNParams, _cross_validate,
    SavedCNN, ScoreTerm("image (CNN)", GROUP), reads=("ingest", "folds"), model_keys=("backbone", "epochs", "image_size"),
    feature_group=CNN_GROUP, smoke=SMOKE))
