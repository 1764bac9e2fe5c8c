"""xray: DICOM radiographs and CT slices, and X-ray PNG/JPEG -> 197 ViT patch tokens (B/16).

DICOM goes through pydicom (compressed transfer syntaxes through its pylibjpeg plugins: JPEG,
JPEG-LS and JPEG 2000; RLE natively). The grey levels follow the standard's pipeline: modality
LUT (rescale slope/intercept), then the VOI LUT or the first window centre/width, then
MONOCHROME1 inversion so that bright always means dense. A multi-frame object gives its middle
frame (decoded alone). Then robust min-max, three channels and the image path, like infrared.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtx.errors import DecodeError, MissingDependency

from . import _budget
from ._base import (
    CLAIM,
    EXTENSION,
    REFINED,
    Evidence,
    GreyFrameConfig,
    PatchImageModality,
    Sample,
    Sniffed,
    sniffed_or_read,
)
from ._imaging import GREY_WORK, check_pixels, reduce_array, robust_minmax
from ._registry import register_modality
from .image import image_format, image_format_name
from .infrared import path_hint, read_gray

HINTS = ("xray", "cxr", "chest", "radiograph", "radiography", "mammogram")
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _decode_error(e: Exception) -> Exception:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    low = msg.lower()
    if "plugin" in low or ("missing" in low and "dependenc" in low) or "no available" in low:
        return MissingDependency(f"no decoder for this DICOM's compressed pixel data ({msg}); "
                                 "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
    if "reshape" in low or "buffer is smaller" in low or "buffer size" in low:  # numpy's words
        return DecodeError("DICOM pixel data does not match its header (rows x columns x frames x samples x "
                           "bits): truncated or corrupt")
    return DecodeError(f"cannot decode DICOM pixel data: {msg}")


def xray_format(head: bytes, path: Path) -> str | None:
    """'dicom' (DICM magic, or a DICOM extension on bytes no image format claims), an image
    format id ('png', 'jpeg'...), or None: what ``load`` reads the file as."""
    fmt = image_format(head)
    if is_dicom(head) or (fmt is None and path.suffix.lower() in xray.extensions):
        return "dicom"
    return fmt.lower() if fmt else None


def _int(ds, key: str, default: int) -> int:
    try:
        return int(ds.get(key, default) or default)
    except (TypeError, ValueError):
        raise DecodeError(f"corrupt DICOM header: {key} is {ds.get(key)!r}, not a number") from None


def _check_pixel_data(ds, rows: int, cols: int, frames: int, tsyntax) -> None:
    """Before decoding: one frame fits the per-sample memory budget, and native (uncompressed)
    pixel data holds what the header declares (one clear line, not numpy's reshape text)."""
    samples = _int(ds, "SamplesPerPixel", 1)
    bits = _int(ds, "BitsAllocated", 16)
    if not 1 <= samples <= 4 or bits not in (1, 8, 16, 32, 64):
        raise DecodeError(f"corrupt DICOM header: SamplesPerPixel {samples}, BitsAllocated {bits}")
    # pydicom holds the frame's bytes and its array; the float work that follows is reduced
    # first when the frame is large (reduce_array)
    _budget.check(rows * cols * samples, f"pixels in one DICOM frame ({rows} x {cols} x {samples} samples)",
                  2 * max(bits // 8, 1))
    if tsyntax is not None and getattr(tsyntax, "is_encapsulated", True):
        return  # compressed frames: their decoders check their own lengths
    tag = next((t for t in _PIXEL_TAGS if t in ds), None)
    try:
        have = int(ds.get_item(tag).length) if tag else 0
    except (AttributeError, TypeError, KeyError):
        return
    need = (rows * cols * frames * samples * bits + 7) // 8
    if have < need or have > 0xFFFFFFF0:
        frames_txt = f" x {frames} frames" if frames > 1 else ""
        samples_txt = f" x {samples} samples" if samples > 1 else ""
        raise DecodeError(f"DICOM pixel data holds {have:,} bytes, the header declares {rows} x {cols}"
                          f"{frames_txt}{samples_txt} x {bits} bits = {need:,} bytes (truncated or corrupt)")


def read_dicom(path: Path, size: int = 224) -> tuple[np.ndarray, dict]:
    """Decode one frame of a DICOM to float grey values (after modality and VOI LUTs).

    Returns ``(array [H, W] or [H, W, 3], meta)``; ``meta['invert']`` tells MONOCHROME1."""
    try:
        import pydicom  # noqa: F401 - the check that pydicom and its pixel module are there
        from pydicom.pixels import apply_modality_lut  # noqa: F401
    except ImportError:  # pragma: no cover - dependency
        raise MissingDependency("pydicom is needed for DICOM; pip install pydicom pylibjpeg") from None
    ds, tsyntax, meta = _read_header(path)
    arr = _decode_frame(path, ds, tsyntax, meta)
    arr = reduce_array(arr, size, GREY_WORK, meta)  # integers kept: LUTs index them
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    out = arr
    if samples == 1:
        out = _grey_luts(arr, ds, meta)
        meta["invert"] = meta["photometric"] == "MONOCHROME1"
    else:
        meta["invert"] = False
        if out.ndim == 3 and out.shape[-1] == 4:
            out = out[..., :3]
    return out.astype(np.float64), meta


def _read_header(path: Path):
    """(dataset with the pixel data deferred, transfer syntax, meta); refuses a file that is no
    DICOM, has a corrupt header or holds no pixels."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Large values (the pixel data) are deferred: read later only if needed.
            ds = pydicom.dcmread(path, defer_size=4096)
        except InvalidDicomError as e:
            raise DecodeError(f"not a valid DICOM file: {e}") from None
        except Exception as e:  # noqa: BLE001 - pydicom raises many types on corrupt headers
            raise DecodeError(f"corrupt DICOM header: {type(e).__name__}: {e}") from None
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    meta: dict = {
        "format": "DICOM",
        "transfer_syntax": getattr(tsyntax, "name", str(tsyntax or "unknown")),
        "dicom_modality": str(ds.get("Modality", "")),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
    }
    if caught:
        meta["reader_warnings"] = sorted({str(w.message)[:200] for w in caught})[:5]
    if not any(t in ds for t in _PIXEL_TAGS):
        sop = str(ds.get("SOPClassUID", "")) and getattr(ds.SOPClassUID, "name", str(ds.SOPClassUID))
        raise DecodeError(f"DICOM has no pixel data (no PixelData element; SOP class {sop or 'unknown'}): "
                          "nothing to embed")
    return ds, tsyntax, meta


def _decode_frame(path: Path, ds, tsyntax, meta: dict) -> np.ndarray:
    """The stored pixels of the middle frame ([H, W] or [H, W, C]), checked before decoding."""
    from pydicom.pixels import pixel_array

    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_pixels(cols, rows)
    nframes = _int(ds, "NumberOfFrames", 1)
    index = nframes // 2 if nframes > 1 else None
    _check_pixel_data(ds, rows, cols, nframes, tsyntax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr = pixel_array(path, index=index)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - decoders raise many types
            raise _decode_error(e) from None
    meta.update(rows=rows, columns=cols, frames=nframes, stored_dtype=str(arr.dtype),
                bits_stored=int(ds.get("BitsStored", 0) or 0))
    if index is not None:
        meta["frame_used"] = index
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):  # a decoder handed back every frame
        arr = arr[arr.shape[0] // 2]
    if arr.ndim not in (2, 3):
        raise DecodeError(f"unexpected DICOM pixel array shape {arr.shape}")
    if arr.size == 0:
        raise DecodeError("DICOM pixel data is empty")
    return arr


def _grey_luts(arr: np.ndarray, ds, meta: dict) -> np.ndarray:
    """Apply the modality LUT (rescale) and the first VOI LUT or window, recording both in meta."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out = arr
    if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
        out = apply_modality_lut(arr, ds)
        if out.dtype.kind == "f" and np.all(np.mod(out, 1) == 0):
            out = out.astype(np.int64)  # integral values: VOI LUT tables index integers
        meta["rescale"] = {"slope": float(ds.get("RescaleSlope", 1) or 1),
                           "intercept": float(ds.get("RescaleIntercept", 0) or 0)}
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        try:
            out = apply_voi_lut(out, ds, index=0)
        except Exception as e:  # noqa: BLE001 - malformed LUTs: say so, keep going
            meta["voi"] = f"ignored (malformed VOI LUT/window: {e})"
        else:
            if "VOILUTSequence" in ds:
                meta["voi"] = "VOI LUT sequence (first)"
            else:
                wc, ww = ds.WindowCenter, ds.WindowWidth
                wc = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
                ww = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
                meta["voi"] = {"window_center": wc, "window_width": ww}
    return out


@dataclass
class XrayConfig(GreyFrameConfig):
    pass


@register_modality
class xray(PatchImageModality):  # noqa: N801 - class name == registry key == module name
    """Radiographs and CT slices become **197 tokens** at B/16 through the same patch tokenizer as
    [image](image.md), after the grey levels are put through the DICOM display pipeline so that
    bright always means dense.

    ## Which files

    - **DICOM**: the magic `DICM` at byte 128 is an exclusive claim. Compressed transfer syntaxes
      decode through pydicom's plugins (JPEG baseline/lossless, JPEG-LS, JPEG 2000; RLE natively).
      A `.dcm` without the preamble is only `extension` evidence.
    - **PNG/JPEG radiographs** with a path hint — `xray` (also `x-ray`, `x_ray`), `cxr`, `chest`,
      `radiograph`, `radiography`, `mammogram` as a directory or name token (`refined` strength).

    ## From file to pixels

    1. DICOM: read one frame — a multi-frame object gives its **middle** frame, decoded alone (a
       representative slice without decoding the whole volume). Large elements are read lazily.
    2. The standard's grey-level pipeline: the modality LUT (rescale slope/intercept → e.g.
       Hounsfield units), then the VOI LUT or the first window centre/width (the window a
       radiologist would see), then **MONOCHROME1 inversion**, so that dense tissue is bright in
       every file whatever the scanner wrote.
    3. Robust min–max (1st–99th percentile) to [0, 1] — collimator edges and burnt-in labels are
       extreme values that would otherwise dominate the range.
    4. Three channels, then the image path (short side 224, centre crop, preset normalisation).

    ## Tokens, weights and pooling

    As [image](image.md): 197 tokens, `init=clip` (CLIP's front end, shared with image and
    infrared) or `seeded`; CLS pooling with CLIP weights, mean otherwise.

    ## Try it

    ```
    mtx tokenize ../shared/data/xray/nih_cxr14_00000001_000.png   # a PNG: the xray/ directory is the hint
    ```
    """

    name = "xray"
    extensions = (".dcm", ".dicom", ".dic")
    summary = "DICOM (incl. JPEG/JPEG-LS/JPEG 2000/RLE), X-ray PNG/JPEG with a path hint"
    tokens = "197 = 1 + 14x14"
    Config = XrayConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        if is_dicom(head):
            return Evidence(self.name, CLAIM, "DICOM magic 'DICM' at byte 128", "dicom")
        fmt = image_format(head)
        if fmt in ("PNG", "JPEG", "TIFF"):
            hint = path_hint(path, HINTS)
            if hint:
                return Evidence(self.name, REFINED, f"{fmt} with path hint {hint!r}", fmt.lower())
            return None
        if fmt is None and path.suffix.lower() in self.extensions:
            return Evidence(self.name, EXTENSION, f"extension {path.suffix.lower()} (no DICM preamble)", "dicom")
        return None

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, size: int = 256) -> list[Path]:
        """``n`` 8-bit grey PNGs under ``xray/`` (the path hint)."""
        from PIL import Image

        d = d / "xray"
        d.mkdir(exist_ok=True)
        rng, out = np.random.default_rng(2), []
        for i in range(n):
            a = rng.integers(0, 256, (size // 8, size // 8), dtype=np.uint8)
            p = d / f"cxr{i:05d}.png"
            Image.fromarray(a).resize((size, size), Image.BILINEAR).save(p)
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """A float TIFF under ``xray/`` whose every value is NaN."""
        from .image import nan_tiff

        return [nan_tiff(d / "xray")]

    def load(self, path: Path, cfg: XrayConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        known = sniffed_or_read(path, sniffed)
        fid = known.format or xray_format(known.head, path)
        if fid == "dicom":
            a, meta = read_dicom(path, cfg.size)
        elif fid is not None:
            a, meta = read_gray(path, image_format_name(fid), cfg.size)
            meta["invert"] = False
        else:
            raise DecodeError("neither DICOM nor an image container (PNG, JPEG, TIFF)")
        if a.ndim == 3:
            a = a.mean(axis=-1)
            meta["channels"] = "colour averaged to grey"
        scaled, stats = robust_minmax(a, cfg.lo_percentile, cfg.hi_percentile)
        if meta["invert"]:
            scaled = 1.0 - scaled  # MONOCHROME1: low values are bright
        yield self.grey_sample(scaled, stats, cfg.size, meta)
