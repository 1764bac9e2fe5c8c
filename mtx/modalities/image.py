"""image: photographs and other RGB/grey pictures -> 197 ViT patch tokens (B/16)."""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DecodeError
from ..settings import setting
from ._base import STRUCTURE, Evidence, ModalityConfig, PatchImageModality, Sample, Sniffed, sniffed_or_read
from ._imaging import MAX_PIXELS, check_pixels, resize_center_crop
from ._registry import register_modality

# Magic bytes of the formats Pillow decodes for us.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
)


def image_format(head: bytes) -> str | None:
    """The image container named by the magic bytes, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return "PNM"
    return None


_NAMES = {name.lower(): name for name in (*(n for _, n in _MAGIC), "WebP", "GIF", "PNM")}


def image_format_name(fid: str) -> str | None:
    """The :func:`image_format` name of an ``Evidence.format`` id ('jpeg' -> 'JPEG'), or None."""
    return _NAMES.get(fid)


def _frames_of(img) -> int:
    return int(getattr(img, "n_frames", 1) or 1)


def open_image(path: Path, meta: dict | None = None):
    """Open with Pillow (lazy header read), with the pixel cap applied before decoding.

    A PNG whose text metadata exceeds Pillow's limits (``PngImagePlugin.MAX_TEXT_CHUNK`` for one
    compressed chunk, ``MAX_TEXT_MEMORY`` for all) is opened again with its text chunks left
    out (:func:`open_png_without_text`; recorded in ``meta``): the limits guard memory, and
    metadata is not what is embedded."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DecodeError(f"image too large: {e}") from None
    except UnidentifiedImageError:
        raise DecodeError("not a decodable image (unknown or corrupt header)") from None
    except OSError as e:
        raise DecodeError(f"cannot open image: {e}") from None
    except (ValueError, SyntaxError) as e:
        if _text_limit(e):
            return open_png_without_text(path, meta if meta is not None else {})
        raise DecodeError(f"cannot open image: {' '.join(str(e).split())[:200]}") from None
    check_pixels(*img.size)
    return img


def _text_limit(e: BaseException) -> bool:
    """Pillow refused a PNG text chunk (or all of them) as too large."""
    return "MAX_TEXT" in str(e)


_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")


class _PngWithoutText(io.RawIOBase):
    """A read-only view of a PNG file without its text chunks (the other chunks byte for byte)."""

    def __init__(self, f, segments: list[tuple[int, int]]):
        self._f, self._segs = f, segments  # (offset in the file, length) of the kept runs
        self._starts = np.cumsum([0] + [n for _, n in segments])
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: int(self._starts[-1])}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, b) -> int:
        out = memoryview(b).cast("B")
        n = 0
        while n < len(out) and self._pos < self._starts[-1]:
            i = int(np.searchsorted(self._starts, self._pos, side="right")) - 1
            off, length = self._segs[i]
            inside = self._pos - int(self._starts[i])
            k = min(len(out) - n, length - inside)
            self._f.seek(off + inside)
            got = self._f.readinto(out[n:n + k])
            if not got:
                break
            n += got
            self._pos += got
        return n


def open_png_without_text(path: Path, meta: dict):
    """Decode a PNG with its tEXt/zTXt/iTXt chunks left out (never read): the chunk headers are
    walked, the kept chunks handed to Pillow unchanged. Returns the loaded image."""
    from PIL import Image

    segments, skipped, chunks = [], 0, 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos, run = 8, 0  # the signature starts the first kept run
        while pos + 12 <= size:
            f.seek(pos)
            hdr = f.read(8)
            length, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8]
            end = pos + 12 + length
            chunks += 1
            if kind in _PNG_TEXT:
                segments.append((run, pos - run))
                skipped += length
                run = end
            pos = end
            if kind == b"IEND" or chunks > 10_000_000:
                break
        segments.append((run, max(0, min(pos, size) - run)))
        segments = [(o, n) for o, n in segments if n > 0]
        view = io.BufferedReader(_PngWithoutText(f, segments), buffer_size=1 << 16)
        try:
            img = Image.open(view)
            check_pixels(*img.size)
            img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DecodeError(f"corrupt or truncated image data: {' '.join(str(e).split())[:200]}") from None
    meta["png_text_ignored"] = (f"{skipped:,} bytes of text chunks (tEXt/zTXt/iTXt) left out: over Pillow's "
                                "MAX_TEXT_CHUNK/MAX_TEXT_MEMORY limits, and metadata is not embedded")
    return img


def _decode(img, meta: dict, size: int):
    """Decode the pixels (the first frame) within the per-sample budget (a picture too large to
    preprocess at full size is reduced right after decoding, never below ``size``; recorded) and
    apply the EXIF orientation."""
    from PIL import ImageOps

    from ._imaging import decode_within_budget, reduce_within_budget, work_bpp

    if _frames_of(img) > 1:
        meta["frames"] = _frames_of(img)
        img.seek(0)
    decode_within_budget(img, size, work_bpp(img), meta)
    img.load()
    orientation = img.getexif().get(0x0112, 1)
    full = img
    img = reduce_within_budget(img, size, work_bpp(img), meta, orientation)
    if orientation not in (None, 1):
        if img is full:
            img = ImageOps.exif_transpose(img)
        meta["exif_orientation"] = int(orientation)
    return img


