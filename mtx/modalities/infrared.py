"""infrared: FLIR radiometric JPEGs and 16-bit thermal frames -> 197 ViT patch tokens (B/16).

FLIR radiometric JPEG layout (ExifTool's FLIR tables; checked on the samples in
``../shared/data/infrared``): the raw sensor frame is not the visible JPEG. It sits in one or
more APP1 segments that start with ``FLIR\\0``; dropping each segment's 8-byte header and
concatenating the payloads (in chunk order) gives an "FFF" blob. The FFF header's version field
tells its byte order (FLIR cameras write big-endian, DJI's "ATAU_RBFO" little-endian). A record
directory of 32-byte entries follows; record type 1 holds the raw frame: a 32-byte header (a
byte-order word equal to 2, width and height as uint16) and then either a PNG whose 16-bit
samples are stored *little-endian* (so a standard PNG decoder's values must be byteswapped) or
bare uint16 samples.
"""
from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtx.errors import DecodeError

from . import _budget
from ._base import (
    CLAIM,
    REFINED,
    Evidence,
    GreyFrameConfig,
    PatchImageModality,
    Sample,
    Sniffed,
    quiet,
    sniffed_or_read,
)
from ._imaging import (
    GREY_WORK,
    check_pixels,
    decode_within_budget,
    read_tiff_page,
    reduce_array,
    reduce_within_budget,
    robust_minmax,
)
from ._registry import register_modality
from .image import image_format

HINTS = ("thermal", "infrared", "ir", "lwir", "flir")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FLIR_APP1 = b"FLIR\x00"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_SNIFF_SEGMENTS = 64


def path_hint(path: Path, words: tuple[str, ...]) -> str | None:
    """The hint word naming ``path``: a directory component equal to a word (a plural 's'
    allowed), or a token of the file name (split at non-letters, letters apart from digits).
    ``x-ray`` / ``x_ray`` count as ``xray``."""

    def norm(s: str) -> str:
        return re.sub(r"x[-_ ]ray", "xray", s.lower())

    for comp in path.parent.parts[::-1]:
        c = norm(comp)
        if c in words or (c.endswith("s") and c[:-1] in words):
            return comp
    for tok in re.findall(r"[a-z]+", norm(path.stem)):
        if tok in words or (tok.endswith("s") and tok[:-1] in words):
            return tok
    return None


# ---------------------------------------------------------------------------------------------
# JPEG segments and FLIR records
# ---------------------------------------------------------------------------------------------


