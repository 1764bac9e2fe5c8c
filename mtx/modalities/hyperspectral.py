"""hyperspectral: .mat (v5, v7.3), ENVI .hdr + data, multi-band TIFF, NPY -> B + 1 tokens.

One token per band (the paper's principle): every band is scaled by its own robust range,
area-resized to 16x16 and projected by one shared Linear(256 -> D); a fixed sinusoidal term of
the band's wavelength in nm (or of its index when no wavelengths are known) tells the encoder
which band it is. More than ``max_bands`` bands are averaged into ``max_bands`` contiguous
spectral bins (adaptive average pooling of the maps and of the wavelengths), so the sequence
stays bounded. Cubes are read band chunk by band chunk (memory-mapped for ENVI and NPY, sliced
from HDF5 for v7.3), so the memory held is a chunk plus the 16x16 maps. A chunk is at most a
quarter of the per-sample memory budget (mtx.modalities._budget); a single band larger than that
is read at every s-th pixel in each direction (recorded). Containers read whole (MATLAB v5, TIFF)
are checked against the budget from their declared shape before they are read; a v7.3 dataset's
declared size against the bytes it stores.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtx.errors import DecodeError, MissingDependency
from mtx.settings import setting

from . import _budget
from ._base import (
    CLAIM,
    EXTENSION,
    REFINED,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    check_percentiles,
    quiet,
    seeded,
    sinusoidal,
    sniffed_or_read,
)
from ._registry import register_modality
from .image import image_format
from .infrared import path_hint

HINTS = ("hyperspectral", "hsi", "hyperspec", "spectral", "aviris", "envi")
MIN_BANDS = 16  # a .mat / NPY cube needs this many bands to be claimed
MIN_TIFF_BANDS = 5
DATA_EXTS = ("", ".raw", ".img", ".dat", ".bsq", ".bil", ".bip", ".sli", ".hsi")
CHUNK_VALUES = 1 << 24  # values per band chunk (64 MB as float32), at most a quarter of the budget
CHUNK_VALUE_BYTES = 32  # held per value of a band chunk: float32 copy, mask, percentile, scaled, tensor
MAX_WAVELENGTH_VALUES = 65536  # a wavelengths variable larger than this is not one (not read)
_MAT5 = b"MATLAB 5.0 MAT-file"
_MAT73 = b"MATLAB 7.3 MAT-file"
_NPY = b"\x93NUMPY"
_MAT_NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                "uint64"}
_ENVI_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 6: "c8", 9: "c16", 12: "u2", 13: "u4",
                14: "i8", 15: "u8"}
_WAVELENGTH_KEYS = ("wavelength", "wavelengths", "wl", "wavelength_nm", "lambda", "wave", "bands_nm")


# ---------------------------------------------------------------------------------------------
# A cube, read band chunk by band chunk
# ---------------------------------------------------------------------------------------------


@dataclass
class Cube:
    """A lazily read (H, W, B) cube: ``read(b0, b1)`` returns bands b0..b1-1 as [H, W, n]."""

    shape: tuple[int, int, int]
    dtype: str
    read: Callable[[int, int], np.ndarray]
    wavelengths: np.ndarray | None
    meta: dict[str, Any]
    close: Callable[[], None] = lambda: None


def _band_reader(arr: Any, band_axis: int, reverse: bool = False) -> tuple[tuple[int, int, int], Callable]:
    """Reader over a 3-D array-like (numpy, memmap, h5py dataset); ``reverse`` = MATLAB in HDF5
    (the dataset's axes are the MATLAB axes reversed)."""
    logical = tuple(arr.shape[::-1]) if reverse else tuple(arr.shape)
    spatial = [a for a in range(3) if a != band_axis]
    shape = (int(logical[spatial[0]]), int(logical[spatial[1]]), int(logical[band_axis]))

    def read(b0: int, b1: int, stride: int = 1) -> np.ndarray:
        phys = 2 - band_axis if reverse else band_axis
        idx = [slice(None, None, stride)] * 3
        idx[phys] = slice(b0, b1)
        a = np.asarray(arr[tuple(idx)])
        if reverse:
            a = a.transpose(2, 1, 0)
        return np.moveaxis(a, band_axis, -1)

    return shape, read


def _pick_band_axis(shape: tuple[int, ...], cfg_axis: int | None) -> int:
    if cfg_axis is not None:
        if not -3 <= cfg_axis < 3:
            raise DecodeError(f"band_axis {cfg_axis} is out of range for a 3-D cube {tuple(shape)}")
        return cfg_axis % 3
    return 2  # MATLAB / NumPy convention (H, W, B)


def _wavelengths_nm(values: Any, units: str | None, nbands: int, meta: dict) -> np.ndarray | None:
    """Band centres in nm, or None (with the reason in meta) when unusable."""
    if values is None:
        return None
    try:
        w = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        meta["wavelengths_ignored"] = "not numeric"
        return None
    if w.size != nbands:
        meta["wavelengths_ignored"] = f"{w.size} wavelengths for {nbands} bands"
        return None
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        meta["wavelengths_ignored"] = "non-finite or non-positive values"
        return None
    u = (units or "").strip().lower()
    if u in ("micrometers", "micrometer", "microns", "micron", "um", "µm"):
        w = w * 1000.0
    elif u in ("nanometers", "nanometer", "nm", ""):
        if not u and w.max() < 30:  # no units given and values like 0.4..2.5: micrometres
            w = w * 1000.0
            meta["wavelength_units_assumed"] = "micrometers"
    elif u in ("millimeters", "mm"):
        w = w * 1e6
    else:
        meta["wavelengths_ignored"] = f"units {units!r} are not a length"
        return None
    return w.astype(np.float32)


# -- ENVI ------------------------------------------------------------------------------------


def parse_envi_header(text: str) -> dict[str, str]:
    """``key = value`` pairs (keys lower-cased; ``{...}`` values may span lines)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    if not lines or not lines[0].strip().startswith("ENVI"):
        raise DecodeError("not an ENVI header (first line is not 'ENVI')")
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if "=" not in line or line.lstrip().startswith(";"):
            continue
        key, val = line.split("=", 1)
        val = val.strip()
        if val.startswith("{"):
            while "}" not in val and i < len(lines):
                val += "\n" + lines[i]
                i += 1
            val = val.strip()[1:].rsplit("}", 1)[0]
        out[key.strip().lower()] = val.strip()
    return out


def envi_data_file(header: Path) -> Path | None:
    """The data file beside an ENVI header: same stem, a common extension (or none)."""
    stem = header.with_suffix("")
    for ext in DATA_EXTS:
        for e in (ext, ext.upper()):
            cand = stem.with_name(stem.name + e) if e else stem
            if cand != header and cand.is_file():
                return cand
    return None


def _is_envi_header(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"ENVI"
    except OSError:
        return False


def read_envi(path: Path, cfg: "HyperspectralConfig") -> Cube:
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise DecodeError(f"cannot read ENVI header: {e}") from None
    h = parse_envi_header(text)
    try:
        samples, lines, bands = (int(h[k]) for k in ("samples", "lines", "bands"))
        dtype_code = int(h.get("data type", "0"))
        offset = int(h.get("header offset", "0") or 0)
        order = int(h.get("byte order", "0") or 0)
    except KeyError as e:
        raise DecodeError(f"ENVI header lacks the required field {e.args[0]!r}") from None
    except ValueError as e:
        raise DecodeError(f"ENVI header has a non-integer field: {e}") from None
    if "spectral library" in h.get("file type", "").lower():
        raise DecodeError("ENVI spectral library (a table of spectra), not an image cube")
    if dtype_code not in _ENVI_DTYPES:
        raise DecodeError(f"ENVI data type {dtype_code} is not supported")
    if min(samples, lines, bands) <= 0:
        raise DecodeError(f"ENVI header gives an empty cube ({lines} lines x {samples} samples x {bands} bands)")
    interleave = h.get("interleave", "bsq").strip().lower()
    if interleave not in ("bsq", "bil", "bip"):
        raise DecodeError(f"ENVI interleave {interleave!r} is not bsq, bil or bip")
    data = envi_data_file(path)
    if data is None:
        looked = ", ".join(path.with_suffix(e).name for e in DATA_EXTS)
        raise DecodeError(f"ENVI data file not found beside the header (looked for {looked})")
    dt = np.dtype(("<" if order == 0 else ">") + _ENVI_DTYPES[dtype_code])
    need = offset + samples * lines * bands * dt.itemsize
    size = data.stat().st_size
    if size < need:
        raise DecodeError(f"ENVI data file {data.name} holds {size:,} bytes, the header needs {need:,} "
                          "(truncated?)")
    layout = {"bsq": (bands, lines, samples), "bil": (lines, bands, samples), "bip": (lines, samples, bands)}
    mm = np.memmap(data, dtype=dt, mode="r", offset=offset, shape=layout[interleave])
    band_axis = {"bsq": 0, "bil": 1, "bip": 2}[interleave]
    shape, read = _band_reader(mm, band_axis)
    meta: dict[str, Any] = {"format": "ENVI", "data_file": data.name, "interleave": interleave,
                            "byte_order": "big" if order else "little",
                            "byte_order_from": "header" if "byte order" in h else "default (little)",
                            "header_offset": offset, "envi_data_type": dtype_code}
    wl = h.get("wavelength")
    vals = [v for v in re.split(r"[,\s]+", wl) if v] if wl else None
    waves = _wavelengths_nm(vals, h.get("wavelength units"), bands, meta) if vals else None
    return Cube(shape, dt.str, read, waves, meta)


# -- MATLAB ----------------------------------------------------------------------------------


def _mat5_index(path: Path, head: bytes):
    """The variables of a v5 file from their headers alone (bounded: see _mat5), or None for a
    v4 file (no text header)."""
    from . import _mat5

    return _mat5.list_variables(path) if _mat5.is_v5(head) else None


def _mat5_vars(path: Path, head: bytes, index=None) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, class) of every variable: v5 from the headers, v4 through scipy."""
    try:
        index = index if index is not None else _mat5_index(path, head)
        if index is not None:
            return [(v.name, v.shape, v.cls) for v in index]
        import scipy.io

        return [(n, tuple(s), c) for n, s, c in scipy.io.whosmat(str(path))]
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - scipy raises many types on corrupt files
        raise DecodeError(f"corrupt MATLAB v5 file: {e}") from None


def _load_mat_variable(path: Path, name: str, index=None) -> np.ndarray:
    """One variable of a v5 (bounded inflate, see _mat5: ``index`` from :func:`_mat5_index`) or
    v4 (scipy) file."""
    from . import _mat5

    if index is not None:
        var = next((v for v in index if v.name == name), None)
        if var is None:
            raise DecodeError(f"variable {name!r} not found in the .mat file")
        return _mat5.read(path, var)
    import scipy.io

    return scipy.io.loadmat(str(path), variable_names=[name])[name]


def _mat73_vars(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    try:
        import h5py
    except ImportError:  # pragma: no cover - dependency
        raise MissingDependency("h5py is needed for MATLAB v7.3 files; pip install h5py") from None
    out: list[tuple[str, tuple[int, ...], str]] = []
    try:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and not name.startswith("#") and obj.dtype.kind in "iufb":
                    out.append((name, tuple(obj.shape[::-1]), str(obj.dtype)))
            f.visititems(visit)
    except OSError as e:
        raise DecodeError(f"corrupt MATLAB v7.3 (HDF5) file: {e}") from None
    return out


def mat_variables(path: Path, head: bytes, index=None) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, MATLAB shape, class) of the numeric variables of a .mat file (``index``: the v5
    headers already read)."""
    if head.startswith(_MAT73):
        return _mat73_vars(path)
    return [v for v in _mat5_vars(path, head, index) if v[2] in _MAT_NUMERIC or v[2] == "logical"]


def largest_cube(vars_: list[tuple[str, tuple[int, ...], str]], key: str | None):
    """The variable named ``key``, else the largest 3-D numeric one (None if there is none)."""
    if key is not None:
        for v in vars_:
            if v[0] == key:
                return v
        names = ", ".join(v[0] for v in vars_) or "none"
        raise DecodeError(f"variable {key!r} not found in the .mat file (numeric variables: {names})")
    cubes = [v for v in vars_ if len(v[1]) == 3]
    if not cubes:
        return None
    return max(cubes, key=lambda v: int(np.prod(v[1], dtype=np.int64)))


def _check_hdf5_dataset(ds, name: str) -> None:
    """A v7.3 dataset's declared size against the bytes it stores, and its chunks (each read and
    decompressed whole by HDF5) against the budget, before any is read."""
    declared = int(np.prod(ds.shape, dtype=np.int64)) * ds.dtype.itemsize
    stored = int(ds.id.get_storage_size())
    filters = set(ds._filters) if getattr(ds, "_filters", None) else set()
    ratio = 1 if not filters else (_budget.DEFLATE_RATIO if filters <= {"gzip", "shuffle", "fletcher32"}
                                   else _budget.ANY_RATIO)
    _budget.check_stored(declared, stored, ratio, f"MATLAB v7.3 dataset {name!r} {tuple(ds.shape[::-1])}")
    if ds.chunks:
        n = int(np.prod(ds.chunks, dtype=np.int64))
        _budget.check(n, f"values per HDF5 chunk of {name!r} (chunks {ds.chunks} are read whole)",
                      4 * ds.dtype.itemsize)


def _mat_wavelengths(names: list[str], nbands: int, get: Callable[[str], Any], meta: dict,
                     sizes: dict[str, int] | None = None):
    for n in names:
        if sizes is not None and sizes.get(n, 0) > MAX_WAVELENGTH_VALUES:
            continue  # far more values than any band list: not read
        if n.lower().split("/")[-1] in _WAVELENGTH_KEYS:
            try:
                vals = get(n)
            except Exception:  # noqa: BLE001 - an odd wavelengths variable is not fatal
                continue
            w = _wavelengths_nm(vals, None, nbands, meta)
            if w is not None:
                meta["wavelengths_from"] = n
                return w
    return None


def read_mat(path: Path, head: bytes, cfg: "HyperspectralConfig") -> Cube:
    index = None if head.startswith(_MAT73) else _mat5_index(path, head)
    vars_ = mat_variables(path, head, index)
    best = largest_cube(vars_, cfg.key)
    listing = ", ".join(f"{n} {'x'.join(map(str, s))} {c}" for n, s, c in vars_) or "none"
    if best is None or len(best[1]) != 3:
        raise DecodeError(f".mat file has no 3-D numeric array to read as a cube (numeric variables: {listing}); "
                          "pass key=NAME (--hsi-key) to choose one")
    name, mshape, cls = best
    band_axis = _pick_band_axis(mshape, cfg.band_axis)
    meta: dict[str, Any] = {"variable": name, "variables": listing}
    if head.startswith(_MAT73):
        import h5py

        f = h5py.File(path, "r")  # closed by load() through Cube.close
        ds = f[name]
        try:
            _check_hdf5_dataset(ds, name)
        except DecodeError:
            f.close()
            raise
        shape, read = _band_reader(ds, band_axis, reverse=True)
        meta["format"] = "MATLAB v7.3 (HDF5)"

        def get(n):
            return np.asarray(f[n])
        waves = _mat_wavelengths([v[0] for v in vars_ if v[0] != name], shape[2], get, meta, _sizes(vars_))
        dtype = str(ds.dtype)
        meta["band_axis"] = band_axis
        return Cube(shape, dtype, read, waves, meta, f.close)
    else:

        n = int(np.prod(mshape, dtype=np.int64))
        itemsize = np.dtype({"double": "f8", "single": "f4", "int8": "i1", "uint8": "u1", "int16": "i2",
                             "uint16": "u2", "int32": "i4", "uint32": "u4", "int64": "i8", "uint64": "u8",
                             "logical": "u1"}.get(cls, "f8")).itemsize
        # A v5 variable is stored whole (zlib-compressed or not): it cannot expand beyond deflate's
        # ratio; the stored bytes and the array of its class are held at once.
        _budget.check_stored(n * itemsize, path.stat().st_size, _budget.DEFLATE_RATIO, f".mat variable {name!r}")
        _budget.check(n, f"values in .mat variable {name!r} {'x'.join(map(str, mshape))} {cls} (MATLAB v5 is read "
                      "whole)", 2 * itemsize + 1)
        try:
            arr = _load_mat_variable(path, name, index)
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - scipy raises many types on corrupt files
            raise DecodeError(f"cannot read variable {name!r} from the .mat file: {e}") from None
        if arr.ndim != 3 or arr.dtype.kind not in "iufb":
            raise DecodeError(f".mat variable {name!r} is {arr.dtype} {arr.shape}, not a numeric 3-D array")
        shape, read = _band_reader(arr, band_axis)
        meta["format"] = "MATLAB v5" if head.startswith(_MAT5) else "MATLAB v4"
        other = [v[0] for v in vars_ if v[0] != name]

        def get(n):
            return _load_mat_variable(path, n, index)
        waves = _mat_wavelengths(other, shape[2], get, meta, _sizes(vars_))
        dtype = str(arr.dtype)
    meta["band_axis"] = band_axis
    return Cube(shape, dtype, read, waves, meta)


def _sizes(vars_: list[tuple[str, tuple[int, ...], str]]) -> dict[str, int]:
    return {n: int(np.prod(s, dtype=np.int64)) for n, s, _ in vars_}


# -- TIFF, NPY ---------------------------------------------------------------------------------


def tiff_bands(path: Path) -> int | None:
    try:
        import tifffile

        with quiet(), tifffile.TiffFile(path) as tf:
            return int(tf.pages[0].samplesperpixel)
    except Exception:  # noqa: BLE001 - sniffing must not raise on odd TIFFs
        return None


def read_tiff(path: Path, cfg: "HyperspectralConfig") -> Cube:
    try:
        import tifffile
    except ImportError:  # pragma: no cover - dependency
        raise MissingDependency("tifffile is needed for TIFF; pip install tifffile imagecodecs") from None
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            axes = page.axes
            n = int(np.prod(page.shape, dtype=np.int64))
            item = np.dtype(page.dtype).itemsize if page.dtype is not None else 8
            _budget.check(n, f"values in a TIFF page of shape {tuple(page.shape)} ({axes}; a page is decoded whole)",
                          2 * item + 1)
            a = page.asarray()
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for corrupt files
        raise DecodeError(f"corrupt or unsupported TIFF: {e}") from None
    if a.ndim != 3:
        raise DecodeError(f"TIFF first page is {a.shape} ({axes}), not a multi-band image")
    band_axis = cfg.band_axis % 3 if cfg.band_axis is not None else (axes.index("S") if "S" in axes else 2)
    shape, read = _band_reader(a, band_axis)
    return Cube(shape, str(a.dtype), read, None, {"format": "TIFF", "axes": axes, "band_axis": band_axis})


def cube_format(head: bytes, path: Path) -> str | None:
    """envi | mat73 | mat5 | mat | tiff | bigtiff | npy: the container ``load`` reads, or None."""
    if head.startswith(b"ENVI"):
        return "envi"
    if head.startswith(_MAT73):
        return "mat73"
    if head.startswith(_MAT5):
        return "mat5"
    if path.suffix.lower() == ".mat":
        return "mat"  # v4 files have no text header
    fmt = image_format(head)
    if fmt in ("TIFF", "BigTIFF"):
        return fmt.lower()
    if head.startswith(_NPY):
        return "npy"
    return None


def npy_shape(head: bytes) -> tuple[int, ...] | None:
    """Shape from an NPY header in ``head`` (no pickle, no eval)."""
    if not head.startswith(_NPY) or len(head) < 10:
        return None
    m = re.search(rb"'shape':\s*\(([^)]*)\)", head[:4096])
    if not m:
        return None
    try:
        return tuple(int(x) for x in m.group(1).decode().replace(" ", "").split(",") if x)
    except ValueError:
        return None


def read_npy(path: Path, cfg: "HyperspectralConfig") -> Cube:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DecodeError(f"cannot read NPY (object arrays are refused): {e}") from None
    except OSError as e:
        raise DecodeError(f"corrupt NPY file: {e}") from None
    if a.ndim != 3 or a.dtype.kind not in "iufb":
        raise DecodeError(f"NPY array is {a.dtype} {a.shape}; a cube needs a numeric (H, W, B) array")
    band_axis = _pick_band_axis(a.shape, cfg.band_axis)
    shape, read = _band_reader(a, band_axis)
    return Cube(shape, str(a.dtype), read, None, {"format": "NPY", "band_axis": band_axis})


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------


def band_maps(cube: Cube, cfg: "HyperspectralConfig") -> tuple[np.ndarray, dict]:
    """Per-band robust min-max and area resize: [B, grid, grid] float32 (chunked over bands)."""
    h, w, b = cube.shape
    most = min(CHUNK_VALUES, _budget.allowed(CHUNK_VALUE_BYTES, 0.25))  # values held per chunk
    stride = max(1, int(np.ceil(np.sqrt(h * w / most)))) if h * w > most else 1
    if stride > 1:  # one band alone is over the budget: every stride-th pixel (area maps follow)
        h, w = -(-h // stride), -(-w // stride)
    step = max(1, most // max(1, h * w))
    out = np.empty((b, cfg.grid, cfg.grid), dtype=np.float32)
    constant, nonfinite, lo_all, hi_all = 0, 0, np.inf, -np.inf
    for b0 in range(0, b, step):
        b1 = min(b, b0 + step)
        c = np.asarray(cube.read(b0, b1, stride) if stride > 1 else cube.read(b0, b1))
        if c.dtype.kind == "c":
            c = np.abs(c)
        c = c.astype(np.float32).reshape(h * w, b1 - b0)
        finite = np.isfinite(c)
        if finite.all():
            lo, hi = np.percentile(c, [cfg.lo_percentile, cfg.hi_percentile], axis=0)
        else:
            nonfinite += int((~finite).sum())
            c = np.where(finite, c, np.nan)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands
                lo, hi = np.nanpercentile(c, [cfg.lo_percentile, cfg.hi_percentile], axis=0)
            lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
        scale = hi - lo
        constant += int((scale <= 0).sum())
        scale[scale <= 0] = 1.0
        lo_all, hi_all = min(lo_all, float(lo.min())), max(hi_all, float(hi.max()))
        x = np.clip((np.nan_to_num(c, nan=0.0) - lo) / scale, 0.0, 1.0)
        t = torch.from_numpy(np.ascontiguousarray(x.T.reshape(b1 - b0, 1, h, w)))
        out[b0:b1] = F.interpolate(t, size=(cfg.grid, cfg.grid), mode="area")[:, 0].numpy()
    if nonfinite == h * w * b:
        raise DecodeError(f"no finite values: all {nonfinite:,} values of the cube are NaN/inf")
    if constant == b:
        raise DecodeError(f"every band is constant (values {lo_all:.6g}..{hi_all:.6g}): nothing is left after "
                          "the per-band min-max")
    stats = {"per_band": f"robust min-max ({cfg.lo_percentile:g}-{cfg.hi_percentile:g} percentiles)",
             "range_lo_min": lo_all, "range_hi_max": hi_all, "constant_bands": constant}
    if nonfinite:
        stats["nonfinite_values"] = nonfinite
        stats["nonfinite_fill"] = "ignored by the percentiles, then replaced by 0 before the min-max"
    if stride > 1:
        stats["spatial_subsample"] = (f"every {stride}th pixel in each direction: one {cube.shape[0]}x"
                                      f"{cube.shape[1]} band is over the per-sample memory budget")
    return out, stats


def spectral_pool(maps: np.ndarray, pos: np.ndarray, max_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Average B band maps (and their positions) into ``max_bands`` contiguous spectral bins."""
    b, g, _ = maps.shape
    t = torch.from_numpy(maps).reshape(b, g * g).T[None]  # [1, g*g, B]
    pooled = F.adaptive_avg_pool1d(t, max_bands)[0].T.reshape(max_bands, g, g)
    p = F.adaptive_avg_pool1d(torch.from_numpy(pos.astype(np.float32))[None, None], max_bands)[0, 0]
    return pooled.contiguous().numpy(), p.numpy()


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


