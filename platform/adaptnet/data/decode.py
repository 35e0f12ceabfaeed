"""Encoded image bytes → a 3×H×W uint8 RGB tensor, with every failure one line naming the sample.

JPEGs are decoded by libjpeg-turbo through `torchvision.io.decode_jpeg` (≈ 1.25× PIL's decode + convert here,
bit-identical pixels, greyscale and CMYK included); anything else (PNG files named .JPEG exist in ImageNet)
and JPEGs it refuses go through PIL, whose errors name the cause (a truncated file, say). Both paths refuse an
image whose header claims more than `MAX_PIXELS` pixels before decoding it (ImageNet's largest images are
≈ 10 MP; the default limit is Pillow's, ≈ 179 MP). torchvision 0.29 marks its image codecs deprecated in
favour of TorchCodec; they are the pinned, tested decoder here, so that warning is silenced where they run.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from .errors import DataError

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 178_956_970
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment; None when `data` is not a JPEG this can parse."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _SOF:
            return int.from_bytes(data[at + 7:at + 9], "big"), int.from_bytes(data[at + 5:at + 7], "big")
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None


def _bomb(name: str) -> DataError:
    return DataError(f"data.dataset: {name} claims more pixels than the {MAX_PIXELS} decompression-bomb limit")


def _open(data: bytes, name: str, then):
    """Opens the image with PIL (header only), refuses bombs, and returns `then(image)`; any failure is one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error, not a warning
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{img.width}×{img.height}")
                return then(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(name) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data.dataset: {name} cannot be decoded ({reason})") from None


def decode_rgb(data: bytes, name: str) -> Image.Image:
    """The PIL decode (the in-memory cache's, and the fallback of `decode_tensor`)."""
    return _open(data, name, lambda img: img.convert("RGB"))  # convert() decodes it all: truncation shows here


def decode_tensor(data: bytes, name: str) -> torch.Tensor:
    """3×H×W uint8 RGB: libjpeg-turbo for JPEGs, PIL for the rest (see the module docstring)."""
    if encoded_jpeg(data, name):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torchvision's codecs → TorchCodec notice
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # PIL decodes it or names why not
    return torch.from_numpy(np.array(decode_rgb(data, name))).permute(2, 0, 1).contiguous()


def image_size(data: bytes, name: str) -> tuple[int, int]:
    return _open(data, name, lambda img: img.size)


def encoded_jpeg(data: bytes, name: str) -> bool:
    """True for a JPEG that may be decoded later (its size checked against the bomb limit now)."""
    size = jpeg_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise _bomb(name)
    return size is not None


def decode_jpegs(jpegs: list[torch.Tensor], names: list[str], device: torch.device) -> list:
    """Encoded JPEGs (uint8 tensors) → 3×H×W uint8 RGB tensors on `device`, in one batched call (nvjpeg on
    CUDA); if that call fails, image by image, a failure becoming its DataError in the list."""
    if not jpegs:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision's codecs → TorchCodec notice
        try:
            return list(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        out = []
        for data, name in zip(jpegs, names):
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:  # PIL decodes it (on the host) or names why not
                try:
                    out.append(decode_tensor(data.numpy().tobytes(), name).to(device))
                except DataError as err:
                    out.append(err)
        return out
