"""A frozen network made cheaper to run, computing the same function (:func:`frozen_network`, what
extraction runs; the original is left as it is: the CNN fine-tunes it):

- each BatchNorm that normalises a convolution's output is folded into that convolution's weights
  and bias (``torch.nn.utils.fusion``), so a forward pass makes one pass over each activation
  instead of two. Outputs change by float rounding only, which :func:`fold_batchnorm` checks;
- TensorFlow "same" padding (timm's ``Conv2dSame``, in the ``tf_`` EfficientNets and so in the
  offline Lite0-2 weights) pads by zeroing only the new border, where ``F.pad`` first fills the
  whole padded copy: the values are identical.

On 2 CPU cores EfficientNet-Lite0 at 224 px runs 1.2-1.6x faster folded and a further 1.03-1.2x
with the border padding (benchmarks/extract_throughput.py).

>>> import timm, torch
>>> net = timm.create_model("test_efficientnet", num_classes=0).eval()
>>> folded, n = fold_batchnorm(net, torch.randn(1, 3, 64, 64))
>>> n > 0 and torch.allclose(folded(torch.ones(1, 3, 64, 64)), net(torch.ones(1, 3, 64, 64)), atol=1e-4)
True
"""
from __future__ import annotations

import copy
import logging
import weakref
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

#: how close the folded network's outputs must be to the original's, relative to their largest value
TOLERANCE = 1e-4


def _after_norm(bn: nn.Module) -> nn.Module:
    """What a norm layer does after normalising: timm's BatchNormAct2d applies its ``drop`` and ``act``."""
    parts = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
             if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*parts) if len(parts) > 1 else parts[0] if parts else nn.Identity()


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """(conv, norm) module names where the norm layer's input is exactly that convolution's output in
    one forward pass of ``example``, and that pass's output. Only plain ``Conv2d`` / timm's
    ``Conv2dSame`` and plain ``BatchNorm2d`` / timm's ``BatchNormAct2d`` (normalise, drop, act) with
    running statistics are taken, and only modules registered once and called once."""
    from timm.layers import BatchNormAct2d, Conv2dSame

    names: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    calls: Counter[str] = Counter()
    made: dict[int, tuple[str, weakref.ref]] = {}  # id(output) -> (conv, the output while it lives)
    found: list[tuple[str, str]] = []

    def conv_hook(m, _inputs, out):
        calls[names[id(m)][0]] += 1
        made[id(out)] = (names[id(m)][0], weakref.ref(out))

    def norm_hook(m, inputs):
        calls[names[id(m)][0]] += 1
        conv = made.get(id(inputs[0]))
        if conv is not None and conv[1]() is inputs[0]:  # the same tensor, not a new one at a reused address
            found.append((conv[0], names[id(m)][0]))

    hooks = []
    for m in model.modules():
        if len(names[id(m)]) != 1:
            continue
        if type(m) in (nn.Conv2d, Conv2dSame):  # not subclasses that transform their weights (StdConv2d)
            hooks.append(m.register_forward_hook(conv_hook))
        elif type(m) in (nn.BatchNorm2d, BatchNormAct2d) and m.track_running_stats and m.running_mean is not None:
            hooks.append(m.register_forward_pre_hook(norm_hook))
    try:
        with torch.inference_mode():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    return [(c, n) for c, n in found if calls[c] == 1 and calls[n] == 1], out


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with every BatchNorm that reads a convolution's output (found by
    :func:`conv_bn_pairs` on ``example``, a float input batch) folded into it, and how many were folded.

    The copy's outputs on ``example`` are checked against the original's (relative to their largest
    value, :data:`TOLERANCE`, in float32); where they differ, as when a convolution's output is also
    read elsewhere, ``model`` itself is returned with 0. ``model`` is never changed."""
    if model.training:
        raise ValueError("fold_batchnorm folds a frozen network: call model.eval() first")
    pairs, want = conv_bn_pairs(model, example)
    if not pairs or not isinstance(want, torch.Tensor):
        return model, 0
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())

    def replace(name: str, new: nn.Module) -> None:
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else folded, attr, new)

    for conv, norm in pairs:
        replace(conv, fuse_conv_bn_eval(modules[conv], modules[norm]).requires_grad_(False))
        replace(norm, _after_norm(modules[norm]))
    with torch.inference_mode():
        got = folded(example).float()
    want = want.float()
    scale = float(want.abs().max()) or 1.0
    if want.shape != got.shape or float((want - got).abs().max()) > TOLERANCE * scale:
        log.warning("BatchNorm folding changed the outputs of %s: it runs unfolded", type(model).__name__)
        return model, 0
    return folded, len(pairs)


def pad_border(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """``F.pad(x, (left, right, top, bottom))`` with zeros, in ``x``'s memory format, writing each element once."""
    n, c, h, w = x.shape
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=x.device, memory_format=fmt)
    out[:, :, top:top + h, left:left + w] = x
    for border in (out[:, :, :top], out[:, :, top + h:], out[:, :, top:top + h, :left], out[:, :, top:top + h, left + w:]):
        if border.numel():
            border.zero_()
    return out


class BorderPadConv2d(nn.Conv2d):
    """timm's ``Conv2dSame`` (TensorFlow "same" padding for any input size), padding with :func:`pad_border`;
    it shares ``conv``'s weight and bias."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, conv.groups,
                         conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from timm.layers.padding import get_same_padding

        (kh, kw), (ih, iw) = self.kernel_size, x.shape[-2:]
        ph = get_same_padding(ih, kh, self.stride[0], self.dilation[0])
        pw = get_same_padding(iw, kw, self.stride[1], self.dilation[1])
        return self._conv_forward(pad_border(x, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), self.weight, self.bias)


def frozen_network(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """What extraction runs in place of the eval-mode ``model``: :func:`fold_batchnorm` on ``example``,
    then every ``Conv2dSame`` as a :class:`BorderPadConv2d`; and how many BatchNorm layers were folded.
    ``model`` is never changed (a copy is made where anything is replaced)."""
    from timm.layers import Conv2dSame

    net, folded = fold_batchnorm(model, example)
    same = [name for name, m in net.named_modules() if type(m) is Conv2dSame]
    if not same:
        return net, folded
    if net is model:
        net = copy.deepcopy(model)
    for name in same:
        parent, _, attr = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        setattr(owner, attr, BorderPadConv2d(getattr(owner, attr)))
    return net, folded