class SpectralBandTokenizer(Tokenizer):
    """One token per band: Linear(g*g -> D) of the band map + sinusoid(band position) + CLS + pre-LN.

    ``bands`` [R, B, g, g] float in [0, 1], ``band_pos`` [R, B] (nm or index) -> [R, B + 1, D].
    """

    def __init__(self, spec, seed: int, grid: int):
        super().__init__()
        d = spec.dim
        with seeded(seed):
            self.proj = nn.Linear(grid * grid, d)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.dim = d
        self.init, self.seed = "seeded", seed

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        bands = inputs["bands"].float()
        r, b = bands.shape[:2]
        x = self.proj(bands.reshape(r, b, -1)) + sinusoidal(inputs["band_pos"].float(), self.dim)
        x = torch.cat([self.cls.expand(r, 1, -1), x], dim=1)
        return Tokens(self.norm_pre(x), None, True)


# ---------------------------------------------------------------------------------------------


@dataclass
class HyperspectralConfig(ModalityConfig):
    key: str | None = setting(None)  # the .mat variable to read (default: the largest 3-D numeric array)
    band_axis: int | None = setting(None, lo=-3, hi=2)  # default: ENVI/TIFF layout, else the last axis (H, W, B)
    max_bands: int = setting(512, lo=1)  # more bands are averaged into this many spectral bins
    grid: int = setting(16, lo=1, hi=1024)  # each band is area-resized to grid x grid
    lo_percentile: float = setting(1.0, lo=0, hi=100)  # per-band robust min-max: this percentile maps to 0...
    hi_percentile: float = setting(99.0, lo=0, hi=100)  # ... and this one to 1

    def check(self) -> None:
        check_percentiles(self)


