"""Encoded images (JPEG/PNG bytes) → the normalised batch a checkpoint's network expects, with torchvision
transforms.v2: decode as the dataset cache does (PIL, RGB), resize the short side and centre-crop to the
input size (a no-op for images already that size), scale to [0, 1], normalise with the run's mean/std."""
from __future__ import annotations

import io
import re

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from . import DeployError


def decode(data: bytes, index: int = 0) -> torch.Tensor:
    """One encoded image → 3×H×W uint8; a DeployError naming the row when it is not an image."""
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            return v2.functional.pil_to_tensor(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, TypeError) as err:
        reason = re.sub(r" <[^>]*>", "", str(err).splitlines()[0]) if str(err) else type(err).__name__
        raise DeployError(f"image: row {index} is not a decodable image ({reason})") from None


def transform(input_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    return v2.Compose([v2.Resize(input_size, antialias=True), v2.CenterCrop(input_size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def batch(images: list[bytes], input_size: int, mean, std) -> torch.Tensor:
    if not len(images):
        raise DeployError("image: the request holds no images")
    prepare = transform(input_size, mean, std)
    return torch.stack([prepare(decode(data, i)) for i, data in enumerate(images)])
