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
from torch.utils.data import default_collate
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
    """A uint8 batch → float, scaled and normalised (on the batch's device); float batches are already. Either
    way in contiguous NCHW memory (the loaders stack images channels-last, `stack_images`)."""
    if images.dtype != torch.uint8:
        return images.contiguous()
    m, s = _scaled_stats(tuple(float(v) for v in mean), tuple(float(v) for v in std), images.device)
    return images.to(torch.float32, memory_format=torch.contiguous_format).sub_(m).div_(s)


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """C×H×W images → an N×C×H×W batch in channels-last memory: decoded and resized images lie in H×W×C memory,
    so this is one plain copy each (stacking them as N×C×H×W would transpose every pixel). In a DataLoader
    process default_collate puts the batch in shared memory."""
    return default_collate([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)


class RandomResizedCrop(v2.RandomResizedCrop):
    """v2.RandomResizedCrop, the same crops and pixels, whose crop of a CPU uint8 image is copied into
    H×W×C memory before the resize: torch's antialiased uint8 resize then reads and writes that layout
    without repacking (≈ 0.35 → 0.27 ms per ImageNet image here), and the image stays in the layout the decoder
    gives and `stack_images` copies fastest.

    With `flip_p`, also v2.RandomHorizontalFlip(flip_p): the coin is drawn after the crop, as that flip would
    draw it after this crop, and a crop to flip is flipped in that copy instead of in one of its own afterwards.
    A horizontal flip commutes with the resize: the pixels equal v2's crop-then-flip (bit for bit on all 1,000
    sample images, bilinear and bicubic), ≈ 0.04 ms less per image."""

    flip_p = 0.0

    def __init__(self, *args, flip_p: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.flip_p = flip_p

    def make_params(self, flat_inputs: list) -> dict:
        params = super().make_params(flat_inputs)
        params["flip"] = self.flip_p > 0 and bool(torch.rand(1) < self.flip_p)
        return params

    def transform(self, inpt, params):
        if not (isinstance(inpt, torch.Tensor) and inpt.dtype == torch.uint8 and inpt.device.type == "cpu"
                and inpt.ndim == 3):
            out = super().transform(inpt, {k: v for k, v in params.items() if k != "flip"})  # v2 passes all to its kernel
            return v2.functional.horizontal_flip(out) if params["flip"] else out
        crop = v2.functional.crop(inpt, params["top"], params["left"], params["height"], params["width"])
        if params["flip"]:  # flip's copy keeps the H×W×C layout: the copy below is then a no-op
            crop = crop.flip(-1)
        crop = crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        return v2.functional.resize(crop, self.size, interpolation=self.interpolation, antialias=self.antialias)


def train_transform(kind: str, augment, mean, std, image_size: int = 32) -> v2.Compose:
    interpolation = INTERPOLATION[augment.interpolation]
    if kind == "cifar":
        steps = [SameSize(image_size), v2.RandomCrop(image_size, padding=4), v2.RandomHorizontalFlip()]
    else:
        steps = [RandomResizedCrop(augment.train_crop, interpolation=interpolation, antialias=True, flip_p=0.5)]
    if augment.auto_augment == "randaugment":
        steps.append(v2.RandAugment(interpolation=interpolation))
    elif augment.auto_augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    if augment.random_erasing > 0:
        return v2.Compose(steps + _float(mean, std) + [v2.RandomErasing(p=augment.random_erasing, value=0)])
    return v2.Compose(steps)  # a plain uint8 tensor, as decoded (v2 treats it as the image)


def eval_transform(kind: str, augment, mean, std, image_size: int | None = None) -> v2.Compose:
    """`image_size`: the cifar transform's one image size, checked when given."""
    if kind == "cifar":
        return v2.Compose([SameSize(image_size)] if image_size else [v2.Identity()])
    interpolation = INTERPOLATION[augment.interpolation]
    return v2.Compose([v2.Resize(augment.eval_resize, interpolation=interpolation, antialias=True),
                       v2.CenterCrop(augment.eval_crop)])


def eval_size(kind: str, augment, image_size: int) -> int:
    """The side of the images the model sees at evaluation (and for its cost)."""
    return image_size if kind == "cifar" else augment.eval_crop