@register_modality
class hyperspectral(Modality):  # noqa: N801 - class name == registry key == module name
    """A hyperspectral cube becomes **one token per band** plus CLS — B + 1 tokens (Indian Pines,
    200 bands: 201), at most 512 + 1. This is the paper's principle for spectral data: the
    sequence axis is the spectrum.

    ## Which files

    - **ENVI**: a `.hdr` starting with `ENVI` (a claim) + its data file beside it (same stem, a
      common extension or none; the data file is not embedded on its own). Byte order, interleave
      (BSQ/BIL/BIP), header offset and wavelengths come from the header.
    - **MATLAB `.mat`**, v5 (scipy) and v7.3 (HDF5, via h5py): the largest 3-D numeric variable, or
      `-O hyperspectral.key=NAME`; claimed when that variable has ≥ 16 bands.
    - **Multi-band TIFF** with ≥ 5 samples per pixel (tifffile).
    - **NPY** cubes (H, W, B ≥ 16) with a path hint (`hyperspectral`, `hsi`, `spectral`, `aviris`,
      `envi`). Headers are parsed without pickle or eval.

    ## From cube to band maps

    1. Bands last (ENVI/TIFF layout, else the last axis, or `band_axis`).
    2. The cube is read **band chunk by band chunk** — memory-mapped for ENVI and NPY, sliced from
       HDF5 for v7.3 — so memory holds one chunk plus the small maps, whatever the cube size. A chunk
       is at most a quarter of the per-sample memory budget (`MTX_MAX_SAMPLE_MEMORY`); one band larger
       than that is read at every s-th pixel (`spatial_subsample`). MATLAB v5 and TIFF cubes, read
       whole, are refused over the budget from their declared shape before any byte is inflated.
    3. Each band gets its own robust min–max (1st–99th percentile): bands differ in radiance by
       orders of magnitude, and one shared range would leave most of them flat.
    4. Each band is area-resized to 16 × 16 (area averaging, not point sampling, so the map is a
       faithful summary of the band).
    5. More than 512 bands are averaged into 512 contiguous spectral bins (the maps and their
       wavelengths alike), recorded — the sequence stays bounded without dropping any band.

    ## Tokens

    `SpectralBandTokenizer`: one shared Linear(16·16 → D) maps each band's 16 × 16 map to a token; a
    fixed **sinusoidal term of the band's wavelength in nm** (or of its index when the file gives no
    usable wavelengths) tells the encoder which band it is — so sensors with different band sets
    place the same wavelength at the same position; CLS; pre-LayerNorm.

    ## Weights and pooling

    `init=seeded`; **mean** pooling over the band tokens.

    ## Try it

    ```
    mtx tokenize ../shared/data/hyperspectral/corn-kernel-hyperspectral.hdr
    ```
    """

    name = "hyperspectral"
    extensions = (".mat", ".hdr")
    summary = "MATLAB .mat (v5/v7.3), ENVI .hdr + data, multi-band TIFF, NPY cubes"
    tokens = "B + 1 (one per band, <= 512 + 1; Indian Pines 201)"
    clip_init = False
    Config = HyperspectralConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        fmt = cube_format(head, path)
        if fmt == "envi":
            return Evidence(self.name, CLAIM, "ENVI header magic 'ENVI'", fmt)
        if fmt in ("mat5", "mat73", "mat"):
            try:
                with quiet():
                    vars_ = mat_variables(path, head)
            except DecodeError:
                return Evidence(self.name, EXTENSION, "MATLAB .mat header (variables unreadable)", fmt)
            best = largest_cube(vars_, None)
            if best is not None and len(best[1]) == 3 and best[1][2] >= MIN_BANDS:
                return Evidence(self.name, REFINED, f".mat variable {best[0]!r} is a "
                                f"{'x'.join(map(str, best[1]))} cube", fmt)
            return Evidence(self.name, EXTENSION, f".mat file without a 3-D array of >= {MIN_BANDS} bands",
                            fmt)
        if fmt in ("tiff", "bigtiff"):
            n = tiff_bands(path)
            if n is not None and n >= MIN_TIFF_BANDS:
                return Evidence(self.name, REFINED, f"TIFF with {n} samples per pixel", fmt)
            return None
        shape = npy_shape(head)
        hint = path_hint(path, HINTS) if shape is not None else None
        if hint and len(shape) == 3 and shape[2] >= MIN_BANDS:
            return Evidence(self.name, REFINED, f"NPY {shape} cube with path hint {hint!r}", "npy")
        if hint and len(shape) != 3:
            # Not a cube, but named as one: claimed just below REFINED (a time_series/imu hint
            # still wins) so the load says what is wrong instead of a generic point reading.
            return Evidence(self.name, REFINED - 1, f"NPY {shape} with path hint {hint!r} "
                            "(not a 3-D cube: refused at load)", "npy")
        return None

    def companions(self, path: Path) -> list[Path]:
        if path.suffix.lower() == ".hdr" and _is_envi_header(path):
            data = envi_data_file(path)
            return [data] if data is not None else []
        return []

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, hw: int = 32, bands: int = 100) -> list[Path]:
        """``n`` MATLAB v5 ``.mat`` cubes (``hw`` x ``hw`` x ``bands``)."""
        from scipy.io import savemat

        rng, out = np.random.default_rng(6), []
        for i in range(n):
            p = d / f"cube{i:05d}.mat"
            savemat(p, {"cube": rng.random((hw, hw, bands)).astype(np.float32)})
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """Cubes under ``hsi/``: every value NaN; every band constant."""
        (d / "hsi").mkdir(exist_ok=True)
        nan, flat = d / "hsi" / "nan_cube.npy", d / "hsi" / "flat_cube.npy"
        np.save(nan, np.full((8, 8, 16), np.nan, np.float32))
        np.save(flat, np.ones((8, 8, 16), np.float32))
        return [nan, flat]

    def load(self, path: Path, cfg: HyperspectralConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        known = sniffed_or_read(path, sniffed)
        fmt = known.format or cube_format(known.head, path)
        if fmt == "envi":
            cube = read_envi(path, cfg)
        elif fmt in ("mat5", "mat73", "mat"):
            cube = read_mat(path, known.head, cfg)
        elif fmt in ("tiff", "bigtiff"):
            cube = read_tiff(path, cfg)
        elif fmt == "npy":
            cube = read_npy(path, cfg)
        else:
            raise DecodeError("not a hyperspectral container (ENVI header, .mat, TIFF or NPY)")
        h, w, b = cube.shape
        if min(h, w, b) <= 0:
            raise DecodeError(f"empty cube {cube.shape}")
        try:
            maps, stats = band_maps(cube, cfg)
        finally:
            cube.close()
        meta = dict(cube.meta)
        meta.update(shape_hwb=[h, w, b], dtype=cube.dtype, normalisation=stats,
                    preprocess=f"per-band robust min-max, area resize to {cfg.grid}x{cfg.grid}")
        if cube.wavelengths is not None:
            pos = cube.wavelengths.astype(np.float32)
            meta["band_positions"] = "wavelength_nm"
            meta["wavelength_range_nm"] = [round(float(pos.min()), 3), round(float(pos.max()), 3)]
        else:
            pos = np.arange(b, dtype=np.float32)
            meta["band_positions"] = "index"
        if b > cfg.max_bands:
            maps, pos = spectral_pool(maps, pos, cfg.max_bands)
            meta["spectral_resampling"] = f"{b} bands averaged into {cfg.max_bands} contiguous bins"
        meta["tokens"] = int(maps.shape[0]) + 1
        yield Sample("", {"bands": maps[None], "band_pos": pos[None]}, meta)

    def cost(self, sample: Sample, spec, cfg) -> int:
        return 1 + int(sample.arrays["bands"].shape[1])

    def tokenizer(self, spec, front, cfg: HyperspectralConfig):
        return SpectralBandTokenizer(spec, self.seed(spec, cfg), cfg.grid)
