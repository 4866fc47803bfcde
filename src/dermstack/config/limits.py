"""The upper limits of the settings that size an allocation or a loop, and the check before an
allocation whose size only the data decides.

A value above its limit is refused when the config is read (``[extract] image_size = 99999: at most
2048 ...``), as is the command-line option that sets the same thing (:func:`option`), before any
file is read or written. What depends on the data (a batch of images at the backbone's own input
size, the first layer of an MLP on the run's feature count) is checked by :func:`check_memory`
just before the allocation: a ConfigError naming the key and what it would need. The README's
"Limits" table lists :data:`LIMITS` (tests/test_bad_inputs.py checks that it matches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge
from pydantic import Strict

from dermstack.config.problems import fail
from dermstack.errors import ConfigError


@dataclass(frozen=True)
class Limit:
    """The largest value of a kind of setting, what it counts and the settings it bounds."""

    most: int
    counts: str
    keys: str


#: type name -> limit; each type below is an int between its own lower bound and ``most``
LIMITS: dict[str, Limit] = {
    "ImageSide": Limit(2048, "pixels a side",
                       "`[extract] image_size`, `[[models]] image_size` (cnn), `[data] image_size` (synthetic), `--image-size`"),
    "Batch": Limit(8192, "rows or images per batch", "`[extract] batch_size`, cnn and mlp `batch_size`, `--batch-size`"),
    "Hidden": Limit(8192, "units per hidden layer", "mlp `hidden`"),
    "Components": Limit(4096, "PCA components per backbone", "`[extract] pca_components`, `--pca-components`"),
    "Rounds": Limit(100_000, "boosting rounds", "booster `n_estimators`, `early_stopping_rounds` and the library's own "
                    "names for them (`num_iterations`, `num_boost_round`, `iterations`, `od_wait` ...)"),
    "Epochs": Limit(10_000, "epochs", "`[[models]] epochs`, cnn and mlp `epochs`, `--epochs`"),
    "Folds": Limit(100, "folds", "`[cv] n_splits`, the folds of a `[cv] folds` file, `inner_splits`, `--n-splits`"),
    "Threads": Limit(1024, "threads", "`threads`, `[extract] streams`, logistic `jobs`, `--threads`, `--streams`"),
    "Processes": Limit(256, "worker processes", "`[extract] workers`, `[features] workers`, cnn `workers`, `--workers`"),
    "Samples": Limit(10_000_000, "rows drawn per epoch", "cnn `samples_per_epoch`"),
    "Lesions": Limit(1_000_000, "synthetic lesions", "`[data] lesions`, `test_lesions`, `data synth --lesions`, `--test-lesions`"),
    "Resamples": Limit(100_000, "resamples", "`--n-boot` (report, compare), mlp `permutations`"),
    "Iterations": Limit(1_000_000, "solver iterations", "logistic `max_iter`"),
    "Grid": Limit(100, "values in a grid", "logistic `C`"),
    "Neighbours": Limit(10_000, "neighbours", "knn `n_neighbors`"),
}


@dataclass(frozen=True)
class AtMost:
    """The upper bound of a bounded type: a pydantic validator whose message names the limit, and
    metadata the configuration reference reads (``int ≥ 1, ≤ 100000``)."""

    limit: str

    @property
    def most(self) -> int:
        return LIMITS[self.limit].most

    def check(self, value: int) -> int:
        if value > self.most:
            raise fail(f"at most {self.most:,} {LIMITS[self.limit].counts} (docs: Limits)")
        return value

    def __get_pydantic_core_schema__(self, source, handler):
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.check, handler(source))


#: how `dermstack kinds` shows each bounded type (``Rounds`` -> ``int 1..100000``)
TYPE_TEXT: dict[str, str] = {}


def _bounded(type_name: str, limit: str, low: int):
    TYPE_TEXT[type_name] = f"int ≥ {low}, ≤ {LIMITS[limit].most}"
    return Annotated[int, Strict(), Ge(low), AtMost(limit)]


ImageSide = _bounded("ImageSide", "ImageSide", 8)
CNNImageSide = _bounded("CNNImageSide", "ImageSide", 16)
Batch = _bounded("Batch", "Batch", 1)
Hidden = _bounded("Hidden", "Hidden", 1)
Components = _bounded("Components", "Components", 1)
Rounds = _bounded("Rounds", "Rounds", 1)
Epochs = _bounded("Epochs", "Epochs", 1)
Folds = _bounded("Folds", "Folds", 2)
Threads = _bounded("Threads", "Threads", 1)
ThreadsOrAuto = _bounded("ThreadsOrAuto", "Threads", 0)
Processes = _bounded("Processes", "Processes", 0)
Samples = _bounded("Samples", "Samples", 1)
Lesions = _bounded("Lesions", "Lesions", 1)
SomeLesions = _bounded("SomeLesions", "Lesions", 0)
Resamples = _bounded("Resamples", "Resamples", 1)
Iterations = _bounded("Iterations", "Iterations", 1)
Neighbours = _bounded("Neighbours", "Neighbours", 1)


def most(name: str) -> int:
    """The largest value limit ``name`` allows."""
    return LIMITS[name].most


def option(name: str, low: int = 1):
    """The click type of a command-line option that sets what limit ``name`` bounds."""
    import click

    return click.IntRange(low, LIMITS[name].most)


# -- sizes only the data decides ----------------------------------------------------------------------
def free_memory(device: object = "cpu") -> int:
    """Bytes that an allocation on ``device`` may take now: the available RAM, or a GPU's free memory."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_memory(need: int, keys: str, what: str, device: object = "cpu") -> None:
    """A ConfigError naming ``keys`` when ``need`` bytes (``what`` needs them) exceed the free memory
    of ``device``: said before the allocation instead of a process the system kills."""
    free = free_memory(device)
    if need > free:
        raise ConfigError(f"{keys}: {what} would need at least {gib(need)}, more than the {gib(free)} free "
                          f"{'on ' + str(device) if str(device) != 'cpu' else 'in memory'} now: make it smaller")


#: measured peak activations of inference over the size of the float32 input batch: 8.5x (ViT-Tiny)
#: to 32x (EfficientNet-Lite0) at 224 px; the lower bound, so that only what cannot fit is refused
ACTIVATIONS_PER_INPUT = 8


def image_batch_bytes(batch: int, side: int, replicas: int = 1, training: bool = False) -> int:
    """The least memory ``replicas`` models each running a batch of ``batch`` square RGB images of
    ``side`` pixels take: the float32 inputs and their activations (kept for the backward pass, and
    about twice that again for gradients, when ``training``)."""
    per_image = 3 * side * side * 4 * (1 + ACTIVATIONS_PER_INPUT * (3 if training else 1))
    return replicas * batch * per_image
