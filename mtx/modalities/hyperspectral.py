"""hyperspectral: .mat (v5, v7.3), ENVI .hdr + data, multi-band TIFF, NPY -> B + 1 tokens.

One token per band (the paper's principle): every band is scaled by its own robust range,
area-resized to 16x16 and projected by one shared Linear(256 -> D); a fixed sinusoidal term of
the band's wavelength in nm (or of its index when no wavelengths are known) tells the encoder
which band it is. More than ``max_bands`` bands are averaged into ``max_bands`` contiguous
spectral bins (adaptive average pooling of the maps and of the wavelengths), so the sequence
stays bounded. Cubes are read band chunk by band chunk (memory-mapped for ENVI and NPY, sliced
from HDF5 for v7.3), so the memory held is a chunk plus the 16x16 maps.
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
    seeded,
    sinusoidal,
)
from ._registry import register_modality
from .image import image_format
from .infrared import path_hint

HINTS = ("hyperspectral", "hsi", "hyperspec", "spectral", "aviris", "envi")
MIN_BANDS = 16  # a .mat / NPY cube needs this many bands to be claimed
MIN_TIFF_BANDS = 5
DATA_EXTS = ("", ".raw", ".img", ".dat", ".bsq", ".bil", ".bip", ".sli", ".hsi")
CHUNK_VALUES = 1 << 24  # values per band chunk (64 MB as float32)
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

    def read(b0: int, b1: int) -> np.ndarray:
        phys = 2 - band_axis if reverse else band_axis
        idx = [slice(None)] * 3
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


def _mat5_vars(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    import scipy.io

    try:
        return [(n, tuple(s), c) for n, s, c in scipy.io.whosmat(str(path))]
    except Exception as e:  # noqa: BLE001 - scipy raises many types on corrupt files
        raise DecodeError(f"corrupt MATLAB v5 file: {e}") from None


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


def mat_variables(path: Path, head: bytes) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, MATLAB shape, class) of the numeric variables of a .mat file."""
    if head.startswith(_MAT73):
        return _mat73_vars(path)
    return [v for v in _mat5_vars(path) if v[2] in _MAT_NUMERIC or v[2] == "logical"]


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


def _mat_wavelengths(names: list[str], nbands: int, get: Callable[[str], Any], meta: dict):
    for n in names:
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
    vars_ = mat_variables(path, head)
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
        shape, read = _band_reader(ds, band_axis, reverse=True)
        meta["format"] = "MATLAB v7.3 (HDF5)"

        def get(n):
            return np.asarray(f[n])
        waves = _mat_wavelengths([v[0] for v in vars_ if v[0] != name], shape[2], get, meta)
        dtype = str(ds.dtype)
        meta["band_axis"] = band_axis
        return Cube(shape, dtype, read, waves, meta, f.close)
    else:
        import scipy.io

        try:
            arr = scipy.io.loadmat(str(path), variable_names=[name])[name]
        except Exception as e:  # noqa: BLE001 - scipy raises many types on corrupt files
            raise DecodeError(f"cannot read variable {name!r} from the .mat file: {e}") from None
        if arr.ndim != 3 or arr.dtype.kind not in "iufb":
            raise DecodeError(f".mat variable {name!r} is {arr.dtype} {arr.shape}, not a numeric 3-D array")
        shape, read = _band_reader(arr, band_axis)
        meta["format"] = "MATLAB v5" if head.startswith(_MAT5) else "MATLAB v4"
        other = [v[0] for v in vars_ if v[0] != name]

        def get(n):
            return scipy.io.loadmat(str(path), variable_names=[n])[n]
        waves = _mat_wavelengths(other, shape[2], get, meta)
        dtype = str(arr.dtype)
    meta["band_axis"] = band_axis
    return Cube(shape, dtype, read, waves, meta)


# -- TIFF, NPY ---------------------------------------------------------------------------------


