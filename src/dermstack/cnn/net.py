"""The network of a fine-tuned CNN: the backbone it starts from (:class:`NetTemplate`), which of its
parameters train, and its files (safetensors: tensors only, never a pickled object)."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dermstack.atomic import atomic_path
from dermstack.cnn.params import CNNConfig
from dermstack.errors import reading


@dataclass
class NetTemplate:
    """The backbone a CNN starts from: timm architecture, its preprocessing and where its weights came from."""

    net: nn.Module
    arch: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: dict

    def new(self, n_outputs: int, seed: int) -> nn.Module:
        """A fresh trainable copy with a newly initialised ``n_outputs`` head."""
        net = copy.deepcopy(self.net)
        torch.manual_seed(seed)
        net.reset_classifier(n_outputs)
        return net.requires_grad_(True).train()


def net_template(cfg: CNNConfig) -> NetTemplate:
    """Backbone with offline-resolved weights (extract's ``create_backbone``) or random ones (``pretrained=false``)."""
    import timm  # here, not at the top: a run without a CNN registers this kind and never pays timm's import

    from dermstack.extract.registry import create_backbone

    if cfg.pretrained:
        bb = create_backbone(cfg.backbone, cfg.weights, cfg.image_size)
        return NetTemplate(bb.model, bb.timm_name, tuple(bb.data_config["mean"]), tuple(bb.data_config["std"]), asdict(bb.weights))
    with torch.random.fork_rng():  # seeded, so that two runs of one config start from the same weights
        torch.manual_seed(0)
        net = timm.create_model(cfg.backbone, pretrained=False, num_classes=0)
    data = timm.data.resolve_model_data_config(net)
    return NetTemplate(net, cfg.backbone, tuple(data["mean"]), tuple(data["std"]), {"source": "random"})


def freeze_early(net: nn.Module, fraction: float) -> None:
    """Fix the first ``fraction`` of the backbone's parameter tensors (the head always trains)."""
    head = {id(p) for p in net.get_classifier().parameters()}
    body = [p for p in net.parameters() if id(p) not in head]
    for p in body[: int(len(body) * fraction)]:
        p.requires_grad_(False)


def save_net(net: nn.Module, path: Path) -> Path:
    """Tensors only (safetensors): no pickled object ever."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path


def load_net(arch: str, n_outputs: int, path: Path) -> nn.Module:
    import timm

    net = timm.create_model(arch, pretrained=False, num_classes=n_outputs)
    with reading(path, "CNN checkpoint"):
        net.load_state_dict(load_file(str(path)))
    return net.eval()
