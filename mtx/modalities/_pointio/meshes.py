"""OFF, Wavefront OBJ and STL (ASCII / binary) meshes, read as a stream of lines or records.

``points()`` streams the vertices without parsing faces; ``mesh()`` holds vertices and
triangles (capped, see :mod:`.base`). STL has no shared vertices: identical corners are merged.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import numpy as np

from ...errors import DecodeError
from .base import (
    CHUNK,
    Mesh,
    MeshTooLarge,
    Reader,
    TextView,
    Triangles,
    bounded_lines,
    check_triangles,
    check_vertices,
    chunk_points,
    loadtxt,
)

_OFF_HEAD = re.compile(r"^((?:ST)?C?N?4?OFF)\s*(.*)$")


_LINE_BYTES = 96  # a vertex line held as text until it is parsed


def _clean(lines) -> Iterator[str]:
    """Non-empty lines without ``#`` comments."""
    for x in lines:
        ln = x.split("#", 1)[0].strip()
        if ln:
            yield ln


class OffReader(Reader):
    format = "off"
    is_mesh = True

    def __init__(self, *args):
        super().__init__(*args)
        self.n_vertices, self.n_faces, _ = self._body()
        if self.size < 6 * self.n_vertices:  # "0 0 0\n" per vertex at least
            raise DecodeError(f"truncated OFF: the header declares {self.n_vertices:,} vertices, the "
                              f"file has {self.size:,} bytes")

    def _body(self) -> tuple[int, int, Iterator[str]]:
        """Vertex and face counts, and the lines after them."""
        lines = _clean(bounded_lines(TextView(self.rewind(0), encoding="utf-8", errors="replace"), "OFF"))
        first = next(lines, None)
        if first is None:
            raise DecodeError("empty OFF file")
        m = _OFF_HEAD.match(first)
        if not m:
            raise DecodeError("corrupt OFF: first line is not an OFF header")
        rest = m.group(2).split()  # ModelNet's "OFF490 518 0" puts the counts on the header line
        if len(rest) < 2:
            nxt = next(lines, None)
            if nxt is None:
                raise DecodeError("corrupt OFF: no vertex/face counts")
            rest = nxt.split()
        try:
            nv, nf = int(rest[0]), int(rest[1])
        except (ValueError, IndexError):
            raise DecodeError(f"corrupt OFF: bad counts {' '.join(rest)[:40]!r}") from None
        if nv < 0 or nf < 0:
            raise DecodeError("corrupt OFF: negative counts")
        return nv, nf, lines

    def _vertices(self, lines: Iterator[str], chunk: int = CHUNK) -> Iterator[np.ndarray]:
        nv, done = self.n_vertices, 0
        chunk = chunk_points(_LINE_BYTES, chunk)
        while done < nv:
            want = min(chunk, nv - done)
            block = list(itertools.islice(lines, want))
            if len(block) < want:
                raise DecodeError(f"truncated OFF: the header declares {nv:,} vertices, the file has "
                                  f"{done + len(block):,} lines left")
            yield loadtxt(block, "OFF vertex")
            done += want

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        yield from self._vertices(self._body()[2], chunk)

    def mesh(self) -> Mesh:
        if self.size < 6 * self.n_vertices + 2 * self.n_faces:  # "0\n" per face at least
            raise DecodeError(f"truncated OFF: the header declares {self.n_faces:,} faces, the file has "
                              f"{self.size:,} bytes")
        check_vertices(self.n_vertices, "OFF mesh")
        check_triangles(self.n_faces, "OFF mesh")
        lines = self._body()[2]
        chunks = list(self._vertices(lines))
        v = np.concatenate(chunks) if chunks else np.empty((0, 3))
        if not self.n_faces:
            return Mesh(v, None, 0)
        tris = Triangles("OFF mesh")
        for j, ln in enumerate(itertools.islice(lines, self.n_faces)):
            t = ln.split()
            try:
                k = int(t[0])
                tris.add([int(x) for x in t[1: 1 + k]])
            except (ValueError, IndexError):
                raise DecodeError(f"corrupt OFF: malformed face line {j}") from None
        return Mesh(v, tris.array(), self.n_faces).check("OFF")


