"""The reader contract, the mesh record and the helpers every format module shares."""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...errors import DecodeError, MissingDependency

CHUNK = 1_000_000  # points per streamed chunk (~24 MB of float64 xyz)
# A mesh sampled on its surface is held whole (vertices, triangles, then the canonically sorted
# triangle corners): ~400 bytes per triangle at the peak. Larger meshes give their vertices. The
# caps are these or what fits the per-sample memory budget (mtx.modalities._budget), the lower.
MAX_MESH_TRIANGLES = 2_000_000
MAX_MESH_VERTICES = 3 * MAX_MESH_TRIANGLES
TRIANGLE_BYTES = 400
VERTEX_BYTES = 64  # float64 xyz, in chunks and then concatenated


def chunk_points(record_bytes: int, cap: int = CHUNK) -> int:
    """Points per streamed chunk for records of ``record_bytes``: at most ``cap``, and a chunk
    (its raw records plus float64 xyz and a copy) at most 1/8 of the per-sample budget."""
    from .._budget import chunk_items

    return chunk_items(record_bytes + 48, cap)


class MeshTooLarge(Exception):
    """A mesh beyond the in-memory limits; the caller streams its vertices instead."""


@dataclass
class Mesh:
    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray | None  # [T, 3] int64 triangles (None: the file has none)
    n_faces: int = 0  # polygons as the file counts them (before triangulation)
    facts: dict = field(default_factory=dict)  # what reading skipped or changed

    def check(self, what: str) -> Mesh:
        """Refuse faces that refer to vertices the file does not have."""
        f = self.faces
        if f is not None and len(f) and (f.min() < 0 or f.max() >= len(self.vertices)):
            raise DecodeError(f"corrupt {what}: a face refers to a vertex that does not exist "
                              f"({len(self.vertices):,} vertices)")
        return self


