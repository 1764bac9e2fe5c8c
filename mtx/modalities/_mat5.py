"""MATLAB v5 files read with bounded memory: variable headers without decompressing the data,
and one numeric variable decompressed into an array of its declared size.

scipy.io reads a zlib-compressed variable's header by inflating a whole 128 KiB block of its
stream first (~130 MB for a stream of zeros), and checks the stream's integrity by inflating
all of it: a 300 KB file can make it allocate hundreds of MB just to list names. Here the
inflater never produces more than asked for: a header costs 4 KiB, a variable exactly its
declared bytes (checked against the per-sample budget by the caller before :func:`read`).

Layout (MathWorks, "MAT-File Format"): a 128-byte header (text, subsystem offset, version
0x0100, endian indicator ``IM``/``MI``), then data elements: an 8-byte tag (type, byte count;
the "small" form packs both in 4 bytes and 4 data bytes), ``miCOMPRESSED`` (a zlib stream of
one element) or ``miMATRIX`` (array flags, dimensions, name, real part[, imaginary part]),
elements padded to 8 bytes; numeric data in column-major order, stored in a type that may be
smaller than the array's class.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DecodeError

MI_MATRIX, MI_COMPRESSED = 14, 15
_STORAGE = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_CLASSES = {6: ("double", "f8"), 7: ("single", "f4"), 8: ("int8", "i1"), 9: ("uint8", "u1"),
            10: ("int16", "i2"), 11: ("uint16", "u2"), 12: ("int32", "i4"), 13: ("uint32", "u4"),
            14: ("int64", "i8"), 15: ("uint64", "u8"), 1: ("cell", ""), 2: ("struct", ""),
            3: ("object", ""), 4: ("char", ""), 5: ("sparse", "")}
_DTYPES = {**{c: d for c, d in _CLASSES.values() if d}, "logical": "u1"}
_HEADER_BYTES = 4096  # enough for flags, dimensions and a name


def is_v5(head: bytes) -> bool:
    return len(head) >= 128 and head[124:126] in (b"\x00\x01", b"\x01\x00") and head[126:128] in (b"IM", b"MI")


@dataclass(frozen=True)
class Variable:
    name: str
    shape: tuple[int, ...]
    cls: str  # MATLAB class: double, single, int16, ..., logical, cell, struct, char...
    offset: int  # of the element's tag in the file
    compressed: bool
    complex: bool


class _Source:
    """The bytes of one element's body: the file itself, or a zlib stream inflated on demand,
    never more than asked for."""

    def __init__(self, f, start: int, nbytes: int, compressed: bool):
        self.f, self.left, self.compressed = f, nbytes, compressed
        f.seek(start)
        self.z = zlib.decompressobj() if compressed else None
        self.tail = b""

    def read(self, n: int) -> bytes:
        if not self.compressed:
            data = self.f.read(min(n, self.left))
            self.left -= len(data)
            return data
        out = bytearray()
        while len(out) < n:
            if self.tail:
                chunk, self.tail = self.tail, b""
            else:
                chunk = self.f.read(min(1 << 16, self.left))
                self.left -= len(chunk)
                if not chunk:
                    break
            try:
                out += self.z.decompress(chunk, n - len(out))
            except zlib.error as e:
                raise DecodeError(f"corrupt MATLAB v5 file: a compressed variable does not inflate ({e})") from None
            self.tail = self.z.unconsumed_tail
        return bytes(out)

    def read_into(self, buf: memoryview) -> int:
        """Fill ``buf`` (its exact length), block by block; returns the bytes written."""
        done = 0
        while done < len(buf):
            part = self.read(min(len(buf) - done, 1 << 22))
            if not part:
                break
            buf[done:done + len(part)] = part
            done += len(part)
        return done


def _tag(src: _Source, e: str) -> tuple[int, int, bytes]:
    """(type, byte count, small-element data or b'') of the next tag."""
    raw = src.read(8)
    if len(raw) < 8:
        raise DecodeError("corrupt MATLAB v5 file: a variable ends inside a tag")
    first, second = struct.unpack(e + "II", raw)
    if first >> 16:  # small data element: 2-byte count, 2-byte type, 4 bytes of data
        n, t = first >> 16, first & 0xFFFF
        return t, n, raw[4:4 + n]
    return first, second, b""


def _body(src: _Source, n: int, small: bytes, what: str) -> bytes:
    if small or n == 0:
        return small
    if n > _HEADER_BYTES:
        raise DecodeError(f"corrupt MATLAB v5 file: the {what} of a variable declares {n:,} bytes")
    data = src.read(n + (-n % 8))
    if len(data) < n:
        raise DecodeError(f"corrupt MATLAB v5 file: a variable ends inside its {what}")
    return data[:n]


def _matrix_header(src: _Source, e: str) -> tuple[str, tuple[int, ...], str, bool]:
    t, _, small = _tag(src, e)
    if t != MI_MATRIX:
        raise DecodeError(f"corrupt MATLAB v5 file: expected a matrix element, found type {t}")
    t, n, small = _tag(src, e)
    flags = _body(src, n, small, "array flags")
    if len(flags) < 4:
        raise DecodeError("corrupt MATLAB v5 file: short array flags")
    word = struct.unpack(e + "I", flags[:4])[0]
    cls_code, is_complex, is_logical = word & 0xFF, bool(word & 0x800), bool(word & 0x200)
    t, n, small = _tag(src, e)
    dims_raw = _body(src, n, small, "dimensions")
    dims = tuple(int(d) for d in struct.unpack(e + f"{len(dims_raw) // 4}i", dims_raw[:len(dims_raw) // 4 * 4]))
    if any(d < 0 for d in dims):
        raise DecodeError(f"corrupt MATLAB v5 file: negative dimensions {dims}")
    t, n, small = _tag(src, e)
    name = _body(src, n, small, "name").split(b"\0", 1)[0].decode("latin-1")
    cls = "logical" if is_logical else _CLASSES.get(cls_code, (f"class {cls_code}", ""))[0]
    return name, dims, cls, is_complex


def _open(path: Path):
    f = open(path, "rb")
    head = f.read(128)
    if not is_v5(head):
        f.close()
        raise DecodeError("corrupt MATLAB v5 file: unknown version or endian indicator in its header")
    return f, ("<" if head[126:128] == b"IM" else ">")


def list_variables(path: Path) -> list[Variable]:
    """Every variable's name, shape and class, from the headers alone (a few KiB each)."""
    size = path.stat().st_size
    f, e = _open(path)
    out: list[Variable] = []
    with f:
        pos = 128
        while pos + 8 <= size:
            f.seek(pos)
            t, n = struct.unpack(e + "II", f.read(8))
            if t not in (MI_MATRIX, MI_COMPRESSED):
                raise DecodeError(f"corrupt MATLAB v5 file: data element of type {t} at byte {pos}")
            if pos + 8 + n > size:
                raise DecodeError(f"corrupt MATLAB v5 file: a variable declares {n:,} bytes, the file ends "
                                  f"{size - pos - 8:,} bytes later (truncated?)")
            compressed = t == MI_COMPRESSED
            src = _Source(f, pos if not compressed else pos + 8, 8 + n if not compressed else n, compressed)
            name, dims, cls, cplx = _matrix_header(src, e)
            out.append(Variable(name, dims, cls, pos, compressed, cplx))
            pos += 8 + n + (0 if compressed else -n % 8)
    return out


