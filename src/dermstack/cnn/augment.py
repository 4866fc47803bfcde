"""Image augmentation of the CNN, on whole batches (one ``grid_sample`` per batch, on the model's device).

Images are cached as square uint8 tensors of side ``cache_size(image_size)`` (the evaluation centre
crop keeps 87.5% of the side, timm's default ``crop_pct``). Training draws, per image, a random
resized crop (area 40-100%, aspect 0.8-1.25) at a random rotation with random horizontal/vertical
flips (reflection padding, no black corners), then brightness/contrast/saturation jitter. Per-sample
torchvision transforms cost ~12 ms an image on CPU; this costs well under 0.1 ms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CROP_PCT = 0.875
GRAY = torch.tensor([0.299, 0.587, 0.114])


def cache_size(image_size: int) -> int:
    """Side of the square each image is decoded to before cropping."""
    return int(round(image_size / CROP_PCT))


@dataclass
class Augment:
    """Random crop/rotation/flip/colour jitter of a uint8 batch, then normalisation; ``train=False``:
    the centre crop only."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: tuple[float, float] = (0.4, 1.0)
    ratio: tuple[float, float] = (0.8, 1.25)
    jitter: float = 0.2

    def __call__(self, x: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float().div_(255)
        if train:
            x = self._geometry(x, generator)
            x = self._colour(x, generator)
        else:
            off = (x.shape[-1] - self.image_size) // 2
            x = x[:, :, off:off + self.image_size, off:off + self.image_size]
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    def _rand(self, n: int, lo: float, hi: float, g, device) -> torch.Tensor:
        return (torch.rand(n, generator=g) * (hi - lo) + lo).to(device)

    def _geometry(self, x: torch.Tensor, g) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        area = self._rand(n, *self.scale, g, dev)
        log_r = self._rand(n, math.log(self.ratio[0]), math.log(self.ratio[1]), g, dev)
        sx, sy = (area * log_r.exp()).sqrt().clamp(max=1), (area / log_r.exp()).sqrt().clamp(max=1)
        cx = (torch.rand(n, generator=g).to(dev) * 2 - 1) * (1 - sx)
        cy = (torch.rand(n, generator=g).to(dev) * 2 - 1) * (1 - sy)
        theta = self._rand(n, -math.pi, math.pi, g, dev)
        fx = torch.where(torch.rand(n, generator=g).to(dev) < 0.5, -1.0, 1.0)
        fy = torch.where(torch.rand(n, generator=g).to(dev) < 0.5, -1.0, 1.0)
        cos, sin = theta.cos(), theta.sin()
        mat = torch.stack([
            torch.stack([sx * cos * fx, -sy * sin * fy, cx], dim=1),
            torch.stack([sx * sin * fx, sy * cos * fy, cy], dim=1),
        ], dim=1)
        grid = F.affine_grid(mat, [n, 3, self.image_size, self.image_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _colour(self, x: torch.Tensor, g) -> torch.Tensor:
        n, dev, j = x.shape[0], x.device, self.jitter
        b, c, s = (self._rand(n, 1 - j, 1 + j, g, dev).view(n, 1, 1, 1) for _ in range(3))
        w = GRAY.to(dev).view(1, 3, 1, 1)
        x = x * b
        m = (x * w).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = (x - m) * c + m
        gray = (x * w).sum(1, keepdim=True)
        return ((x - gray) * s + gray).clamp_(0, 1)
