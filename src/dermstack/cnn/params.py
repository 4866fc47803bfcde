"""CNNConfig: how a CNN is fine-tuned, with CPU and GPU defaults, built from a ``[[models]] kind = "cnn"``."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

from annotated_types import Ge, Interval, Lt
from pydantic import AllowInfNan, Strict

from dermstack.config import ModelConfig
from dermstack.config.limits import Batch, CNNImageSide, Epochs, Processes, Samples
from dermstack.config.problems import schema
from dermstack.config.types import Backbone, Bool, Device, Fraction, NonNegInt, Precision, Str

if TYPE_CHECKING:
    import torch


@schema("[[models]] params")
class CNNParams:
    """How a CNN is fine-tuned (``[[models]] kind = "cnn"`` params; ``dermstack.cnn.params.CNNConfig``
    adds the device defaults). ``balance``: sampling weight of a row is (its class's count)^-balance,
    so 1 draws every class equally often and 0 keeps the data's frequencies. ``samples_per_epoch``
    caps the rows drawn per epoch (None: as many as training rows). ``freeze_fraction``: the first
    share of the backbone's parameter tensors (stem, early blocks) stays fixed."""

    backbone: Backbone = "efficientnet_lite0"
    image_size: CNNImageSide = 64
    epochs: Epochs = 3
    batch_size: Batch = 64
    lr: Annotated[float, Strict(), AllowInfNan(False), Interval(gt=0)] = 1e-3
    weight_decay: Annotated[float, Strict(), AllowInfNan(False), Ge(0)] = 0.01
    warmup: Fraction = 0.1
    samples_per_epoch: Samples | None = 2048
    balance: Annotated[float, Strict(), AllowInfNan(False), Ge(0)] = 0.5
    patience: NonNegInt = 2
    freeze_fraction: Annotated[float, Strict(), Ge(0), Lt(1)] = 0.25
    pretrained: Bool = True
    weights: Str | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    tta: Bool = True
    workers: Processes = 0
    #: early-stopping metric (a metric of the task; default its primary metric)
    stop_metric: Str | None = None
    #: epochs of the pair CNNs behind the boosters' ``cnn`` feature ([ensemble] cnn_feature; they train a
    #: fixed schedule); None: ``epochs``
    pair_epochs: Epochs | None = None



@schema("[[models]] params")
class CNNConfig(CNNParams):
    """Fine-tuning settings: the ``[[models]] kind = "cnn"`` params schema (:class:`CNNParams`,
    validated there when the config is read) with defaults that depend on the device."""

    @classmethod
    def defaults(cls, device: str) -> CNNConfig:
        """CPU: small images, few epochs, capped epochs; GPU: bigger images and every row each epoch."""
        if device == "cuda":
            return cls(image_size=192, epochs=12, lr=3e-4, samples_per_epoch=None, patience=3, freeze_fraction=0.0,
                       workers=4)
        return cls()

    @classmethod
    def from_model(cls, model: ModelConfig) -> CNNConfig:
        """Defaults for the device, then ``backbone``/``epochs``/``image_size`` and ``params`` of the entry
        (a ModelConfig has checked its params against the schema when it was built)."""
        params = dict(model.params)
        device = resolve_device(str(params.get("device", "auto")))
        top = {"backbone": model.backbone, "epochs": model.epochs, "image_size": model.image_size}
        return dataclasses.replace(cls.defaults(device), **{**{k: v for k, v in top.items() if v is not None}, **params})


def resolve_device(device: str) -> str:
    """``auto``: cuda, then mps, then cpu (the extract stage's rule), as a device type string."""
    from dermstack.extract.settings import resolve_device as extract_device

    return extract_device(device).type


def autocast_dtype(device: str, precision: str, training: bool) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto``: fp16/bf16 on GPU, fp32 on CPU. bf16 autocast
    on a CPU without native bf16 is slow: scoring 300 HAM10000 images at 64 px with the tf_ (TF
    "same" padding) EfficientNet-Lite0 took 270 s in bf16 against 10 s in fp32 on this project's
    CPU, which made the demo's CNN stage about 10x slower; set precision = "bf16" where it pays."""
    if precision == "fp32":
        return None
    import torch  # here, so that checking a config does not import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None