def to_rgb_array(img, path: Path, size: int = 224) -> tuple[np.ndarray, dict]:
    """Decode to an RGB float/uint8 array: EXIF orientation, palette/alpha/grey/16-bit/float handled.

    Returns ``(array [H, W, 3], meta)`` where the array is uint8 for 8-bit sources and float32 in
    [0, 1] for 16-bit/float sources (scaled by their real range; floats already in [0, 1] as
    they are). Memory: the decode is checked against the per-sample budget first (:mod:`._imaging`).
    """
    from PIL import Image


    meta = {"format": img.format, "mode": img.mode, "size": list(img.size)}
    try:
        img = _decode(img, meta, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if img.format == "TIFF":
            return _tifffile_rgb(path, meta, size)
        if img.format == "PNG" and _text_limit(e):
            img = _decode(open_png_without_text(path, meta), meta, size)
        else:
            raise DecodeError(f"corrupt or truncated image data: {' '.join(str(e).split())[:200]}") from None
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_float(np.asarray(img), meta), meta  # integer or float32 samples
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
        meta["alpha"] = "composited over white"
    return np.asarray(img.convert("RGB"), dtype=np.uint8), meta


def _scale_float(a: np.ndarray, meta: dict) -> np.ndarray:
    """To [0, 1]: float samples already in [0, 1] as they are, anything else by its real range
    (min to max; recorded as ``value_range``)."""
    is_float = a.dtype.kind == "f"
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        raise DecodeError("image has no finite values (every pixel is NaN/inf)")
    if not finite.all():  # the documented fill, recorded
        meta["nonfinite_fill"] = f"{int((~finite).sum())} NaN/inf values replaced by 0 before scaling"
        a = np.where(finite, a, 0.0)
    del finite
    lo, hi = float(a.min()), float(a.max())
    meta["value_range"] = [lo, hi]
    if is_float and 0.0 <= lo and hi <= 1.0:
        meta["value_scale"] = "float samples already in [0, 1]: used as they are"
    else:
        a = (a - lo) / ((hi - lo) or 1.0)
        meta["value_scale"] = f"scaled from [{lo:g}, {hi:g}] (the real range) to [0, 1]"
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    elif a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] >= 4:
        a = a[..., :3]
    elif a.shape[-1] == 2:
        a = np.repeat(a[..., :1], 3, axis=-1)
    return a.astype(np.float32)


def _tifffile_rgb(path: Path, meta: dict, size: int = 224) -> tuple[np.ndarray, dict]:
    """TIFFs Pillow refuses (float, planar configuration 2, multi-sample, exotic compression):
    the first page via tifffile, samples last."""
    from ._imaging import read_tiff_page

    a, facts = read_tiff_page(path)
    meta.update(reader="tifffile", pages=facts["pages"], dtype=str(a.dtype))
    if facts["pages"] > 1:
        meta["page_used"] = f"the first of {facts['pages']} pages"
    if facts.get("planar_separate"):
        meta["planar"] = "separate planes (planar configuration 2), interleaved"
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)
    from ._imaging import FLOAT_WORK, reduce_array

    a = reduce_array(a, size, FLOAT_WORK, meta)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3:
        return a, meta
    return _scale_float(a, meta), meta


def decode_rgb(path: Path, head: bytes = b"", size: int = 224) -> tuple[np.ndarray, dict]:
    """A picture file -> (RGB array, meta) through Pillow, or tifffile for the TIFFs Pillow
    cannot even open (float64, planar configuration 2...)."""
    meta: dict = {}
    try:
        img = open_image(path, meta)
    except DecodeError:
        if image_format(head) in ("TIFF", "BigTIFF"):
            return _tifffile_rgb(path, {"format": "TIFF"}, size)
        raise
    with img:
        rgb, m = to_rgb_array(img, path, size)
    return rgb, {**m, **meta}


