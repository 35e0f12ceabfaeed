"""Per-image transforms of the streaming loaders, from torchvision `transforms.v2`, as the reference code:

  imagenet  train RandomResizedCrop(train_crop) + horizontal flip [+ RandAugment / TrivialAugmentWide]
            [+ RandomErasing]; eval Resize(eval_resize) + CenterCrop(eval_crop) (MSDNet/IMTA and ADN: 224 /
            256 → 224; ADN v2: 176 / 232 → 224); interpolation bilinear or bicubic per recipe
  cifar     train RandomCrop(32, padding 4) + horizontal flip; eval nothing (IMTA brief §5.1)

Decode processes hand over uint8 images (4× less to copy than float32); `normalize_batch` then scales and
normalises the whole batch on the device, as ToDtype(float32, scale) + Normalize would per image. With
RandomErasing, which erases to 0 after normalisation, the images are normalised per image instead.
(The in-memory CIFAR path crops whole uint8 batches at once with its own generator, see loader.py, which v2
cannot do per sample; the result is the same transform.)
"""
from __future__ import annotations

import functools

import torch
from torchvision.transforms import InterpolationMode, v2

from .errors import DataError

INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


class SameSize:
    """The cifar transform keeps each image's size, so an image of another size would reach the model:
    it is a bad image instead (skipped and counted, or fatal with data.bad_images: fail)."""

    def __init__(self, side: int):
        self.side = side

    def __call__(self, image):
        h, w = v2.functional.get_size(image)
        if (h, w) != (self.side, self.side):
            raise DataError(f"{w}×{h} pixels in a set of {self.side}×{self.side} images (the cifar transform keeps "
                            "sizes; data.transform: imagenet resizes)")
        return image


def _float(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


@functools.lru_cache(maxsize=16)
def _scaled_stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean·255 and std·255 as (1, C, 1, 1) tensors on `device`, made once per device (no host-to-device copy
    per batch)."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255,
            torch.tensor(std, device=device).view(1, -1, 1, 1) * 255)


def normalize_batch(images: torch.Tensor, mean, std) -> torch.Tensor:
    """A uint8 batch → float, scaled and normalised (on the batch's device); float batches are already."""
    if images.dtype != torch.uint8:
        return images
    m, s = _scaled_stats(tuple(float(v) for v in mean), tuple(float(v) for v in std), images.device)
    return (images.float() - m) / s


def train_transform(kind: str, augment, mean, std, image_size: int = 32) -> v2.Compose:
    interpolation = INTERPOLATION[augment.interpolation]
    if kind == "cifar":
        steps = [SameSize(image_size), v2.RandomCrop(image_size, padding=4), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.RandomResizedCrop(augment.train_crop, interpolation=interpolation, antialias=True),
                 v2.RandomHorizontalFlip()]
    if augment.auto_augment == "randaugment":
        steps.append(v2.RandAugment(interpolation=interpolation))
    elif augment.auto_augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    if augment.random_erasing > 0:
        return v2.Compose(steps + _float(mean, std) + [v2.RandomErasing(p=augment.random_erasing, value=0)])
    return v2.Compose(steps + [v2.ToImage()])


def eval_transform(kind: str, augment, mean, std, image_size: int | None = None) -> v2.Compose:
    """`image_size`: the cifar transform's one image size, checked when given."""
    if kind == "cifar":
        return v2.Compose(([SameSize(image_size)] if image_size else []) + [v2.ToImage()])
    interpolation = INTERPOLATION[augment.interpolation]
    return v2.Compose([v2.Resize(augment.eval_resize, interpolation=interpolation, antialias=True),
                       v2.CenterCrop(augment.eval_crop), v2.ToImage()])


def eval_size(kind: str, augment, image_size: int) -> int:
    """The side of the images the model sees at evaluation (and for its cost)."""
    return image_size if kind == "cifar" else augment.eval_crop
