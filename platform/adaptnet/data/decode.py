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


def decode_rgb(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is an error, not a warning
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(f"data.dataset: {name} claims {img.width}×{img.height} pixels "
                                    f"(over the {MAX_PIXELS} decompression-bomb limit)")
                return img.convert("RGB")  # convert() decodes the whole image: truncation shows here
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"data.dataset: {name} cannot be decoded ({reason})") from None