def jpeg_segments(f, max_segments: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(marker, payload offset, payload length) of each header segment before the scan data,
    read by seeking from segment to segment (nothing but 4-byte headers is read)."""
    f.seek(0)
    if f.read(2) != b"\xff\xd8":
        return
    n = 0
    while max_segments is None or n < max_segments:
        b = f.read(2)
        if len(b) < 2 or b[0] != 0xFF:
            return
        marker = b[1]
        while marker == 0xFF:  # fill bytes
            nb = f.read(1)
            if not nb:
                return
            marker = nb[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan
            return
        ln = f.read(2)
        if len(ln) < 2:
            return
        size = struct.unpack(">H", ln)[0]
        if size < 2:
            return
        start = f.tell()
        yield marker, start, size - 2
        f.seek(start + size - 2)
        n += 1


def _jpeg_info(path: Path, max_segments: int | None) -> tuple[int, int | None]:
    """(number of FLIR APP1 segments, number of colour components from the SOF or None)."""
    flir, comps = 0, None
    with open(path, "rb") as f:
        for marker, off, size in jpeg_segments(f, max_segments):
            if marker == 0xE1 and size >= 8:
                pos = f.tell()
                f.seek(off)
                if f.read(5) == _FLIR_APP1:
                    flir += 1
                f.seek(pos)
            elif marker in _SOF and size >= 6:
                pos = f.tell()
                f.seek(off + 5)
                comps = f.read(1)[0]
                f.seek(pos)
    return flir, comps


def flir_blob(data: bytes) -> tuple[bytes, int]:
    """The FFF blob assembled from the FLIR APP1 segments of a JPEG (b'' if none), and the count."""
    chunks = []
    f = io.BytesIO(data)
    for marker, off, size in jpeg_segments(f):
        if marker == 0xE1 and data[off:off + 5] == _FLIR_APP1 and size >= 8:
            chunks.append((data[off + 6], len(chunks), data[off + 8:off + size]))
    chunks.sort(key=lambda c: (c[0], c[1]))  # chunk index, then file order
    return b"".join(c[2] for c in chunks), len(chunks)


def fff_records(fff: bytes) -> tuple[str, str, list[tuple[int, int, int]]]:
    """(byte order '<'|'>', creator, [(record type, offset, length)]) of an FFF blob."""
    if len(fff) < 64 or fff[:4] not in (b"FFF\x00", b"AFF\x00"):
        raise DecodeError("FLIR APP1 segments do not hold an FFF record container")
    creator = fff[4:20].split(b"\x00", 1)[0].decode("latin-1", "replace")
    for order in (">", "<"):
        if 100 <= struct.unpack(order + "I", fff[20:24])[0] < 200:
            break
    else:
        raise DecodeError("FLIR FFF header has an unknown version (neither byte order fits)")
    dir_off, n = struct.unpack(order + "II", fff[24:32])
    if dir_off + 32 * n > len(fff) or n > 4096:
        raise DecodeError(f"FLIR FFF record directory is truncated ({n} records at offset {dir_off})")
    recs = []
    for k in range(n):
        e = dir_off + 32 * k
        rtype = struct.unpack(order + "H", fff[e:e + 2])[0]
        roff, rlen = struct.unpack(order + "II", fff[e + 12:e + 20])
        if rtype:
            recs.append((rtype, roff, rlen))
    return order, creator, recs


def decode_raw_record(rec: bytes) -> tuple[np.ndarray, dict]:
    """A type-1 FFF record -> uint16 [H, W] raw sensor counts."""
    if len(rec) < 32:
        raise DecodeError("FLIR raw thermal record is shorter than its 32-byte header")
    order = "<" if struct.unpack("<H", rec[:2])[0] == 2 else ">"
    w, h = struct.unpack(order + "HH", rec[2:6])
    check_pixels(w, h)
    _budget.check(w * h, f"pixels in the FLIR raw thermal frame ({w}x{h}, 16-bit)", 8)
    body = rec[32:]
    if body[:8] == _PNG_MAGIC:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(body)) as im:
                if im.size != (w, h):
                    raise DecodeError(f"FLIR raw thermal PNG is {im.size[0]}x{im.size[1]}, its record header "
                                      f"says {w}x{h}")
                a = np.array(im)
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for corrupt PNGs
            raise DecodeError(f"FLIR raw thermal PNG is corrupt: {e}") from None
        if a.dtype.itemsize == 2 or a.dtype == np.int32:
            # FLIR writes the PNG's 16-bit samples little-endian, against the PNG standard.
            a = a.astype(np.uint16).byteswap()
        encoding = "png (little-endian 16-bit, byteswapped)"
    else:
        need = w * h * 2
        if len(body) < need:
            raise DecodeError(f"FLIR raw thermal record holds {len(body)} bytes, {w}x{h} uint16 needs {need}")
        a = np.frombuffer(body[:need], dtype=order + "u2").reshape(h, w).astype(np.uint16)
        encoding = f"raw uint16 {'little' if order == '<' else 'big'}-endian"
    if a.ndim != 2 or a.shape != (h, w):
        raise DecodeError(f"FLIR raw thermal frame is {a.shape}, its header says {h}x{w}")
    return a, {"raw_encoding": encoding, "raw_header_size": [int(w), int(h)]}


def flir_raw(data: bytes) -> tuple[np.ndarray | None, dict]:
    """The raw thermal frame of a FLIR radiometric JPEG (None when it has no raw record)."""
    fff, nseg = flir_blob(data)
    if not nseg:
        return None, {}
    order, creator, recs = fff_records(fff)
    meta = {"flir_app1_segments": nseg, "fff_byte_order": "big" if order == ">" else "little",
            "fff_creator": creator, "fff_records": sorted({r[0] for r in recs})}
    for rtype, off, ln in recs:
        if rtype == 1:
            if off + ln > len(fff) or ln < 32:
                raise DecodeError("FLIR raw thermal record points past the end of the FLIR data "
                                  "(truncated file?)")
            a, m = decode_raw_record(fff[off:off + ln])
            meta.update(m)
            return a, meta
    return None, meta


# ---------------------------------------------------------------------------------------------
# Single-channel frames (PNG, TIFF, ...)
# ---------------------------------------------------------------------------------------------


def png_channels(head: bytes) -> tuple[int, int] | None:
    """(channels, bit depth) from a PNG's IHDR, or None."""
    if head[:8] != _PNG_MAGIC or head[12:16] != b"IHDR" or len(head) < 26:
        return None
    depth, ctype = head[24], head[25]
    chans = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if ctype == 3:  # palette: not a single measured channel
        return (3, depth)
    return (chans, depth) if chans else None


def tiff_channels(path: Path) -> tuple[int, int] | None:
    """(samples per pixel, bits per sample) of a TIFF's first page, or None."""
    try:
        import tifffile

        with quiet(), tifffile.TiffFile(path) as tf:
            p = tf.pages[0]
            return int(p.samplesperpixel), int(p.bitspersample)
    except Exception:  # noqa: BLE001 - sniffing must not raise on odd TIFFs
        return None


def image_channels(head: bytes, path: Path) -> tuple[str, int | None, int | None]:
    """(format, channels, bits) for the image containers that can hold one measured channel."""
    fmt = image_format(head)
    if fmt == "PNG":
        c = png_channels(head)
        return fmt, (c[0] if c else None), (c[1] if c else None)
    if fmt in ("TIFF", "BigTIFF"):
        c = tiff_channels(path)
        return fmt, (c[0] if c else None), (c[1] if c else None)
    if fmt == "JPEG":
        _, comps = _jpeg_info(path, _MAX_SNIFF_SEGMENTS)
        return fmt, comps, 8
    if fmt == "PNM":
        return fmt, (1 if head[1:2] in b"1245" else 3), None
    return fmt or "", None, None


def read_gray(path: Path, fmt: str, size: int = 224) -> tuple[np.ndarray, dict]:
    """Decode a picture to a 2-D float array of its measured values (multi-channel -> mean).

    Memory: the decode is checked against the per-sample budget, and a frame too large to
    preprocess at full size is box-reduced right after decoding (never below ``size``)."""
    meta: dict = {"format": fmt}
    if fmt in ("TIFF", "BigTIFF"):
        a, facts = read_tiff_page(path)
        meta.update(pages=facts["pages"], compression=facts["compression"],
                    samples_per_pixel=facts["samples_per_pixel"])
        if facts["samples_per_pixel"] > 1 and facts["planar_separate"] and a.ndim == 3:
            a = np.moveaxis(a, 0, -1)
        a = reduce_array(a, size, GREY_WORK, meta)
    else:
        from PIL import Image, ImageOps

        from .image import open_image

        img = open_image(path)
        try:
            with img:
                img.seek(0)
                decode_within_budget(img, size, GREY_WORK, meta)
                img.load()
                orientation = img.getexif().get(0x0112, 1)
                full = img
                img = reduce_within_budget(img, size, GREY_WORK, meta, orientation)
                if img is full:
                    img = ImageOps.exif_transpose(img) or img
                meta["mode"] = img.mode
                if img.mode == "P":
                    img = img.convert("RGB")
                a = np.asarray(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DecodeError(f"corrupt or truncated image data: {e}") from None
    meta["shape"], meta["dtype"] = list(a.shape), str(a.dtype)
    if a.ndim == 3:
        if a.shape[-1] in (2, 4):  # drop alpha
            a = a[..., :-1]
        a = a.astype(np.float64).mean(axis=-1)
        meta["channels"] = "averaged to one"
    elif a.ndim != 2:
        raise DecodeError(f"expected a 2-D frame, got an array of shape {a.shape}")
    return a, meta


# ---------------------------------------------------------------------------------------------


@dataclass
class InfraredConfig(GreyFrameConfig):
    pass


@register_modality
class infrared(PatchImageModality):  # noqa: N801 - class name == registry key == module name
    r"""Thermal images become **197 tokens** at B/16 through the same patch tokenizer as
    [image](image.md); what differs is how a file becomes pixels: mtx reads the **measured values**
    (raw sensor counts), not the false-colour rendering a camera shows.

    ## Which files

    - **FLIR radiometric JPEGs**: the visible JPEG is a rendering; the raw thermal frame sits in APP1
      segments that start with `FLIR\0`. Their presence is an exclusive claim (`claim` strength).
      mtx assembles the FFF blob from the segments (in chunk order), reads its record directory
      (byte order from the version field: FLIR cameras write big-endian, DJI little-endian) and
      decodes record type 1: a PNG whose 16-bit samples FLIR stores little-endian against the PNG
      standard (so they are byte-swapped), or bare uint16 samples. Only segment headers are read to
      sniff; the whole file only when loading.
    - **Single-channel 8/16-bit PNG, TIFF or JPEG frames** with a path hint — a directory or name
      token `thermal`, `infrared`, `ir`, `lwir` or `flir` (`refined` strength). A plain grey picture
      without a hint stays an [image](image.md): mtx never guesses silently.

    ## From file to pixels

    1. The raw frame (or the single measured channel; a multi-channel frame is averaged).
    2. **Robust min–max**: values between the 1st and 99th percentile are mapped to [0, 1] and
       clipped. Thermal scenes have a few very hot or cold pixels (the sun, a reflection); a plain
       min–max would let them flatten the rest of the scene into one grey.
    3. Replicated to three channels, then the image path: short side 224, centre crop, the preset's
       normalisation.

    A FLIR JPEG **without** a raw record has only its palette rendering; palette colours are not
    monotonic in temperature, so it is embedded as the RGB picture it is (recorded as
    `thermal_source=rendered`).

    ## Tokens, weights and pooling

    As [image](image.md): `ImagePatchTokenizer`, 197 tokens, `init=clip` (sharing the image
    tokenizer's CLIP weights, as the paper feeds infrared through the image embedding) or `seeded`;
    CLS pooling with CLIP weights, mean otherwise.

    ## Try it

    ```
    mtx tokenize ../shared/data/infrared/flir_ax8.jpg
    ```
    """

    name = "infrared"
    extensions = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
    summary = "FLIR radiometric JPEGs (raw thermal frame), 16-bit thermal PNG/TIFF frames"
    tokens = "197 = 1 + 14x14"
    Config = InfraredConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        fmt = image_format(head)
        if fmt is None:
            return None
        if fmt == "JPEG":
            nflir, comps = _jpeg_info(path, _MAX_SNIFF_SEGMENTS)
            if nflir:
                return Evidence(self.name, CLAIM, f"FLIR APP1 segment ({nflir} found)", "flir-app1")
            hint = path_hint(path, HINTS) if comps == 1 else None
            if hint:
                return Evidence(self.name, REFINED, f"single-channel JPEG with path hint {hint!r}", "jpeg")
            return None
        _, chans, bits = image_channels(head, path)
        if chans == 1:
            hint = path_hint(path, HINTS)
            if hint:
                depth = f"{bits}-bit " if bits else ""
                return Evidence(self.name, REFINED, f"single-channel {depth}{fmt} with path hint {hint!r}",
                                fmt.lower())
        return None

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, size: int = 256) -> list[Path]:
        """``n`` 16-bit single-channel PNG frames under ``thermal/`` (the path hint)."""
        from PIL import Image

        d = d / "thermal"
        d.mkdir(exist_ok=True)
        rng, out = np.random.default_rng(1), []
        for i in range(n):
            a = (rng.random((size // 8, size // 8)) * 2000 + 13000).astype(np.uint16)
            p = d / f"ir{i:05d}.png"
            Image.fromarray(np.kron(a, np.ones((8, 8), np.uint16))).save(p)
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """A float thermal TIFF under ``thermal/`` whose every value is NaN."""
        from .image import nan_tiff

        return [nan_tiff(d / "thermal")]

    def load(self, path: Path, cfg: InfraredConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        from .image import image_format_name, open_image

        known = sniffed_or_read(path, sniffed)
        if known.format:  # a FLIR JPEG is a JPEG whose APP1 segments flir_raw reads below
            fmt = "JPEG" if known.format == "flir-app1" else image_format_name(known.format)
        else:
            fmt = image_format(known.head)
        if fmt is None:
            raise DecodeError("not an image container infrared reads (JPEG, PNG, TIFF, ...)")
        meta: dict = {"format": fmt}
        raw = None
        if fmt == "JPEG":
            # read whole to assemble the FLIR segments (the file, then the FFF blob: two copies)
            _budget.check(path.stat().st_size, "bytes in a FLIR/JPEG file (read whole)", 3)
            data = path.read_bytes()
            raw, fmeta = flir_raw(data)
            meta.update(fmeta)
        if raw is not None:
            a = reduce_array(raw, cfg.size, GREY_WORK, meta)
            meta.update(thermal_source="raw", raw_shape=list(raw.shape), raw_dtype=str(raw.dtype),
                        raw_range=[int(raw.min()), int(raw.max())])
        elif fmt == "JPEG" and meta.get("flir_app1_segments"):
            # No raw record: the rendered (palette-coloured) picture is all there is. Its colours
            # are not monotonic in temperature, so it goes through the image path unchanged.
            from .image import pixels, to_rgb_array

            img = open_image(path)
            with img:
                rgb, imeta = to_rgb_array(img, path, cfg.size)
            meta.update(thermal_source="rendered", rendered=imeta,
                        preprocess=f"rendered RGB picture: short side {cfg.size} bicubic, centre crop {cfg.size}")
            yield Sample("", {"pixels": pixels(rgb, cfg.size)[None]}, meta)
            return
        else:
            a, gmeta = read_gray(path, fmt, cfg.size)
            meta.update(gmeta)
            meta["thermal_source"] = "frame"
            finite = a[np.isfinite(a)]
            if finite.size:
                meta["value_range"] = [float(finite.min()), float(finite.max())]
        scaled, stats = robust_minmax(a, cfg.lo_percentile, cfg.hi_percentile)
        yield self.grey_sample(scaled, stats, cfg.size, meta)
