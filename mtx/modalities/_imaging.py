"""Pixel helpers shared by the image-like modalities (image, infrared, xray, video)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DecodeError, MissingDependency

# Decompression-bomb cap: 1e8 pixels (a 10000x10000 image) is far above any real photo and far
# below what would exhaust memory. Pillow raises beyond 2x its own MAX_IMAGE_PIXELS.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2


def check_pixels(w: int, h: int, path: object = None) -> None:
    if w <= 0 or h <= 0:
        raise DecodeError(f"image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise DecodeError(f"image is {w}x{h} = {w * h:,} pixels, above the {MAX_PIXELS:,} cap "
                          "(decompression-bomb guard)")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic), then centre-crop ``size`` x ``size``.

    A no-op for an image that is already ``size`` x ``size`` (exact pixels, no resampling)."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def float_to_pixels(a: np.ndarray, size: int) -> np.ndarray:
    """[H, W] or [H, W, 3] float image in [0, 1] -> float32 [3, size, size] (resize + crop)."""
    a = np.asarray(a, dtype=np.float32)
    chans = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[-1])]
    out = []
    for c in chans:
        im = resize_center_crop(Image.fromarray(c, mode="F"), size)
        out.append(np.asarray(im, dtype=np.float32))
    arr = np.stack(out if len(out) == 3 else out * 3)
    return np.clip(arr, 0.0, 1.0)


def robust_minmax(a: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> tuple[np.ndarray, dict]:
    """Scale to [0, 1] by the lo-th and hi-th percentiles of the finite values (recorded)."""
    a = np.asarray(a, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        raise DecodeError("image has no finite values")
    p_lo, p_hi = np.percentile(finite, [lo, hi])
    if p_hi <= p_lo:
        p_lo, p_hi = float(finite.min()), float(finite.max())
    scale = (p_hi - p_lo) or 1.0
    out = np.clip((np.nan_to_num(a, nan=p_lo) - p_lo) / scale, 0.0, 1.0).astype(np.float32)
    return out, {"range_lo": float(p_lo), "range_hi": float(p_hi), "percentiles": [lo, hi]}


def read_tiff_page(path) -> tuple[np.ndarray, dict]:
    """The first page of a TIFF through tifffile (float, multi-sample, LZW+predictor...), with
    the pixel cap applied first. Returns ``(array, facts)``; corrupt files raise DecodeError."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - dependency
        raise MissingDependency("tifffile is needed for TIFF; pip install tifffile imagecodecs") from None
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            check_pixels(int(page.imagewidth), int(page.imagelength))
            a = page.asarray()
            facts = {"pages": len(tf.pages), "compression": str(getattr(page.compression, "name", "")),
                     "samples_per_pixel": int(page.samplesperpixel),
                     "planar_separate": page.planarconfig == 2}
    except DecodeError:
        raise
    except ValueError as e:
        if "imagecodecs" in str(e):
            raise MissingDependency(f"this TIFF needs imagecodecs: {e}; pip install imagecodecs") from None
        raise DecodeError(f"corrupt or unsupported TIFF: {e}") from None
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for corrupt files
        raise DecodeError(f"corrupt or unsupported TIFF: {e}") from None
    return a, facts
