"""Arrays of points: NPY and NPZ (N, >=3) or records with x/y/z fields (any case, extra fields
such as intensity ignored), KITTI velodyne ``.bin``.

Never unpickles (``allow_pickle=False``); NPY is memory-mapped through the open handle and
read in chunks, an NPZ member is read whole (it is compressed) up to 4 GiB.
"""
from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...errors import DecodeError
from .base import CHUNK, Reader, xyz_cols
from .detect import cloud_array, npy_header

MAX_DECOMPRESSED = 4 << 30
NPZ_KEYS = ("points", "point_cloud", "pointcloud", "xyz", "pos", "pc", "coords", "vertices",
            "data", "arr_0")


def _xyz(a: np.ndarray, what: str) -> np.ndarray:
    """The (N, >=3) view of an array (structured: its x/y/z fields), or a DecodeError."""
    if a.dtype.names:
        names = list(a.dtype.names)
        cols = xyz_cols(names, f"{what} structured array")
        return np.stack([a[names[c]] for c in cols], axis=-1)
    if a.dtype.kind not in "fiub":
        raise DecodeError(f"{what} has dtype {a.dtype}, expected numbers")
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[1] < 3:
        raise DecodeError(f"{what} has shape {tuple(a.shape)}, expected (N, >=3) points")
    return a


def array_chunks(a: np.ndarray, what: str, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    if a.dtype.names:  # records: the x/y/z fields of each chunk (a memory map is never read whole)
        fields = xyz_fields(a.dtype, what)
        a = a.reshape(-1)
        for i in range(0, len(a), chunk):
            part = a[i: i + chunk]
            yield np.stack([np.asarray(part[f], dtype=np.float64) for f in fields], axis=-1)
        return
    a = _xyz(a, what)
    for i in range(0, len(a), chunk):
        yield np.asarray(a[i: i + chunk, :3], dtype=np.float64)


def xyz_fields(dtype: np.dtype, what: str) -> list[str]:
    """The names of a record dtype's x, y, z fields (any case), which must be plain numbers."""
    names = list(dtype.names or ())
    fields = [names[c] for c in xyz_cols(names, f"{what} structured array")]
    for f in fields:
        sub = dtype.fields[f][0]
        if sub.kind not in "fiu" or sub.shape:
            raise DecodeError(f"{what} field {f!r} has dtype {sub}, expected numbers")
    return fields


class NpyReader(Reader):
    format = "npy"

    def __init__(self, *args):
        super().__init__(*args)
        src = io.BytesIO(self.head)
        h = npy_header(src)
        if h is None:  # a header longer than the sniffed head
            h = npy_header(self.rewind(0))
            offset = self.f.tell() if h is not None else 0
        else:
            offset = src.tell()
        if h is None:
            raise DecodeError("corrupt NPY header")
        self.shape, self.fortran, self.dtype = h
        self.offset = offset
        if self.dtype.hasobject:
            raise DecodeError("NPY holds Python objects; refusing to unpickle (allow_pickle=False)")
        self.meta = {"array_shape": list(self.shape), "array_dtype": str(self.dtype)}
        if self.dtype.names:
            self.meta["xyz_fields"] = xyz_fields(self.dtype, "NPY array")

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        need = math.prod(self.shape) * self.dtype.itemsize
        if self.size - self.offset < need:
            raise DecodeError(f"corrupt or truncated NPY: shape {self.shape} needs {need:,} bytes, "
                              f"{max(self.size - self.offset, 0):,} follow the header")
        if need == 0:
            a = np.empty(self.shape, self.dtype)
        else:
            a = np.memmap(self.f, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                          order="F" if self.fortran else "C")
        yield from array_chunks(a, "NPY array", chunk)


def npz_member(source: str | Path | BinaryIO, key: str | None) -> tuple[str, tuple[int, ...], np.dtype]:
    """Pick the array of an .npz (``key`` or the first of :data:`NPZ_KEYS` / the only (N, >=3))."""
    try:
        with zipfile.ZipFile(source) as zf:
            return _pick(_npz_headers(zf), key)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DecodeError(f"corrupt NPZ archive: {e}") from None


def _pick(headers: dict, key: str | None) -> tuple[str, tuple[int, ...], np.dtype]:
    if not headers:
        raise DecodeError("NPZ archive holds no arrays")
    if key is not None:
        if key not in headers:
            raise DecodeError(f"NPZ has no array {key!r} (arrays: {', '.join(sorted(headers))}); "
                              "set npz_key")
        return key, headers[key][0], headers[key][2]
    for k in NPZ_KEYS:
        if k in headers and cloud_array(headers[k][0], headers[k][2]):
            return k, headers[k][0], headers[k][2]
    fits = [k for k, h in headers.items() if cloud_array(h[0], h[2])]
    if len(fits) == 1:
        return fits[0], headers[fits[0]][0], headers[fits[0]][2]
    raise DecodeError(f"NPZ arrays {', '.join(sorted(headers))}: none or several of shape (N, >=3); "
                      "set npz_key")


def _npz_headers(zf: zipfile.ZipFile) -> dict:
    headers = {}
    for name in zf.namelist():
        if not name.endswith(".npy"):
            continue
        with zf.open(name) as f:
            h = npy_header(f)
        if h is not None:
            headers[name[:-4]] = h
    return headers


class NpzReader(Reader):
    format = "npz"

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        try:
            with zipfile.ZipFile(self.rewind(0)) as zf:
                name, a = self._member(zf)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DecodeError(f"corrupt NPZ archive: {e}") from None
        self.meta.update(npz_key=name, array_shape=list(a.shape), array_dtype=str(a.dtype))
        if a.dtype.names:
            self.meta["xyz_fields"] = xyz_fields(a.dtype, f"NPZ array {name!r}")
        yield from array_chunks(a, f"NPZ array {name!r}", chunk)

    def _member(self, zf: zipfile.ZipFile) -> tuple[str, np.ndarray]:
        name, shape, dtype = _pick(_npz_headers(zf), self.opts.npz_key)
        if dtype.hasobject:
            raise DecodeError(f"NPZ array {name!r} holds Python objects; refusing to unpickle")
        if math.prod(shape) * dtype.itemsize > MAX_DECOMPRESSED:
            raise DecodeError(f"NPZ array {name!r} of shape {shape} is too large to decompress (> 4 GiB)")
        try:
            with zf.open(name + ".npy") as m:
                return name, np.lib.format.read_array(m, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DecodeError(f"corrupt NPZ array {name!r}: {e}") from None


class KittiReader(Reader):
    """KITTI velodyne scans: float32 records of ``bin_fields`` values, x y z first."""

    format = "kitti"

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        fields = self.opts.bin_fields
        self.meta["bin_fields"] = fields
        rec = 4 * fields
        if self.size % rec:
            raise DecodeError(f"not a KITTI velodyne scan: {self.size:,} bytes is not a multiple of "
                              f"{rec} (float32 x {fields})")
        f = self.rewind(0)
        left = self.size // rec
        while left:
            m = min(chunk, left)
            a = np.fromfile(f, dtype="<f4", count=m * fields).reshape(m, fields)
            yield a[:, :3].astype(np.float64)
            left -= m
