"""Encoded images (JPEG/PNG bytes) → the normalised batch a checkpoint's network expects, with torchvision
transforms.v2: decode as the streaming loaders do (libjpeg-turbo, RGB), then the run's own evaluation transform
(`adaptnet.data.transforms.eval_transform`: ImageNet-style resize + centre crop); CIFAR-style runs, whose
evaluation transform has no resize, get a resize + centre crop to their side (a no-op at that size)."""
from __future__ import annotations

import re

import torch
from torchvision.transforms import v2

from . import DeployError


def decode(data: bytes, index: int = 0) -> torch.Tensor:
    """One encoded image → 3×H×W uint8 (the streaming loaders' decoder); a DeployError naming the row when it is
    not an image."""
    from ..data import DataError
    from ..data.decode import decode_tensor

    try:
        return decode_tensor(bytes(data), f"row {index}")
    except (DataError, TypeError) as err:
        reason = re.sub(r" <[^>]*>", "", str(err).split("(", 1)[-1].rstrip(")")) if str(err) else type(err).__name__
        raise DeployError(f"image: row {index} is not a decodable image ({reason})") from None


def transform(kind: str, augment, input_size: int, mean, std) -> v2.Compose:
    """The run's evaluation transform, then its normalisation as the loaders do it per batch (normalize_batch:
    the same arithmetic, so served inputs equal evaluated ones bit for bit)."""
    from ..data.transforms import eval_transform, normalize_batch

    steps = [eval_transform(kind, augment, list(mean), list(std)),
             v2.Lambda(lambda image: normalize_batch(image[None], list(mean), list(std))[0])]
    if kind == "cifar":
        steps = [v2.Resize(input_size, antialias=True), v2.CenterCrop(input_size), *steps]
    return v2.Compose(steps)


def batch(images: list[bytes], prepare: v2.Compose) -> torch.Tensor:
    if not len(images):
        raise DeployError("image: the request holds no images")
    return torch.stack([prepare(decode(data, i)) for i, data in enumerate(images)])
