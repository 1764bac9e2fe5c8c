"""PLY (ASCII, binary little/big endian): vertices streamed in chunks; faces read for meshes."""
from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ...errors import DecodeError
from .._budget import allowed
from .base import (
    CHUNK,
    Mesh,
    Reader,
    TextView,
    Triangles,
    check_triangles,
    check_vertices,
    chunk_points,
    header_bytes,
    loadtxt,
    triangulate,
    xyz_cols,
)

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_INDEX_NAMES = ("vertex_indices", "vertex_index")
_MAX_HEADER = 1 << 20


@dataclass
class PlyElement:
    name: str
    count: int
    props: list[tuple[str, str, str | None]]  # (name, value type, list count type or None)

    @property
    def has_list(self) -> bool:
        return any(p[2] is not None for p in self.props)

    def dtype(self, endian: str) -> np.dtype:
        return np.dtype([(f"f{i}", endian + p[1]) for i, p in enumerate(self.props)])

    def min_record(self) -> int:
        """Fewest bytes one binary record can take (a list may be empty: its count only)."""
        return sum(np.dtype(p[2] if p[2] is not None else p[1]).itemsize for p in self.props)


@dataclass
class PlyHeader:
    fmt: str
    elements: list[PlyElement]
    offset: int
    comments: list[str]


def _header_done(raw: bytes) -> bool:
    end = raw.find(b"end_header")
    return end >= 0 and raw.find(b"\n", end) >= 0