def pixels(rgb: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] uint8 or float [0,1] -> [3, size, size] (uint8 stays uint8: 4x less IPC)."""
    from PIL import Image

    if rgb.dtype == np.uint8:
        im = resize_center_crop(Image.fromarray(rgb, "RGB"), size)
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
    from ._imaging import float_to_pixels

    return float_to_pixels(rgb, size)


@dataclass
class ImageConfig(ModalityConfig):
    size: int = setting(224, lo=16, hi=4096)  # resize short side, centre-crop to size x size
    max_pixels: int = setting(MAX_PIXELS, lo=1)  # decompression-bomb cap: larger images are refused before decoding


@register_modality
class image(PatchImageModality):  # noqa: N801 - class name == registry key == module name
    """Photographs and other pictures become **197 tokens** at B/16 (a CLS token + 14 × 14 patches),
    exactly the input a ViT-B/16 or CLIP vision tower was trained on.

    ## Which files

    JPEG, PNG (1/8/16-bit, palette, alpha), WebP, BMP, GIF (first frame), TIFF (incl. 16-bit and
    float; the first page), PPM/PGM/PNM. The magic bytes decide, not the extension, and they give
    `structure` strength evidence: the same containers also hold thermal frames, radiographs,
    animated clips and multi-band cubes, and [infrared](infrared.md), [xray](xray.md),
    [video](video.md) and [hyperspectral](hyperspectral.md) claim those with stronger evidence
    (a FLIR segment, a path hint, more than one frame, ≥ 5 bands). `mtx tokenize FILE` prints the
    reason for every decision.

    ## From file to pixels

    1. Open with Pillow; images above 10⁸ pixels, or whose decoded pixels alone are over the
       per-sample memory budget (`MTX_MAX_SAMPLE_MEMORY`, 256 MiB), are refused before decoding; a
       larger JPEG is first decoded at 1/2–1/8 scale (`jpeg_draft`), and a picture too large to
       preprocess at full size is box-reduced right after decoding, never below 224 px (`reduced`).
       TIFFs Pillow cannot open or decode (float64, planar configuration 2, exotic compression) go
       through tifffile: the first page (`page_used` records how many there are), separate planes
       interleaved. A PNG whose text metadata is over Pillow's limits (`MAX_TEXT_CHUNK` 1 MB per
       compressed chunk, `MAX_TEXT_MEMORY` 64 MB in all — they stay, guarding memory) is decoded
       with its text chunks left out, never read (recorded as `png_text_ignored`).
    2. Apply the EXIF orientation, so a portrait photo is not embedded sideways.
    3. Convert to RGB: grey is replicated, palette expanded, **alpha composited over white** (a
       transparent logo should look like it does on a page, not on black), 16-bit and float images
       scaled to [0, 1] by their *actual* range (a 12-bit sensor stored in 16 bits would otherwise
       be almost black); float samples already in [0, 1] are used as they are (`value_scale`
       records which).
    4. Resize the short side to 224 (bicubic) and centre-crop 224 × 224 — the CLIP / timm evaluation
       transform. Cropping rather than squashing keeps the aspect ratio the encoder was trained on.
    5. Pixels travel as uint8 (4× less inter-process traffic than float) and are normalised on the
       device with the **encoder preset's** mean/std (CLIP's for the `meta-*` and `clip-*` presets):
       preprocessing constants belong to the weights, not to the loader.

    ## Tokens

    `ImagePatchTokenizer`: Conv2d(3, D, 16, stride 16, no bias) → 196 patch tokens, a CLS token
    prepended, learned positions (197 × D) added, then the pre-LayerNorm (CLIP's `ln_pre`).

    ## Weights and pooling

    With weights that include a CLIP vision tower (`meta-b16`, `clip-b16`, ...), the patch
    projection, CLS, positions and `ln_pre` are CLIP's own (`init=clip`): the frozen blocks then see
    exactly the tokens they were trained with, and the vector is the **CLS** token after the final
    LayerNorm, as CLIP pools. Without a CLIP front end the tokenizer is seeded (`init=seeded`,
    deterministic from the modality name and config) and the vector is the **mean** of the patch
    tokens, because an untrained CLS token carries no information of its own.

    ## Try it

    ```
    mtx tokenize examples/gradient.png
    ```
    """

    name = "image"
    extensions = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                  ".pnm", ".pbm", ".jfif")
    summary = "JPEG, PNG, WebP, BMP, GIF, TIFF, PNM pictures"
    tokens = "197 = 1 + 14x14"
    Config = ImageConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        fmt = image_format(head)
        if fmt:
            # Image containers are shared with infrared, xray, video (animated) and hyperspectral
            # (multi-band TIFF); those modalities claim such files with stronger evidence.
            return Evidence(self.name, STRUCTURE, f"{fmt} magic bytes", fmt.lower())
        return super().sniff(head, path)

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, size: int = 256) -> list[Path]:
        """``n`` JPEG pictures, ``size`` px square (upscaled colour noise)."""
        from PIL import Image

        rng, out = np.random.default_rng(0), []
        for i in range(n):
            base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            p = d / f"img{i:05d}.jpg"
            Image.fromarray(base).resize((size, size), Image.BILINEAR).save(p, quality=90)
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """A float TIFF whose every pixel is NaN: no finite value, no picture."""
        return [nan_tiff(d)]

    def load(self, path: Path, cfg: ImageConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        rgb, meta = decode_rgb(path, sniffed_or_read(path, sniffed).head, cfg.size)
        meta["preprocess"] = f"short side {cfg.size} bicubic, centre crop {cfg.size}"
        yield Sample("", {"pixels": pixels(rgb, cfg.size)[None]}, meta)


def nan_tiff(d: Path) -> Path:
    """A 16x16 float TIFF whose every pixel is NaN (the picture modalities' example without
    content: under ``thermal/`` or ``xray/`` it is sniffed as infrared or X-ray)."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    p = d / "nan.tiff"
    Image.fromarray(np.full((16, 16), np.nan, np.float32), mode="F").save(p)
    return p
