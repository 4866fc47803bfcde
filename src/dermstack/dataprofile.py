"""What the default model set is chosen from (:attr:`dermstack.registry.ModelKind.default`): the run's
data as a :class:`DataProfile` (made after ingest by :func:`dermstack.features.build.data_profile`), and a
kind's answer with its rule, a :class:`DefaultChoice`. At the bottom of the import graph, as the registry."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataProfile:
    """What a kind's :attr:`ModelKind.default` decides from: the run's data as the default model set sees
    it after ingest (:func:`dermstack.config.default_models`).

    >>> DataProfile(10_291, images=True, table_features=0, device="cuda").image_only
    True
    >>> DataProfile(2_479, images=True, table_features=3).image_only
    False
    """

    #: training rows
    n_train: int
    #: every training row has an image (a kind that reads pixels can train on them)
    images: bool = False
    #: table columns the features stage gives the boosters beside the images: the dataset's metadata
    #: columns it reads, plus one for the mask features (:func:`dermstack.features.build.table_feature_count`)
    table_features: int = 0
    #: where image models train: "cuda", "mps" or "cpu" (the ``auto`` device of this machine)
    device: str = "cpu"
    #: test rows (every fit scores them) and the folds of the run's FoldPlan
    n_test: int = 0
    n_splits: int = 5
    #: the task kind ("binary", "multiclass", "multilabel"; None: not known, e.g. a row count alone)
    task: str | None = None
    #: the run embeds its images (``[extract] backbones``): kinds that read embeddings can train
    embeddings: bool = False

    @property
    def image_only(self) -> bool:
        """Images and nothing else: no metadata, no mask features (what the CNN is the lever on)."""
        return self.images and self.table_features == 0


@dataclass(frozen=True)
class DefaultChoice:
    """A kind's answer to :attr:`ModelKind.default` with the rule that gave it (logged when the run
    resolves its default model set); true when the kind is in the set."""

    include: bool
    #: the rule that fired and what it costs, e.g. "image-only data, 10,291 rows on cuda: about 1,200 s more"
    why: str = ""

    def __bool__(self) -> bool:
        return self.include
