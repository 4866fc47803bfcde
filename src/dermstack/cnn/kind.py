"""The fine-tuned CNN as a model kind of the registry (:mod:`dermstack.registry`), and its scores as
the ``cnn`` feature group of the boosters (:mod:`dermstack.cnn.nested`). Training and scoring import
torch and timm when they run, not when the kind is registered."""
from __future__ import annotations

from pathlib import Path

from dermstack.cnn.feature import GROUP, RELATIONS
from dermstack.cnn.params import CNNConfig, CNNParams
from dermstack.cnn.saved import SavedCNN
from dermstack.dataprofile import DataProfile, DefaultChoice
from dermstack.features.scores import ScoreViews, fold_features, views_file
from dermstack.registry import FeatureGroup, FitInputs, ModelKind, ScoreTerm, register


def _cross_validate(inputs: FitInputs):
    from dermstack.cnn.train import cross_validate_cnn

    return cross_validate_cnn(inputs.table, inputs.task, inputs.plan, inputs.model, inputs.out_dir, executor=inputs.executor)


def _fit_views(inputs: FitInputs):
    from dermstack.cnn.nested import nested_cnn_views

    return nested_cnn_views(inputs.table, inputs.task, inputs.plan, inputs.model, inputs.out_dir)


def _fold_features(inputs: FitInputs, model_dir: Path):
    views = ScoreViews.read(views_file(model_dir), model_dir.name)
    return fold_features(inputs.features, inputs.table, inputs.task, views, GROUP, RELATIONS)


#: training rows from which image-only data gets the CNN in its default model set: on 2,479 HAM10000 dev
#: images (lite0 embeddings only) it lifted the default run's final model by +0.016 ROC-AUC and +0.008
#: pAUC, paired (docs/results.md); fewer rows were not measured, and a CNN fine-tuned on a few hundred is fragile
CNN_MIN_ROWS = 2_000
#: the most extra seconds the default set may be expected to spend on the CNN and its pair CNNs, per device
#: (on this project's 2-core CPU: image-only data up to about 60,000 training rows)
CNN_BUDGET_S = {"cpu": 1_800, "mps": 1_800, "cuda": 3_600}
#: (training draws, scoring passes) per second at the device's default CNN settings (CNNConfig.defaults).
#: cpu: measured on this project's 2-core CPU, efficientnet_lite0 at 64 px on HAM10000 dev (30,720 draws
#: in 132.8 s, 14,874 scoring passes with the bank's decoding in 24 s; docs/results.md); cuda and mps:
#: assumed for lite0 at 192 px on one GPU, not measured here
THROUGHPUT = {"cpu": (230.0, 600.0), "mps": (230.0, 600.0), "cuda": (1_500.0, 4_500.0)}


def expected_seconds(data: DataProfile, cfg: CNNConfig) -> float:
    """Seconds the CNN (one seed, every fold) and its pair CNNs ([ensemble] cnn_feature) are expected to
    take with ``cfg`` on ``data``: each fit's drawn training images, each fold's validation rows scored
    every epoch, each pair CNN's two folds and every fit's test rows scored (twice with flip TTA)."""
    k, n = data.n_splits, data.n_train
    pairs, pair_epochs = k * (k - 1) // 2, cfg.pair_epochs or cfg.epochs
    draws = cfg.epochs * k * (cfg.samples_per_epoch or n * (k - 1) / k)
    draws += pair_epochs * pairs * (cfg.samples_per_epoch or n * (k - 2) / k)
    scored = (2 if cfg.tta else 1) * (cfg.epochs * n + (k - 1) * n + (k + pairs) * data.n_test)
    train_rate, score_rate = THROUGHPUT.get(data.device, THROUGHPUT["cpu"])
    return draws / train_rate + scored / score_rate


def cnn_default(data: DataProfile) -> DefaultChoice:
    """Whether the default model set fine-tunes a CNN (and, with ``[ensemble] cnn_feature``, trains every
    booster again on its nested score): image-only data (no metadata or mask features, where the CNN is
    the lever), at least :data:`CNN_MIN_ROWS` training rows, and an expected time within the device's
    :data:`CNN_BUDGET_S`.

    >>> bool(cnn_default(DataProfile(10_291, images=True, device="cpu")))
    True
    >>> cnn_default(DataProfile(2_479, images=True, table_features=3)).why.split(":")[0]
    'not in the default set'
    """
    if not data.images:
        return DefaultChoice(False)
    seconds = expected_seconds(data, CNNConfig.defaults(data.device))
    cost = f"about {seconds:,.0f} s more on {data.device} ({data.n_train:,} rows, the CNN and its pair CNNs)"
    ask = 'add [[models]] kind = "cnn" (and the boosters) to fine-tune one'
    if not data.image_only:
        return DefaultChoice(False, f"not in the default set: {data.table_features} table features beside the images "
                                    f"are the boosters' data; {ask}, {cost}")
    if data.n_train < CNN_MIN_ROWS:
        return DefaultChoice(False, f"not in the default set: image-only data, but {data.n_train:,} training rows "
                                    f"(under {CNN_MIN_ROWS:,}); {ask}, {cost}")
    budget = CNN_BUDGET_S.get(data.device, CNN_BUDGET_S["cpu"])
    if seconds > budget:
        return DefaultChoice(False, f"not in the default set: image-only data, but {cost}, over the {budget:,} s the "
                                    f"default spends on {data.device}; {ask}")
    return DefaultChoice(True, f"in the default set: image-only data with {data.n_train:,} training rows "
                               f"(>= {CNN_MIN_ROWS:,}), {cost}; the boosters also train on its nested score")


#: the pair CNNs' views as the boosters' ``cnn`` features
CNN_GROUP = FeatureGroup(GROUP, _fit_views, lambda d: [views_file(d), views_file(d).parent], _fold_features,
                         default=lambda kind, n_train: True)
#: one CNN epoch at 32 px on a few draws (smoke runs and tests)
SMOKE = {"epochs": 1, "image_size": 32, "params": {"samples_per_epoch": 32, "batch_size": 16}}

register(ModelKind(
    "cnn", "a timm backbone fine-tuned on the images (explained as one term, its score)", CNNParams, _cross_validate,
    SavedCNN, ScoreTerm("image (CNN)", GROUP), reads=("ingest", "folds"), model_keys=("backbone", "epochs", "image_size"),
    feature_group=CNN_GROUP, default=cnn_default, smoke=SMOKE))
