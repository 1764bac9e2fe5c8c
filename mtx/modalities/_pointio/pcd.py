"""PCD (PCL's format): ASCII, binary and LZF-compressed ``binary_compressed`` data."""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...errors import DecodeError
from .. import _budget
from .base import CHUNK, Reader, TextView, chunk_points, header_bytes, loadtxt, xyz_cols

_MAX_HEADER = 65536
_KIND = {"F": "f", "I": "i", "U": "u"}


@dataclass
class PcdHeader:
    fields: list[str]
    sizes: list[int]
    types: list[str]
    counts: list[int]
    points: int
    data: str
    offset: int
    width: int
    height: int

    @property
    def record(self) -> int:
        return sum(s * c for s, c in zip(self.sizes, self.counts, strict=True))

    def dtype(self) -> np.dtype:
        return np.dtype([(f"f{i}", f"<{_KIND[t]}{s}", (c,)) if c > 1 else (f"f{i}", f"<{_KIND[t]}{s}")
                         for i, (s, t, c) in enumerate(zip(self.sizes, self.types, self.counts, strict=True))])


_DATA_LINE = re.compile(rb"(^|\n)[ \t]*DATA[^\n]*\n", re.IGNORECASE)


def read_pcd_header(f, head: bytes) -> PcdHeader:
    raw = header_bytes(f, head, lambda r: _DATA_LINE.search(r) is not None, _MAX_HEADER)[:_MAX_HEADER]
    kv: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            raise DecodeError("corrupt PCD: no DATA line in the header")
        ln = raw[pos:nl].decode("ascii", errors="replace").strip()
        pos = nl + 1
        if not ln or ln.startswith("#"):
            continue
        t = ln.split()
        kv[t[0].upper()] = t[1:]
        if t[0].upper() == "DATA":
            break
    return _header_from(kv, pos)


def _header_from(kv: dict[str, list[str]], offset: int) -> PcdHeader:
    try:
        fields = kv["FIELDS"]
        n = len(fields)
        sizes = [int(s) for s in kv.get("SIZE", ["4"] * n)]
        types = [s.upper() for s in kv.get("TYPE", ["F"] * n)]
        counts = [int(s) for s in kv.get("COUNT", ["1"] * n)]
        width = int(kv.get("WIDTH", ["0"])[0])
        height = int(kv.get("HEIGHT", ["1"])[0])
        points = int(kv["POINTS"][0]) if "POINTS" in kv else width * height
        data = kv["DATA"][0].lower()
    except (KeyError, ValueError, IndexError) as e:
        raise DecodeError(f"corrupt PCD header: {e}") from None
    if not (len(sizes) == len(types) == len(counts) == n):
        raise DecodeError("corrupt PCD header: FIELDS, SIZE, TYPE and COUNT disagree in length")
    if points < 0 or any(s not in (1, 2, 4, 8) for s in sizes) or any(t not in "IUF" for t in types):
        raise DecodeError("corrupt PCD header: bad POINTS, SIZE or TYPE")
    if data not in ("ascii", "binary", "binary_compressed"):
        raise DecodeError(f"unsupported PCD DATA {data!r} (ascii, binary, binary_compressed)")
    return PcdHeader(fields, sizes, types, counts, points, data, offset, width, height)


