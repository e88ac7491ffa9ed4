"""Image loading by content (JPEG, PNG, WebP, HEIC), EXIF rotation, size limits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidImageError

_HEIF_REGISTERED = False
SUPPORTED = "JPEG, PNG, WebP or HEIC"


def _register_heif() -> None:
    global _HEIF_REGISTERED  # registering an opener is process-wide by design of Pillow
    if not _HEIF_REGISTERED:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _HEIF_REGISTERED = True


def load_rgb(path: Path, max_pixels: int) -> np.ndarray:
    """Decode a photo by its content (not its extension) to an upright RGB uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"image file not found: {path}")
    _register_heif()
    kind = "damaged"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise InvalidImageError(
                        f"{path.name} is {width}x{height} = {width * height / 1e6:.0f} MP, "
                        "over the "
                        f"{max_pixels / 1e6:.0f} MP limit; scale it down (a 2000 px side is plenty)"
                    )
                kind = img.format or "unknown"
                img.load()
                upright = ImageOps.exif_transpose(img)
                rgb = upright.convert("RGB")
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"{path.name} is not an image this program can read; give a {SUPPORTED} photo"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(
            f"{path.name} is too large to decode safely; scale it down below "
            f"{max_pixels / 1e6:.0f} MP"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(
            f"{path.name} looks like a {kind} image but cannot "
            f"be decoded ({exc}); the file may be truncated or damaged: export it again"
        ) from None
    return np.asarray(rgb, dtype=np.uint8).copy()