def read(path: Path, var: Variable) -> np.ndarray:
    """The numeric array of ``var`` (real part), decompressed into exactly its declared bytes."""
    dtype = _DTYPES.get(var.cls)
    if dtype is None:
        raise DecodeError(f"MATLAB variable {var.name!r} is a {var.cls}, not a numeric array")
    f, e = _open(path)
    with f:
        f.seek(var.offset)
        t, n = struct.unpack(e + "II", f.read(8))
        src = _Source(f, var.offset + 8 if var.compressed else var.offset, n if var.compressed else 8 + n,
                      var.compressed)
        _matrix_header(src, e)
        t, nbytes, small = _tag(src, e)
        if t not in _STORAGE:
            raise DecodeError(f"corrupt MATLAB v5 file: {var.name!r} stores its data as type {t}")
        store = np.dtype(e + _STORAGE[t])
        count = int(np.prod(var.shape, dtype=np.int64))
        if nbytes != count * store.itemsize and not small:
            raise DecodeError(f"corrupt MATLAB v5 file: {var.name!r} {var.shape} holds {nbytes:,} bytes of "
                              f"{store.name}, its dimensions need {count * store.itemsize:,}")
        if small:
            raw = np.frombuffer(small, store, count)
        else:
            raw = np.empty(count, store)
            if src.read_into(memoryview(raw).cast("B")) < nbytes:
                raise DecodeError(f"corrupt MATLAB v5 file: {var.name!r} ends before its {nbytes:,} bytes "
                                  "(truncated?)")
    a = raw.reshape(var.shape, order="F")
    return a if a.dtype == np.dtype(dtype) else a.astype(dtype)