def read_ply_header(f, head: bytes) -> PlyHeader:
    if not head.startswith(b"ply"):
        raise DecodeError("not a PLY file (no 'ply' magic)")
    raw = header_bytes(f, head, _header_done, _MAX_HEADER)
    if b"end_header" not in raw:
        if len(raw) >= _MAX_HEADER:
            raise DecodeError("corrupt PLY: header longer than 1 MiB")
        raise DecodeError("corrupt PLY: no 'end_header' line")
    end = raw.index(b"end_header") + len(b"end_header")
    nl = raw.find(b"\n", end)
    offset = (nl if nl >= 0 else len(raw) - 1) + 1
    text = raw[:end].decode("ascii", errors="replace")
    fmt = None
    elements: list[PlyElement] = []
    comments: list[str] = []
    for ln in text.splitlines()[1:]:
        t = ln.split()
        if not t or t[0] in ("obj_info", "end_header"):
            continue
        if t[0] == "comment":
            comments.append(ln[8:].strip())
        elif t[0] == "format" and len(t) >= 2:
            fmt = t[1]
        elif t[0] == "element" and len(t) == 3:
            elements.append(PlyElement(t[1], _count(t[2]), []))
        elif t[0] == "property" and elements:
            elements[-1].props.append(_property(t, ln))
        else:
            raise DecodeError(f"corrupt PLY header: unexpected line {ln.strip()[:60]!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DecodeError(f"corrupt PLY header: unknown format {fmt!r}")
    return PlyHeader(fmt, elements, offset, comments)


def _count(tok: str) -> int:
    try:
        count = int(tok)
    except ValueError:
        raise DecodeError(f"corrupt PLY header: bad element count {tok!r}") from None
    if count < 0:
        raise DecodeError(f"corrupt PLY header: negative element count {count}")
    return count


def _property(t: list[str], ln: str) -> tuple[str, str, str | None]:
    if len(t) == 5 and t[1] == "list":
        if t[2] not in _TYPES or t[3] not in _TYPES:
            raise DecodeError(f"corrupt PLY header: unknown property type in {ln.strip()!r}")
        return t[4], _TYPES[t[3]], _TYPES[t[2]]
    if len(t) == 3 and t[1] in _TYPES:
        return t[2], _TYPES[t[1]], None
    raise DecodeError(f"corrupt PLY header: bad property line {ln.strip()!r}")


class PlyReader(Reader):
    """Streams PLY vertices; reads the faces only for :meth:`mesh`."""

    format = "ply"

    def __init__(self, *args):
        super().__init__(*args)
        self.h = h = read_ply_header(self.f, self.head)
        names = [e.name for e in h.elements]
        if "vertex" not in names:
            raise DecodeError(f"PLY has no 'vertex' element (elements: {', '.join(names) or 'none'})")
        self.vi = names.index("vertex")
        self.vertex = h.elements[self.vi]
        self.n = self.n_vertices = self.vertex.count
        self.cols = xyz_cols([p[0] for p in self.vertex.props], "PLY vertex element")
        self.binary = h.fmt != "ascii"
        self.endian = "<" if h.fmt == "binary_little_endian" else ">"
        face = [e for e in h.elements if e.name in ("face", "faces")]
        self.face = face[0] if face else None
        self.n_faces = self.face.count if self.face else 0
        self.is_mesh = self.n_faces > 0
        self.meta = {"ply_format": h.fmt, "vertex_properties": [p[0] for p in self.vertex.props],
                     "elements": {e.name: e.count for e in h.elements}}
        if self.vertex.has_list:
            raise DecodeError("PLY vertex element with list properties is not supported")
        self._check_vertex_bytes()

    def _check_vertex_bytes(self) -> None:
        """Refuse a header whose counts the file cannot hold, before anything is allocated."""
        if self.binary:
            before = self.h.elements[: self.vi]
            if any(e.has_list for e in before):
                raise DecodeError("PLY with list elements before the vertices is not supported")
            self.vstart = self.h.offset + sum(e.count * e.dtype(self.endian).itemsize for e in before)
            need = self.n * self.vertex.dtype(self.endian).itemsize
            have = self.size - self.vstart
            if have < need:
                raise DecodeError(f"truncated binary PLY: the header declares {self.n:,} vertices "
                                  f"({need:,} bytes) but only {max(have, 0):,} bytes follow the header")
        else:
            # A vertex line needs at least 2 bytes per property ("0 "): refuse absurd counts early.
            min_bytes = self.n * 2 * len(self.vertex.props)
            if self.size - self.h.offset < min_bytes:
                raise DecodeError(f"truncated ASCII PLY: the header declares {self.n:,} vertices but the "
                                  f"file has only {self.size - self.h.offset:,} bytes of data")

    # -- vertices ------------------------------------------------------------------------------
    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        if self.binary:
            dt = self.vertex.dtype(self.endian)
            names = [f"f{c}" for c in self.cols]
            f = self.rewind(self.vstart)
            left = self.n
            chunk = chunk_points(dt.itemsize, chunk)
            while left:
                m = min(chunk, left)
                rec = np.frombuffer(f.read(m * dt.itemsize), dtype=dt, count=m)
                yield np.stack([rec[nm].astype(np.float64) for nm in names], axis=1)
                left -= m
            return
        yield from self._ascii_vertices(self._text(), chunk)

    def _text(self) -> io.TextIOWrapper:
        """The ASCII body positioned at the vertex element (the handle stays open)."""
        t = TextView(self.rewind(self.h.offset), encoding="ascii", errors="replace")
        for e in self.h.elements[: self.vi]:
            for _ in itertools.islice(t, e.count):
                pass
        return t

    def _ascii_vertices(self, f, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        left, done = self.n, 0
        nprops = len(self.vertex.props)
        chunk = chunk_points(16 * nprops + 64, chunk)  # a line held as text, then parsed
        while left:
            lines = list(itertools.islice(f, min(chunk, left)))
            if not lines:
                raise DecodeError(f"truncated ASCII PLY: the header declares {self.n:,} vertices, "
                                  f"the file ends after {done:,}")
            a = loadtxt(lines, "PLY vertex", ncols=nprops, usecols=self.cols)
            if len(a) != len(lines):
                raise DecodeError(f"corrupt ASCII PLY: blank or malformed vertex line near vertex {done:,}")
            yield a
            left -= len(lines)
            done += len(lines)

    # -- faces ---------------------------------------------------------------------------------
    def mesh(self) -> Mesh:
        """All vertices and the triangulated faces."""
        start = self._face_start()
        check_vertices(self.n, "PLY mesh")
        check_triangles(self.n_faces, "PLY mesh")
        fi = self.h.elements.index(self.face) if self.face else -1
        listed = self.face is not None and any(p[2] is not None and p[0] in _INDEX_NAMES for p in self.face.props)
        if self.binary:
            v = np.concatenate(list(self.points())) if self.n else np.empty((0, 3))
            if not listed or start is None:
                return Mesh(v, None, self.n_faces)
            faces = self._binary_faces(start)
        else:
            t = self._text()
            v = np.concatenate(list(self._ascii_vertices(t))) if self.n else np.empty((0, 3))
            if not listed:
                return Mesh(v, None, self.n_faces)
            li = next(i for i, p in enumerate(self.face.props) if p[2] is not None and p[0] in _INDEX_NAMES)
            faces = self._ascii_faces(t, fi, li)
        check_triangles(len(faces), "PLY mesh")
        return Mesh(v, faces, self.n_faces).check("PLY")

    def _face_start(self) -> int | None:
        """Where binary faces start (None: after a list element); refuses face counts that the
        rest of the file cannot hold, before anything is read or allocated."""
        e = self.face
        if e is None:
            return None
        if not self.binary:
            need = self.n * 2 * len(self.vertex.props) + e.count * 2  # "0\n" per face at least
            if self.size - self.h.offset < need:
                raise DecodeError(f"truncated ASCII PLY: the header declares {e.count:,} faces, the file "
                                  f"has {self.size - self.h.offset:,} bytes of data")
            return None
        fi = self.h.elements.index(e)
        between = self.h.elements[self.vi: fi]
        if any(x.has_list for x in between):
            return None
        start = self.vstart + sum(x.count * x.dtype(self.endian).itemsize for x in between)
        have = self.size - start
        if e.count * e.min_record() > have:
            raise DecodeError(f"truncated binary PLY: the header declares {e.count:,} faces but only "
                              f"{max(have, 0):,} bytes follow the vertices")
        return start

    def _binary_faces(self, start: int) -> np.ndarray:
        # Faces that pass the triangle cap take far less than a quarter of the budget (<= 13
        # bytes per triangle): never read more of what follows the vertices than that.
        data = self.rewind(start).read(min(self.size - start, allowed(1, 0.25)))
        fast = _uniform_faces(data, self.face, self.endian)
        return triangulate(fast) if fast is not None else _walk_faces(data, self.face, self.endian)

    def _ascii_faces(self, f, fi: int, li: int):
        for e in self.h.elements[self.vi + 1: fi]:
            for _ in itertools.islice(f, e.count):
                pass
        pre = li  # the list's count follows the scalar properties before it
        tris, i = Triangles("PLY mesh"), -1
        for i, ln in enumerate(itertools.islice(f, self.face.count)):
            t = ln.split()
            try:
                k = int(t[pre])
                tris.add([int(x) for x in t[pre + 1: pre + 1 + k]])
            except (ValueError, IndexError):
                raise DecodeError(f"corrupt ASCII PLY: malformed face line {i}") from None
        if i + 1 < self.face.count:
            raise DecodeError(f"truncated ASCII PLY: the header declares {self.face.count:,} faces, "
                              f"the file has {i + 1:,}")
        return tris.array()


def _uniform_faces(data: bytes, e: PlyElement, en: str) -> np.ndarray | None:
    """Fast path: every face has the same corner count as the first one -> [F, k] indices."""
    pre = 0
    for name, vt, ct in e.props:
        if ct is not None and name in _INDEX_NAMES:
            break
        if ct is not None:
            return None
        pre += np.dtype(vt).itemsize
    ct = [p for p in e.props if p[0] in _INDEX_NAMES][0]
    csize = np.dtype(ct[2]).itemsize
    if len(data) < pre + csize:
        raise DecodeError("truncated binary PLY: the face list is cut off")
    c0 = int(np.frombuffer(data[pre: pre + csize], en + ct[2])[0])
    fields = []
    for i, (name, vt, cnt) in enumerate(e.props):
        if cnt is None:
            fields.append((f"p{i}", en + vt))
        elif name == ct[0]:
            fields += [("n", en + cnt), ("idx", en + vt, (c0,))]
        else:
            return None
    if c0 < 3:
        return None
    dt = np.dtype(fields)
    if len(data) < e.count * dt.itemsize:
        return None
    rec = np.frombuffer(data, dtype=dt, count=e.count)
    return rec["idx"].astype(np.int64) if (rec["n"] == c0).all() else None


def _walk_faces(data: bytes, e: PlyElement, en: str) -> np.ndarray:
    """General path: walk the records one by one -> [T, 3] triangles."""
    tris, pos = Triangles("PLY mesh"), 0
    try:
        for _ in range(e.count):
            face = None
            for name, vt, cnt in e.props:
                if cnt is None:
                    pos += np.dtype(vt).itemsize
                    continue
                k = int(np.frombuffer(data, en + cnt, 1, pos)[0])
                pos += np.dtype(cnt).itemsize
                vals = np.frombuffer(data, en + vt, k, pos)
                pos += k * np.dtype(vt).itemsize
                if name in _INDEX_NAMES:
                    face = vals.tolist()
            if face is not None:
                tris.add(face)
    except ValueError:
        raise DecodeError("truncated binary PLY: the face list is cut off") from None
    return tris.array()