def lzf_decompress(data: bytes, out_len: int) -> bytes:
    """LZF (liblzf) decompression, as PCL's ``binary_compressed`` uses."""
    out = bytearray(out_len)
    ip = op = 0
    n = len(data)
    try:
        while ip < n:
            ctrl = data[ip]
            ip += 1
            if ctrl < 32:
                ln = ctrl + 1
                if op + ln > out_len or ip + ln > n:
                    raise IndexError
                out[op: op + ln] = data[ip: ip + ln]
                ip += ln
                op += ln
                continue
            ln = ctrl >> 5
            ref = op - ((ctrl & 0x1F) << 8) - 1
            if ln == 7:
                ln += data[ip]
                ip += 1
            ref -= data[ip]
            ip += 1
            ln += 2
            if ref < 0 or op + ln > out_len:
                raise IndexError
            dist = op - ref
            if dist >= ln:
                out[op: op + ln] = out[ref: ref + ln]
            else:  # overlapping copy = the last ``dist`` bytes repeated
                pat = bytes(out[ref:op])
                out[op: op + ln] = (pat * (ln // dist + 1))[:ln]
            op += ln
    except IndexError:
        raise DecodeError("corrupt PCD binary_compressed data (LZF stream is invalid)") from None
    if op != out_len:
        raise DecodeError(f"corrupt PCD binary_compressed data ({op:,} of {out_len:,} bytes decoded)")
    return bytes(out)


class PcdReader(Reader):
    format = "pcd"

    def __init__(self, *args):
        super().__init__(*args)
        self.h = h = read_pcd_header(self.f, self.head)
        self.n = self.n_vertices = h.points
        # xyz positions among the fields (a field with COUNT c spans c columns)
        self.cols = xyz_cols(h.fields, "PCD")
        for c in self.cols:
            if h.counts[c] != 1:
                raise DecodeError("corrupt PCD header: x/y/z with COUNT > 1")
        self.meta = {"pcd_data": h.data, "pcd_fields": h.fields, "width": h.width, "height": h.height}
        have = self.size - h.offset
        if h.data == "binary" and have < self.n * h.record:
            raise DecodeError(f"truncated binary PCD: the header declares {self.n:,} points "
                              f"({self.n * h.record:,} bytes) but only {have:,} bytes follow")
        if h.data == "ascii" and have < self.n * 2 * len(h.fields):
            raise DecodeError(f"truncated ASCII PCD: the header declares {self.n:,} points but the "
                              f"file has only {have:,} bytes of data")

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        if self.h.data == "binary":
            yield from self._binary(chunk_points(self.h.record, chunk))
        elif self.h.data == "ascii":
            yield from self._ascii(chunk_points(self.h.record * 4, chunk))  # ~4 text bytes per binary byte
        else:
            yield from self._compressed()

    def _binary(self, chunk: int) -> Iterator[np.ndarray]:
        dt = self.h.dtype()
        f = self.rewind(self.h.offset)
        left = self.n
        while left:
            m = min(chunk, left)
            rec = np.frombuffer(f.read(m * dt.itemsize), dtype=dt, count=m)
            yield np.stack([rec[f"f{c}"].astype(np.float64) for c in self.cols], axis=1)
            left -= m

    def _ascii(self, chunk: int) -> Iterator[np.ndarray]:
        h = self.h
        flat = [sum(h.counts[:c]) for c in self.cols]
        ncols = sum(h.counts)
        f = TextView(self.rewind(h.offset), encoding="ascii", errors="replace")
        left, done = self.n, 0
        while left:
            lines = list(itertools.islice(f, min(chunk, left)))
            if not lines:
                raise DecodeError(f"truncated ASCII PCD: the header declares {self.n:,} points, "
                                  f"the file ends after {done:,}")
            yield loadtxt(lines, "PCD point", ncols=ncols, usecols=flat)
            left -= len(lines)
            done += len(lines)

    def _compressed(self) -> Iterator[np.ndarray]:
        h = self.h
        f = self.rewind(h.offset)
        sizes = f.read(8)
        if len(sizes) < 8:
            raise DecodeError("truncated PCD binary_compressed: no size words")
        csize, usize = (int.from_bytes(sizes[i: i + 4], "little") for i in (0, 4))
        if usize != self.n * h.record:
            raise DecodeError(f"corrupt PCD binary_compressed: {usize:,} bytes uncompressed, "
                              f"the header implies {self.n * h.record:,}")
        have = self.size - h.offset - 8
        if csize > have:
            raise DecodeError(f"truncated PCD binary_compressed: its size word declares {csize:,} compressed "
                              f"bytes, {max(have, 0):,} follow")
        _budget.check_stored(usize, csize, _budget.LZF_RATIO, "PCD binary_compressed points")
        # The LZF output is held whole (fields are stored one after another), then x/y/z as float64.
        _budget.check(self.n, f"points in binary_compressed PCD ({h.record} bytes each, held uncompressed)",
                      h.record + 48)
        comp = f.read(csize)
        if len(comp) < csize:
            raise DecodeError(f"truncated PCD binary_compressed: {len(comp):,} of {csize:,} bytes")
        raw = lzf_decompress(comp, usize) if usize else b""
        # Column layout: every field's values for all points, one field after another.
        by_field, off = {}, 0
        for i, (s, t, c) in enumerate(zip(h.sizes, h.types, h.counts, strict=True)):
            if i in self.cols:
                by_field[i] = np.frombuffer(raw, f"<{_KIND[t]}{s}", self.n, off).astype(np.float64)
            off += self.n * s * c
        if self.n:
            yield np.stack([by_field[i] for i in self.cols], axis=1)
