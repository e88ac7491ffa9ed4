"""Image loading by content (JPEG, PNG, WebP, HEIC, AVIF, GIF…), EXIF rotation, size limits,
high bit depth and transparency."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidImageError

_HEIF_REGISTERED = False
SUPPORTED = "JPEG, PNG, WebP, HEIC or AVIF"
BACKDROP_RGB = (128, 128, 128)  # behind a transparent background: neutral, not black


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
                # In place and without a needless convert: a big photo is not copied twice.
                ImageOps.exif_transpose(img, in_place=True)
                rgb = _to_rgb(img)
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
    return np.array(rgb, dtype=np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and float greyscale scaled (not clipped to white),
    CMYK and palettes converted, transparency laid over a neutral backdrop."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "I":  # 16-bit PNGs may open as 32-bit "I"
            top = 65535.0 if peak > 255 else 255.0
        else:  # float: scale by what is there
            top = max(peak, 1e-9)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*BACKDROP_RGB, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")