class Reader:
    """One open file of one format; the file is opened once, by :func:`open_reader`.

    ``points()`` streams float64 xyz chunks of at most :data:`CHUNK` points: a point set, or a
    mesh's vertices. Mesh formats (``is_mesh``) also offer ``mesh()``, which raises
    :class:`MeshTooLarge` before allocating when the mesh exceeds the in-memory limits.
    ``meta`` collects JSON-able facts (filled while reading). Use as a context manager.
    """

    format = ""
    is_mesh = False

    def __init__(self, f: BinaryIO | None, head: bytes, path: Path, size: int, opts: ReadOptions):
        self.f, self.head, self.path, self.size, self.opts = f, head, path, size, opts
        self.meta: dict = {}
        self.n_vertices: int | None = None  # known from a header, or after reading
        self.n_faces = 0  # polygons the file declares (known from a header, or after reading)

    def points(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def mesh(self) -> Mesh:
        raise DecodeError(f"{self.format} files hold no faces")

    def rewind(self, pos: int = 0) -> BinaryIO:
        assert self.f is not None
        self.f.seek(pos)
        return self.f

    def close(self) -> None:
        if self.f is not None:
            self.f.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TextView(io.TextIOWrapper):
    """A text view of a reader's binary handle that leaves the handle open when dropped."""

    def __del__(self) -> None:
        try:
            self.detach()
        except ValueError:
            pass


@dataclass(frozen=True)
class ReadOptions:
    npz_key: str | None = None  # array inside an .npz (default: points/xyz/... or the only fit)
    bin_fields: int = 4  # float32 values per point in a KITTI velodyne .bin


def header_bytes(f: BinaryIO, head: bytes, done: Callable[[bytes], bool], limit: int,
                 step: int = 4096) -> bytes:
    """The file's first bytes up to where ``done`` is satisfied, starting from ``head``.

    Reads on from ``len(head)`` only when the sniffed head is too short; stops at EOF or
    ``limit`` bytes (the caller reports what is missing)."""
    raw = head
    if done(raw):
        return raw
    f.seek(len(raw))
    while len(raw) < limit:
        more = f.read(step)
        if not more:
            break
        raw += more
        if done(raw):
            break
    return raw


MAX_LINE = 1 << 16  # characters in one text line of a point format (a row of numbers)


def bounded_lines(f, what: str, limit: int = MAX_LINE) -> Iterator[str]:
    """The lines of a text view, refusing one longer than ``limit`` characters (a file with no
    newlines would otherwise be read whole as one line)."""
    while line := f.readline(limit + 1):
        if len(line) > limit and not line.endswith("\n"):
            raise DecodeError(f"{what} has a line longer than {limit:,} characters: not rows of numbers")
        yield line


def xyz_cols(names: list[str], what: str) -> list[int]:
    low = [n.lower() for n in names]
    try:
        return [low.index(c) for c in ("x", "y", "z")]
    except ValueError:
        raise DecodeError(f"{what} has no x/y/z fields (fields: {', '.join(names)})") from None


def loadtxt(lines: list[str], what: str, ncols: int | None = None, usecols=(0, 1, 2),
            delimiter: str | None = None) -> np.ndarray:
    """Numeric text rows -> float64 [n, len(usecols)], or a one-line DecodeError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.loadtxt(lines, dtype=np.float64, delimiter=delimiter, usecols=usecols,
                           ndmin=2, comments="#")
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else "not numeric"
        raise DecodeError(f"corrupt {what} line: {msg[:120]}") from None
    if ncols is not None and lines:
        first = lines[0].split()
        if first and len(first) < ncols:
            raise DecodeError(f"corrupt {what} line: {len(first)} values, the header declares {ncols}")
    return a


def triangulate(polys: list[list[int]] | np.ndarray) -> np.ndarray:
    """Fan-triangulate polygons given as index lists -> [T, 3] int64."""
    if isinstance(polys, np.ndarray):
        if polys.ndim == 2 and polys.shape[1] == 3:
            return polys.astype(np.int64)
        if polys.ndim == 2 and polys.shape[1] > 3:
            m = polys.shape[1]
            return np.concatenate([polys[:, [0, i, i + 1]] for i in range(1, m - 1)]).astype(np.int64)
        polys = polys.tolist()
    out = [(p[0], p[i], p[i + 1]) for p in polys for i in range(1, len(p) - 1)]
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


class Triangles:
    """Polygons fan-triangulated in blocks as they are parsed (bounded Python overhead), capped
    at :data:`MAX_MESH_TRIANGLES`; polygons with fewer than 3 corners are skipped."""

    BLOCK = 65536

    def __init__(self, what: str):
        self.what, self.n = what, 0
        self.blocks: list[np.ndarray] = []
        self.polys: list[list[int]] = []

    def add(self, poly: list[int]) -> None:
        if len(poly) < 3:
            return
        self.polys.append(poly)
        self.n += len(poly) - 2
        check_triangles(self.n, self.what)
        if len(self.polys) >= self.BLOCK:
            self.blocks.append(triangulate(self.polys))
            self.polys = []

    def array(self) -> np.ndarray:
        if self.polys:
            self.blocks.append(triangulate(self.polys))
            self.polys = []
        return np.concatenate(self.blocks) if self.blocks else np.empty((0, 3), np.int64)


def max_triangles() -> int:
    from .._budget import allowed

    return min(MAX_MESH_TRIANGLES, allowed(TRIANGLE_BYTES))


def max_vertices() -> int:
    from .._budget import allowed

    return min(MAX_MESH_VERTICES, allowed(VERTEX_BYTES))


def check_triangles(n: int, what: str) -> None:
    cap = max_triangles()
    if n > cap:
        raise MeshTooLarge(f"{what} has {n:,} or more triangles, above the {cap:,} "
                           "sampled on the surface (the per-sample memory budget)")


def check_vertices(n: int, what: str) -> None:
    cap = max_vertices()
    if n > cap:
        raise MeshTooLarge(f"{what} has {n:,} or more vertices, above the {cap:,} "
                           "held for surface sampling (the per-sample memory budget)")


_READ_ERRORS = (ValueError, OSError, EOFError, IndexError, KeyError, TypeError)


@contextlib.contextmanager
def decode_errors():
    """Turn an unexpected failure inside a reader into a one-line DecodeError."""
    try:
        yield
    except (DecodeError, MissingDependency, MeshTooLarge):
        raise
    except _READ_ERRORS as e:
        raise DecodeError(f"cannot read points: {type(e).__name__}: {str(e)[:200]}") from None


def describe_chunks(it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Pass-through that turns unexpected reader failures into DecodeError."""
    with decode_errors():
        yield from it
