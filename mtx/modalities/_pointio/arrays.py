"""Arrays of points: NPY and NPZ (N, >=3) or records with x/y/z fields (any case, extra fields
such as intensity ignored), KITTI velodyne ``.bin``.

Never unpickles (``allow_pickle=False``). NPY is memory-mapped through the open handle and read
in chunks; an NPZ member is decompressed as a stream, row chunk by row chunk, after its declared
size was compared with what its compressed bytes can hold (a Fortran-ordered member, which
cannot be streamed by rows, is read whole within the per-sample budget).
"""
from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...errors import DecodeError
from .. import _budget
from .base import CHUNK, Reader, chunk_points, xyz_cols
from .detect import cloud_array, npy_header

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
        row = self.dtype.itemsize * (math.prod(self.shape[1:]) if len(self.shape) > 1 else 1)
        yield from array_chunks(a, "NPY array", chunk_points(row, chunk))


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


def member_size(info: zipfile.ZipInfo, declared: int, what: str) -> None:
    """Refuse an archive member whose declared decoded size its compressed bytes cannot hold."""
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _budget.DEFLATE_RATIO
    _budget.check_stored(declared, info.compress_size + 64, ratio, what)  # + its NPY header


class NpzReader(Reader):
    format = "npz"

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        try:
            with zipfile.ZipFile(self.rewind(0)) as zf:
                name, shape, dtype = _pick(_npz_headers(zf), self.opts.npz_key)
                self.meta.update(npz_key=name, array_shape=list(shape), array_dtype=str(dtype))
                if dtype.names:
                    self.meta["xyz_fields"] = xyz_fields(dtype, f"NPZ array {name!r}")
                if dtype.hasobject:
                    raise DecodeError(f"NPZ array {name!r} holds Python objects; refusing to unpickle")
                info = zf.getinfo(name + ".npy")
                member_size(info, math.prod(shape) * dtype.itemsize, f"NPZ array {name!r} {tuple(shape)}")
                with zf.open(info) as m:
                    h = npy_header(m)
                    if h is None:
                        raise DecodeError(f"corrupt NPZ array {name!r}: unreadable NPY header")
                    yield from _stream_rows(m, h, f"NPZ array {name!r}", chunk)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise DecodeError(f"corrupt NPZ archive: {e}") from None


def _stream_rows(m, header, what: str, chunk: int) -> Iterator[np.ndarray]:
    """Points of an NPY stream (a decompressing archive member) in row chunks: memory bounded
    by the chunk, whatever the array's declared length."""
    shape, fortran, dtype = header
    rows_shape = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
    if fortran and len(rows_shape) > 1:  # columns stored one after another: read it whole
        _budget.check(math.prod(shape), f"values in {what} {tuple(shape)} (Fortran order, read whole)",
                      dtype.itemsize * 2 + 8)
        n = math.prod(shape) * dtype.itemsize
        data = _budget.read_capped(m, n, what)
        if len(data) < n:
            raise DecodeError(f"truncated {what}: {len(data):,} of {n:,} bytes")
        yield from array_chunks(np.frombuffer(data, dtype).reshape(shape, order="F"), what, chunk)
        return
    if not rows_shape:
        raise DecodeError(f"{what} has shape {tuple(shape)}, expected (N, >=3) points")
    _xyz(np.empty((0, *rows_shape[1:]), dtype), what)  # the shape and dtype make points
    rows = rows_shape[0]
    row = dtype.itemsize * math.prod(rows_shape[1:])
    step = chunk_points(row, chunk)
    done = 0
    while done < rows:
        k = min(step, rows - done)
        data = m.read(k * row)
        if len(data) < k * row:
            raise DecodeError(f"truncated {what}: the header declares {rows:,} rows, the data ends "
                              f"after {done + len(data) // max(row, 1):,}")
        yield from array_chunks(np.frombuffer(data, dtype).reshape(k, *rows_shape[1:]), what, chunk)
        done += k


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
