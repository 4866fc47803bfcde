"""CNNConfig: how a CNN is fine-tuned, with CPU and GPU defaults, built from a ``[[models]] kind = "cnn"``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from dermstack.config import ModelConfig
from dermstack.errors import ConfigError


@dataclass
class CNNConfig:
    """Fine-tuning settings. ``balance``: sampling weight of a row is (its class's count)^-balance,
    so 1 draws every class equally often and 0 keeps the data's frequencies. ``samples_per_epoch``
    caps the rows drawn per epoch (None: as many as training rows). ``freeze_fraction``: the first
    share of the backbone's parameter tensors (stem, early blocks) stays fixed."""

    backbone: str = "efficientnet_lite0"
    image_size: int = 64
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    samples_per_epoch: int | None = 2048
    balance: float = 0.5
    patience: int = 2
    freeze_fraction: float = 0.25
    pretrained: bool = True
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    tta: bool = True
    workers: int = 0
    stop_metric: str | None = None

    @classmethod
    def defaults(cls, device: str) -> "CNNConfig":
        """CPU: small images, few epochs, capped epochs; GPU: bigger images and every row each epoch."""
        if device == "cuda":
            return cls(image_size=192, epochs=12, lr=3e-4, samples_per_epoch=None, patience=3, freeze_fraction=0.0,
                       workers=4)
        return cls()

    @classmethod
    def from_model(cls, model: ModelConfig) -> "CNNConfig":
        """Defaults for the device, then ``backbone``/``epochs``/``image_size`` and ``params`` of the entry."""
        params = dict(model.params)
        device = resolve_device(str(params.get("device", "auto")))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"[[models]] {model.label!r}: unknown CNN param(s) {unknown}; known: {sorted(known)}")
        top = {"backbone": model.backbone, "epochs": model.epochs, "image_size": model.image_size}
        cfg = dataclasses.replace(cls.defaults(device), **{**{k: v for k, v in top.items() if v is not None}, **params})
        cfg.check(model.label)
        return cfg

    def check(self, where: str = "cnn") -> None:
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"{where}: precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if not 0 <= self.freeze_fraction < 1:
            raise ConfigError(f"{where}: freeze_fraction must be in [0, 1), got {self.freeze_fraction}")
        if self.epochs < 1 or self.image_size < 16 or self.batch_size < 1:
            raise ConfigError(f"{where}: epochs >= 1, image_size >= 16 and batch_size >= 1 are required")


def resolve_device(device: str) -> str:
    """``auto``: cuda, then mps, then cpu (the extract stage's rule), as a device type string."""
    from dermstack.extract.settings import resolve_device as extract_device

    return extract_device(device).type


def autocast_dtype(device: str, precision: str, training: bool) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto``: fp16/bf16 on GPU; on CPU fp32 for training
    (faster than bf16 there with channels_last) and bf16 for inference (about 1.5x faster)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and not training:
        return torch.bfloat16
    return None
