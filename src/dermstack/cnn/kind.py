"""The fine-tuned CNN as a model kind of the registry (:mod:`dermstack.registry`)."""
from __future__ import annotations

from dermstack.ensembles.cnn import SavedCNN, cross_validate_cnn
from dermstack.ensembles.cnnconfig import CNNParams
from dermstack.registry import FitInputs, ModelKind, register


def _cross_validate(inputs: FitInputs):
    return cross_validate_cnn(inputs.table, inputs.task, inputs.plan, inputs.model, inputs.out_dir, executor=inputs.executor)


register(ModelKind(
    "cnn", "a timm backbone fine-tuned on the images (explained as one term, its score)", CNNParams, _cross_validate,
    SavedCNN, None, reads=("ingest", "folds"), model_keys=("backbone", "epochs", "image_size"), gives_cnn_feature=True))