class ObjReader(Reader):
    """Wavefront OBJ: ``v`` lines; ``f`` lines (``v``, ``v/vt``, ``v//vn``, negative = relative)."""

    format = "obj"
    is_mesh = True

    def _lines(self) -> Iterator[str]:
        return bounded_lines(TextView(self.rewind(0), encoding="utf-8", errors="replace"), "OBJ")

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        block, nv, nf = [], 0, 0
        chunk = chunk_points(_LINE_BYTES, chunk)
        for ln in self._lines():
            if ln.startswith(("v ", "v\t")):
                block.append(ln[2:])
                if len(block) >= chunk:
                    nv += len(block)
                    yield loadtxt(block, "OBJ vertex")
                    block = []
            elif ln.startswith(("f ", "f\t")):
                nf += 1
        if block:
            nv += len(block)
            yield loadtxt(block, "OBJ vertex")
        self.n_vertices, self.n_faces = nv, nf

    def mesh(self) -> Mesh:
        chunks, block, nv, nf = [], [], 0, 0
        tris = Triangles("OBJ mesh")
        for ln in self._lines():
            if ln.startswith(("v ", "v\t")):
                block.append(ln[2:])
                nv += 1
                if len(block) >= chunk_points(_LINE_BYTES):
                    check_vertices(nv, "OBJ mesh")
                    chunks.append(loadtxt(block, "OBJ vertex"))
                    block = []
            elif ln.startswith(("f ", "f\t")):
                try:
                    idx = [int(t.split("/")[0]) for t in ln[2:].split()]
                except ValueError:
                    raise DecodeError(f"corrupt OBJ: malformed face line {nf}") from None
                tris.add([k - 1 if k > 0 else nv + k for k in idx])  # 1-based; negative: relative
                nf += 1
        if block:
            chunks.append(loadtxt(block, "OBJ vertex"))
        v = np.concatenate(chunks) if chunks else np.empty((0, 3))
        self.n_vertices, self.n_faces = len(v), nf
        faces = tris.array()
        return Mesh(v, faces if len(faces) else None, nf).check("OBJ")


_STL_DT = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_VERTEX = re.compile(rf"vertex\s+({_NUM})\s+({_NUM})\s+({_NUM})", re.IGNORECASE)


class StlReader(Reader):
    """STL triangles; ``points()`` gives the merged corners (per chunk beyond the mesh limit)."""

    is_mesh = True

    def __init__(self, f, head, path, size, opts, binary: bool):
        super().__init__(f, head, path, size, opts)
        self.binary = binary
        self.format = "stl-binary" if binary else "stl-ascii"
        if binary:
            if len(head) < 84:
                raise DecodeError("truncated binary STL header")
            self.n_faces = int.from_bytes(head[80:84], "little")
            if size < 84 + 50 * self.n_faces:
                raise DecodeError(f"truncated binary STL: {self.n_faces:,} triangles declared")

    def _triangles(self, chunk: int = CHUNK // 3) -> Iterator[np.ndarray]:
        """[t, 3, 3] float64 corner blocks in file order."""
        if self.binary:
            f, left = self.rewind(84), self.n_faces
            while left:
                m = min(chunk, left)
                yield np.fromfile(f, dtype=_STL_DT, count=m)["v"].astype(np.float64)
                left -= m
            return
        lines, total = bounded_lines(TextView(self.rewind(0), encoding="utf-8", errors="replace"), "STL"), 0
        chunk = chunk_points(8 * _LINE_BYTES, chunk)  # 7 lines of text per triangle
        while True:
            block = list(itertools.islice(lines, 8 * chunk))
            if not block:
                break
            vals = _VERTEX.findall("".join(block))
            total += len(vals)
            if vals:
                yield np.asarray(vals, dtype=np.float64).reshape(-1, 3)
        if total % 3:
            raise DecodeError("corrupt ASCII STL: vertex count is not a multiple of 3")

    def _ascii_blocks(self) -> Iterator[np.ndarray]:
        """ASCII corners regrouped into whole triangles."""
        rest = np.empty((0, 3))
        for b in self._triangles():
            b = np.concatenate([rest, b])
            cut = len(b) - len(b) % 3
            rest = b[cut:]
            if cut:
                yield b[:cut].reshape(-1, 3, 3)

    def _blocks(self) -> Iterator[np.ndarray]:
        return self._triangles() if self.binary else self._ascii_blocks()

    def mesh(self) -> Mesh:
        check_triangles(self.n_faces, "STL mesh")
        blocks, n = [], 0
        for b in self._blocks():
            n += len(b)
            check_triangles(n, "STL mesh")
            blocks.append(b)
        return _merge(np.concatenate(blocks) if blocks else np.empty((0, 3, 3)))

    def points(self) -> Iterator[np.ndarray]:
        blocks, n, whole = [], 0, True
        for b in self._blocks():
            n += len(b)
            if whole:
                try:
                    check_triangles(n, "STL mesh")
                    blocks.append(b)
                    continue
                except MeshTooLarge:  # beyond the limit: corners merged per chunk only, recorded
                    whole = False
                    self.meta["stl_corners"] = "merged per chunk (mesh above the in-memory limit)"
                    yield from (np.unique(x.reshape(-1, 3), axis=0) for x in blocks)
                    blocks = []
            yield np.unique(b.reshape(-1, 3), axis=0)
        self.n_faces = n
        if blocks or not n:
            m = _merge(np.concatenate(blocks) if blocks else np.empty((0, 3, 3)))
            self.n_vertices = len(m.vertices)
            yield m.vertices


def _merge(tri: np.ndarray) -> Mesh:
    """STL repeats shared corners per triangle: merge identical corners into vertices."""
    if not len(tri):
        return Mesh(np.empty((0, 3)), None)
    v, inv = np.unique(tri.reshape(-1, 3), axis=0, return_inverse=True)
    return Mesh(v, inv.reshape(-1, 3).astype(np.int64), len(tri))
