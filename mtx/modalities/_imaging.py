"""Pixel helpers shared by the image-like modalities (image, infrared, xray, video).

Memory (docs/reliability.md, "Bounded memory"): a picture's decoded size is known from its
header before it is decoded. :func:`decode_within_budget` refuses one whose decoded pixels alone
are over the per-sample budget (a JPEG is first decoded at 1/2..1/8 scale, which its DCT allows);
:func:`reduce_within_budget` / :func:`reduce_array` box-reduce a decoded picture by an integer
factor (never below the output size) when the preprocessing copies made at full size would be
over the budget. Both record what they did.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..errors import DecodeError, MissingDependency
from . import _budget

# Decompression-bomb cap: 1e8 pixels (a 10000x10000 image) is far above any real photo and far
# below what would exhaust memory. Pillow raises beyond 2x its own MAX_IMAGE_PIXELS.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2


# Bytes Pillow holds per pixel of a decoded image by mode (multi-band modes take 32 bits).
_PIL_BPP = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Bytes the picture paths hold per pixel while preprocessing at full size (measured chains):
RGB_WORK = 16  # 8-bit: RGB conversion, numpy copy, a Pillow image again for the resize
ALPHA_WORK = 28  # + compositing over white: RGBA, white, composite, RGB
FLOAT_WORK = 72  # 16-bit / float: float64 copies, range scaling, 3 channels, float32
GREY_WORK = 64  # one measured channel: float64, finite mask and values, percentiles, scaled float32
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def pil_bpp(mode: str) -> int:
    return _PIL_BPP.get(mode, 4)


def work_bpp(img) -> int:
    """What the image path holds per pixel after decoding a Pillow image of this mode."""
    if img.mode.startswith("I") or img.mode == "F":
        return FLOAT_WORK
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return ALPHA_WORK
    return RGB_WORK


def decode_within_budget(img, size: int, work: float, meta: dict) -> None:
    """Before ``img.load()``: fit the decode to the per-sample memory budget.

    A JPEG whose decoding plus preprocessing would be over the budget is decoded at 1/2, 1/4 or
    1/8 scale (the DCT allows it; never below ``size`` on the short side), recorded as
    ``jpeg_draft``. Then the decoded pixels themselves (and a full-size conversion that a reduce
    may need) must fit, else OverBudget: "declares W x H pixels ...".
    """
    w, h = img.size
    bpp = pil_bpp(img.mode)
    if img.format == "JPEG" and not _budget.fits(w * h, bpp + work):
        k = 1
        while k < 8 and min(w, h) // (2 * k) >= size and not _budget.fits(w * h / (k * k), bpp + work):
            k *= 2
        if k > 1:
            img.draft(img.mode, (-(-w // k), -(-h // k)))
            meta["jpeg_draft"] = (f"decoded at reduced scale (DCT scaling): {w}x{h} -> {img.size[0]}x{img.size[1]}, "
                                  "the full size is over the per-sample memory budget")
            w, h = img.size
    convert = 4 if img.mode in ("1", "P") or img.mode.startswith("I;16") else 0
    _budget.check(w * h, f"pixels ({w}x{h} {img.format or ''} {img.mode})".replace("  ", " "), bpp + convert)


def reduce_within_budget(img, size: int, work: float, meta: dict, orientation: int | None = None):
    """After ``img.load()``: box-reduce a picture by an integer factor when its preprocessing at
    full size would be over the budget (never below ``size`` on its short side), recorded as
    ``reduced``. ``orientation`` (EXIF) is applied to the reduced picture, which has no EXIF.

    Returns the picture to preprocess (``img`` itself when it fits).

    Raises:
        OverBudget: even the smallest allowed reduction is over the budget.
    """
    w, h = img.size
    if _budget.fits(w * h, work + pil_bpp(img.mode)):
        return img
    k = min(math.ceil(math.sqrt(w * h * work / _room(w * h * pil_bpp(img.mode)))), min(w, h) // max(size, 1))
    if k >= 2:
        mode = {"1": "L", "P": "RGBA" if "transparency" in img.info else "RGB"}.get(
            img.mode, "I" if img.mode.startswith("I;16") else img.mode)
        small = (img.convert(mode) if mode != img.mode else img).reduce(k)
        meta["reduced"] = (f"box-reduced by {k} after decoding: {w}x{h} -> {small.size[0]}x{small.size[1]} "
                           "(preprocessing it at full size is over the per-sample memory budget)")
        if orientation in _TRANSPOSE:
            small = small.transpose(_TRANSPOSE[orientation])
        img, (w, h) = small, small.size
    _budget.check(w * h, f"pixels ({w}x{h}) to preprocess", work)
    return img


def _room(held: int) -> float:
    """Budget left beside ``held`` bytes (the decoded full-size picture, still referenced)."""
    limit = _budget.max_sample_memory()
    return max(limit - held, limit / 4)


def box_reduce(a: np.ndarray, k: int) -> np.ndarray:
    """Mean of k x k blocks of an [H, W] or [H, W, C] array (integer dtypes rounded back)."""
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    blocks = a[:h, :w].reshape(h // k, k, w // k, k, *a.shape[2:])
    out = blocks.mean(axis=(1, 3), dtype=np.float64)
    if a.dtype.kind in "iub":
        out = np.rint(out).astype(a.dtype)
    return out


def reduce_array(a: np.ndarray, size: int, work: float, meta: dict) -> np.ndarray:
    """:func:`reduce_within_budget` for a decoded array [H, W(, C)]: box means of k x k blocks."""
    h, w = a.shape[:2]
    if _budget.fits(1, a.nbytes + h * w * work):
        return a
    k = min(math.ceil(math.sqrt(h * w * work / _room(a.nbytes))), min(h, w) // max(size, 1))
    if k >= 2:
        a = box_reduce(a, k)
        meta["reduced"] = (f"box-reduced by {k} after decoding: {w}x{h} -> {a.shape[1]}x{a.shape[0]} "
                           "(preprocessing it at full size is over the per-sample memory budget)")
        h, w = a.shape[:2]
    _budget.check(h * w, f"pixels ({w}x{h}) to preprocess", work)
    return a


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
            item = np.dtype(page.dtype).itemsize if page.dtype is not None else 8
            n = int(np.prod(page.shape, dtype=np.int64))
            # tifffile decodes the page whole, into an array of its declared shape
            _budget.check(n, f"values in the first TIFF page {tuple(page.shape)} ({page.axes})", 2 * item)
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