def tiff_bands(path: Path) -> int | None:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
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
            a = page.asarray()
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for corrupt files
        raise DecodeError(f"corrupt or unsupported TIFF: {e}") from None
    if a.ndim != 3:
        raise DecodeError(f"TIFF first page is {a.shape} ({axes}), not a multi-band image")
    band_axis = cfg.band_axis % 3 if cfg.band_axis is not None else (axes.index("S") if "S" in axes else 2)
    shape, read = _band_reader(a, band_axis)
    return Cube(shape, str(a.dtype), read, None, {"format": "TIFF", "axes": axes, "band_axis": band_axis})


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
    step = max(1, CHUNK_VALUES // max(1, h * w))
    out = np.empty((b, cfg.grid, cfg.grid), dtype=np.float32)
    constant, nonfinite, lo_all, hi_all = 0, 0, np.inf, -np.inf
    for b0 in range(0, b, step):
        b1 = min(b, b0 + step)
        c = np.asarray(cube.read(b0, b1))
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
    stats = {"per_band": f"robust min-max ({cfg.lo_percentile:g}-{cfg.hi_percentile:g} percentiles)",
             "range_lo_min": lo_all, "range_hi_max": hi_all, "constant_bands": constant}
    if nonfinite:
        stats["nonfinite_values"] = nonfinite
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
    key: str | None = None  # --hsi-key: the .mat variable (default: the largest 3-D numeric array)
    band_axis: int | None = None  # default: ENVI/TIFF layout, else the last axis (H, W, B)
    max_bands: int = 512  # more bands are averaged into this many spectral bins
    grid: int = 16  # each band is area-resized to grid x grid
    lo_percentile: float = 1.0  # per-band robust min-max range
    hi_percentile: float = 99.0


@register_modality
class hyperspectral(Modality):  # noqa: N801 - class name == registry key == module name
    name = "hyperspectral"
    extensions = (".mat", ".hdr")
    summary = "MATLAB .mat (v5/v7.3), ENVI .hdr + data, multi-band TIFF, NPY cubes"
    tokens = "B + 1 (one per band, <= 512 + 1; Indian Pines 201)"
    clip_init = False
    Config = HyperspectralConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        if head.startswith(b"ENVI"):
            return Evidence(self.name, CLAIM, "ENVI header magic 'ENVI'")
        if head.startswith(_MAT5) or head.startswith(_MAT73) or path.suffix.lower() == ".mat":
            try:
                vars_ = mat_variables(path, head)
            except DecodeError:
                return Evidence(self.name, EXTENSION, "MATLAB .mat header (variables unreadable)")
            best = largest_cube(vars_, None)
            if best is not None and len(best[1]) == 3 and best[1][2] >= MIN_BANDS:
                return Evidence(self.name, REFINED, f".mat variable {best[0]!r} is a "
                                f"{'x'.join(map(str, best[1]))} cube")
            return Evidence(self.name, EXTENSION, f".mat file without a 3-D array of >= {MIN_BANDS} bands")
        fmt = image_format(head)
        if fmt in ("TIFF", "BigTIFF"):
            n = tiff_bands(path)
            if n is not None and n >= MIN_TIFF_BANDS:
                return Evidence(self.name, REFINED, f"TIFF with {n} samples per pixel")
            return None
        shape = npy_shape(head)
        hint = path_hint(path, HINTS) if shape is not None else None
        if hint and len(shape) == 3 and shape[2] >= MIN_BANDS:
            return Evidence(self.name, REFINED, f"NPY {shape} cube with path hint {hint!r}")
        if hint and len(shape) != 3:
            # Not a cube, but named as one: claimed just below REFINED (a time_series/imu hint
            # still wins) so the load says what is wrong instead of a generic point reading.
            return Evidence(self.name, REFINED - 1, f"NPY {shape} with path hint {hint!r} "
                            "(not a 3-D cube: refused at load)")
        return None

    def companions(self, path: Path) -> list[Path]:
        if path.suffix.lower() == ".hdr" and _is_envi_header(path):
            data = envi_data_file(path)
            return [data] if data is not None else []
        return []

    def load(self, path: Path, cfg: HyperspectralConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        with open(path, "rb") as f:
            head = f.read(4096)
        if head.startswith(b"ENVI"):
            cube = read_envi(path, cfg)
        elif head.startswith(_MAT5) or head.startswith(_MAT73) or path.suffix.lower() == ".mat":
            cube = read_mat(path, head, cfg)  # v4 files have no text header
        elif image_format(head) in ("TIFF", "BigTIFF"):
            cube = read_tiff(path, cfg)
        elif head.startswith(_NPY):
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
