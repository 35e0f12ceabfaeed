"""Encoded image bytes → RGB PIL image, with every failure one line naming the sample.

Pillow's decompression-bomb guard stays on: an image whose header claims more than `MAX_PIXELS` pixels is
refused before decoding (ImageNet's largest images are ≈ 10 MP; the default limit is ≈ 179 MP).
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from .errors import DataError

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 178_956_970


def _open(data: bytes, name: str, then):
    """Opens the image (header only), refuses bombs, and returns `then(image)`; any failure is one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error, not a warning
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{img.width}×{img.height}")
                return then(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"data.dataset: {name} claims more pixels than the {MAX_PIXELS} decompression-bomb limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data.dataset: {name} cannot be decoded ({reason})") from None


def decode_rgb(data: bytes, name: str) -> Image.Image:
    return _open(data, name, lambda img: img.convert("RGB"))  # convert() decodes it all: truncation shows here


def image_size(data: bytes, name: str) -> tuple[int, int]:
    return _open(data, name, lambda img: img.size)
