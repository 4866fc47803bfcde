"""Image transforms of the CNN: decoded once to a square uint8 tensor, augmented per sample.

Images are cached at ``cache_size(image_size)`` (the eval centre crop keeps 87.5% of the side, as
timm's default ``crop_pct``); training draws a random resized crop from that square.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

CROP_PCT = 0.875


def cache_size(image_size: int) -> int:
    """Side of the square each image is decoded to before cropping."""
    return int(round(image_size / CROP_PCT))


def train_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """Random resized crop, flips, rotation and colour jitter on a uint8 (3, S, S) tensor."""
    return v2.Compose([
        v2.RandomRotation(180),
        v2.RandomResizedCrop(image_size, scale=(0.4, 1.0), ratio=(0.8, 1.25), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def eval_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """Centre crop (the same field of view as an average training crop), normalised."""
    return v2.Compose([
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])
