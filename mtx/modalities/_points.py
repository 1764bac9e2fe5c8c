"""Point-cloud readers, the order-independent subsample, farthest-point sampling and kNN.

Readers are plain numpy (PLY, PCD incl. LZF ``binary_compressed``, XYZ/PTS, OFF, OBJ, STL,
NPY/NPZ, KITTI ``.bin``) plus laspy for LAS/LAZ. They never hold a whole large cloud: every
reader yields ``xyz`` chunks of at most :data:`CHUNK` points into a :class:`Reservoir`, which
keeps a seeded, order-independent subsample of bounded size. open3d is not used: its readers
return 0 points for corrupt files without saying why, and it needs system libraries (libusb)
that a headless machine often lacks.

Determinism: the subsample keeps the points with the smallest seeded hash of their exact
coordinates (not of their position in the file), the kept points are sorted lexicographically,
and FPS starts from the point farthest from the centroid (first in that order on ties), so a
shuffled file gives bit-identical arrays.
"""
from __future__ import annotations

import io
import itertools
import math
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtx.errors import DecodeError, MissingDependency

CHUNK = 1_000_000  # points per streamed chunk (~24 MB of float64 xyz)
MAX_DECOMPRESSED = 4 << 30  # PCD binary_compressed payload cap
MAX_FACES = 20_000_000  # mesh faces parsed for surface sampling
MAX_TEXT_MESH = 1 << 30  # OFF/OBJ/ASCII STL read whole: refuse above 1 GiB

# -------------------------------------------------------------------------------------------
# Format detection (shared by sniff and load)
# -------------------------------------------------------------------------------------------

MESH_EXTS = {".off", ".obj", ".stl"}
XYZ_EXTS = {".xyz", ".xyzn", ".xyzrgb", ".pts"}
_HINT_WORDS = {"pointcloud", "pointclouds", "pcd", "pcl", "lidar", "velodyne", "modelnet",
               "modelnet40", "modelnet10", "shapenet", "scannet", "kitti", "semantickitti",
               "ouster", "points", "ply"}


def path_hint(path: Path) -> str | None:
    """A point-cloud word in the path (a directory or a token of the file name), or None."""
    parts = [p.lower() for p in path.parts[:-1]] + [path.stem.lower()]
    for part in parts:
        squashed = re.sub(r"[\s_\-]+", "", part)
        if "pointcloud" in squashed:
            return part
        for tok in re.split(r"[^a-z0-9]+", part):
            if tok in _HINT_WORDS:
                return part
    return None


def velodyne_hint(path: Path) -> bool:
    return any("velodyne" in p.lower() for p in path.parts[:-1]) or "velodyne" in path.stem.lower()


def _text_lines(head: bytes, n: int = 12) -> list[str] | None:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines()
    if len(head) >= 8192 and lines:
        lines = lines[:-1]  # the last line may be cut by the 8 KiB head
    return lines[:n] if n else lines


def _numeric_rows(lines: list[str], min_cols: int = 3) -> int:
    """How many of ``lines`` (comments/blank skipped) are rows of >= min_cols numbers; -1 if any is not."""
    rows = 0
    for ln in lines:
        s = ln.strip()
        if not s or s.startswith(("#", "//")):
            continue
        toks = re.split(r"[\s,;]+", s)
        try:
            [float(t) for t in toks]
        except ValueError:
            return -1
        if len(toks) >= min_cols:
            rows += 1
        elif rows:  # a short row after data rows
            return -1
    return rows


def _stl_binary_size_ok(head: bytes, size: int) -> bool:
    if size < 84 or len(head) < 84:
        return False
    n = int.from_bytes(head[80:84], "little")
    return n > 0 and size == 84 + 50 * n


def npy_header(fileobj) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    try:
        version = np.lib.format.read_magic(fileobj)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fileobj)
        return np.lib.format.read_array_header_2_0(fileobj)
    except Exception:  # noqa: BLE001 - anything unparsable is simply not an array header
        return None


NPZ_KEYS = ("points", "point_cloud", "pointcloud", "xyz", "pos", "pc", "coords", "vertices",
            "data", "arr_0")


def npz_member(path: Path, key: str | None) -> tuple[str, tuple[int, ...], np.dtype]:
    """Pick the array of an .npz (``key`` or the first of :data:`NPZ_KEYS` / the only (N, >=3))."""
    try:
        with zipfile.ZipFile(path) as zf:
            headers = {}
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    h = npy_header(f)
                if h is not None:
                    headers[name[:-4]] = h
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DecodeError(f"corrupt NPZ archive: {e}") from None
    if not headers:
        raise DecodeError("NPZ archive holds no arrays")
    if key is not None:
        if key not in headers:
            raise DecodeError(f"NPZ has no array {key!r} (arrays: {', '.join(sorted(headers))}); "
                              "set npz_key")
        return key, headers[key][0], headers[key][2]
    for k in NPZ_KEYS:
        if k in headers and cloud_shape(headers[k][0]):
            return k, headers[k][0], headers[k][2]
    fits = [k for k, h in headers.items() if cloud_shape(h[0])]
    if len(fits) == 1:
        return fits[0], headers[fits[0]][0], headers[fits[0]][2]
    raise DecodeError(f"NPZ arrays {', '.join(sorted(headers))}: none or several of shape (N, >=3); "
                      "set npz_key")


def cloud_shape(shape: tuple[int, ...]) -> bool:
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    return len(shape) == 2 and 3 <= shape[1] <= 12 and shape[0] >= 1


def detect_format(head: bytes, path: Path) -> tuple[str, str] | None:
    """``(format, evidence)`` from content (and, for weak signatures, the extension), else None.

    Formats: ply pcd las off obj stl-ascii stl-binary xyz npy npz kitti.
    """
    ext = path.suffix.lower()
    if head.startswith((b"ply\n", b"ply\r\n", b"ply\r")):
        return "ply", "PLY magic 'ply'"
    if head.startswith(b"LASF"):
        return "las", "LAS/LAZ magic 'LASF'"
    # PCD: a text header, then possibly binary data (so look at the header bytes only).
    pcd_head = re.sub(rb"^(#[^\n]*\n|\s*\n)*", b"", head[:4096])
    if head.startswith(b"# .PCD") or (pcd_head.startswith(b"VERSION") and b"\nFIELDS " in head
                                      and b"\nDATA " in head):
        return "pcd", "PCD header"
    lines = _text_lines(head)
    if lines is not None:
        first = lines[0].strip() if lines else ""
        body = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if re.match(r"^(ST)?C?N?4?OFF(\s|\d|$)", first):
            return "off", f"OFF header {first[:12]!r}"
        if first.lower().startswith("solid") and b"facet" in head and b"vertex" in head:
            return "stl-ascii", "ASCII STL 'solid ... facet ... vertex'"
        v_lines = sum(1 for b in body if b.startswith("v ") and len(b.split()) >= 4)
        if v_lines >= 3 and all(re.match(r"^(v|vn|vt|vp|f|l|p|o|g|s|mtllib|usemtl|curv|surf)\b", b)
                                for b in body):
            return "obj", f"Wavefront OBJ ({v_lines} 'v' lines at the start)"
        if ext in XYZ_EXTS or ext == ".txt":
            rows = _numeric_rows(lines)
            if rows >= 1:
                return "xyz", f"numeric rows of >= 3 columns ({ext or 'no extension'})"
    if ext == ".stl" and _stl_binary_size_ok(head, file_size(path)):
        return "stl-binary", "binary STL (size = 84 + 50 x triangles)"
    if head.startswith(b"\x93NUMPY"):
        return "npy", "NPY array"
    if head.startswith(b"PK\x03\x04") and ext == ".npz":
        return "npz", "NPZ archive"
    if ext == ".bin":
        return "kitti", "KITTI velodyne .bin"
    return None


_EXT_FORMAT = {".ply": "ply", ".pcd": "pcd", ".off": "off", ".obj": "obj", ".las": "las", ".laz": "las",
               ".npy": "npy", ".npz": "npz", ".bin": "kitti", **{e: "xyz" for e in XYZ_EXTS}}


def format_from_extension(head: bytes, path: Path) -> str | None:
    """The format an extension promises (for a precise error when the content does not match)."""
    ext = path.suffix.lower()
    if ext == ".stl":
        return "stl-ascii" if head.lstrip().lower().startswith(b"solid") else "stl-binary"
    return _EXT_FORMAT.get(ext)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -------------------------------------------------------------------------------------------
# Order-independent bounded subsample
# -------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def point_keys(xyz: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each point's exact float64 coordinates (not of its position)."""
    bits = np.ascontiguousarray(xyz + 0.0, dtype=np.float64).view(np.uint64)  # + 0.0: -0 -> +0
    with np.errstate(over="ignore"):
        h = _mix(np.full(len(xyz), np.uint64(seed & (2**64 - 1)) ^ np.uint64(0x9E3779B97F4A7C15)))
        for c in range(3):
            h = _mix(h ^ bits[:, c])
    return h


@dataclass
class Reservoir:
    """Keeps the ``k`` points with the smallest seeded hash: a uniform random subsample that
    depends only on the set of points, with memory bounded by ``k`` plus one chunk."""

    k: int
    seed: int
    read: int = 0
    nonfinite: int = 0
    xyz: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))

    def add(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float64)
        self.read += len(chunk)
        ok = np.isfinite(chunk).all(axis=1)
        if not ok.all():
            self.nonfinite += int((~ok).sum())
            chunk = chunk[ok]
        if not len(chunk):
            return
        keys = point_keys(chunk, self.seed)
        if len(self.keys) >= self.k:
            keep = keys < self.keys.max()
            chunk, keys = chunk[keep], keys[keep]
            if not len(chunk):
                return
        xyz = np.concatenate([self.xyz, chunk])
        keys = np.concatenate([self.keys, keys])
        if len(keys) > self.k:
            sel = np.argpartition(keys, self.k - 1)[: self.k]
            xyz, keys = xyz[sel], keys[sel]
        self.xyz, self.keys = xyz, keys

    @property
    def finite(self) -> int:
        return self.read - self.nonfinite

    def points(self) -> np.ndarray:
        """The kept points in lexicographic (x, y, z) order: a canonical order."""
        order = np.lexsort((self.xyz[:, 2], self.xyz[:, 1], self.xyz[:, 0]))
        return self.xyz[order]


# -------------------------------------------------------------------------------------------
# FPS and kNN (torch, batched, any device)
# -------------------------------------------------------------------------------------------


_FPS_GRAPHS: dict = {}  # (shape, n, dtype, device) -> (graph, static input, static output)
_FPS_GRAPHS_OK = True
_FPS_GRAPHS_MAX = 8


def farthest_point_sample(xyz, n: int):
    """Batched farthest-point sampling: [B, N, 3] -> indices [B, n] (long), on xyz's device.

    Starts at the point farthest from the centroid; ``argmax`` takes the first index on ties,
    so the result depends only on the content given a canonical point order. The loop runs
    over the ``n`` samples, vectorised over batch and points, with preallocated buffers.
    ``n > N`` repeats the last pick. On CUDA the loop (a few tiny kernels per sample, bound by
    launch overhead) is captured once per shape as a CUDA graph and replayed: ~4x faster.
    """
    global _FPS_GRAPHS_OK
    if xyz.is_cuda and _FPS_GRAPHS_OK and n >= 32:
        try:
            return _fps_graph(xyz, n)
        except RuntimeError:  # capture unsupported here (nested capture, old driver...): eager
            _FPS_GRAPHS_OK = False
            _FPS_GRAPHS.clear()
    return _fps_eager(xyz, n)


def _fps_graph(xyz, n: int):
    import torch

    key = (tuple(xyz.shape), n, xyz.dtype, str(xyz.device))
    hit = _FPS_GRAPHS.get(key)
    if hit is None:
        with torch.cuda.device(xyz.device):
            static_in = xyz.detach().clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
                _fps_eager(static_in, n)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = _fps_eager(static_in, n)
        if len(_FPS_GRAPHS) >= _FPS_GRAPHS_MAX:
            _FPS_GRAPHS.pop(next(iter(_FPS_GRAPHS)))
        hit = _FPS_GRAPHS[key] = (graph, static_in, static_out)
    graph, static_in, static_out = hit
    static_in.copy_(xyz)
    graph.replay()
    return static_out.clone()


def _fps_eager(xyz, n: int):
    import torch

    b, npts, _ = xyz.shape
    cols = xyz.transpose(1, 2).contiguous()  # [B, 3, N]: per-coordinate rows vectorise better
    diff = torch.empty_like(cols)
    d = torch.empty(b, npts, dtype=xyz.dtype, device=xyz.device)
    torch.sub(cols, cols.mean(2, keepdim=True), out=diff)
    cur = diff.square_().sum(1).argmax(1)
    mind = torch.full((b, npts), float("inf"), dtype=xyz.dtype, device=xyz.device)
    out = torch.empty(b, n, dtype=torch.long, device=xyz.device)
    for i in range(n):
        out[:, i] = cur
        p = cols.gather(2, cur.view(b, 1, 1).expand(b, 3, 1))  # [B, 3, 1]
        torch.sub(cols, p, out=diff)
        torch.sum(diff.square_(), 1, out=d)
        torch.minimum(mind, d, out=mind)
        cur = mind.argmax(1)
    return out


def fps_numpy(xyz: np.ndarray, n: int) -> np.ndarray:
    """The same FPS for one cloud [N, 3] in numpy (the loader's: no torch threads in workers).

    Identical picks to :func:`farthest_point_sample` for the same float64 input.
    """
    cols = np.ascontiguousarray(xyz.T, dtype=np.float64)
    npts = cols.shape[1]
    d, tmp = np.empty(npts), np.empty(npts)

    def dist_to(q: np.ndarray) -> np.ndarray:
        np.subtract(cols[0], q[0], out=d)
        np.multiply(d, d, out=d)
        for c in (1, 2):
            np.subtract(cols[c], q[c], out=tmp)
            np.multiply(tmp, tmp, out=tmp)
            d.__iadd__(tmp)
        return d

    cur = int(dist_to(cols.mean(axis=1)).argmax())
    mind = np.full(npts, np.inf)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = cur
        np.minimum(mind, dist_to(cols[:, cur]), out=mind)
        cur = int(mind.argmax())
    return out


def knn(points, centres, k: int):
    """Indices [B, G, k] of the ``k`` points nearest to each centre.

    Exact squared distances summed per coordinate (no ``|a|^2 - 2ab + |b|^2`` cancellation),
    the same arithmetic as FPS; memory ~2 x [B, G, N].
    """
    d = None
    for c in range(3):
        diff = centres[:, :, None, c] - points[:, None, :, c]
        d = diff.square_() if d is None else d.add_(diff.square_())
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def gather_points(points, idx):
    """points [B, N, C], idx [B, ...] -> [B, ..., C]."""
    b, c = points.shape[0], points.shape[-1]
    flat = idx.reshape(b, -1)
    out = points.gather(1, flat[..., None].expand(-1, -1, c))
    return out.reshape(*idx.shape, c)


# -------------------------------------------------------------------------------------------
# Mesh surface sampling
# -------------------------------------------------------------------------------------------


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int) -> np.ndarray | None:
    """``n`` area-uniform samples of a triangle mesh; None when the mesh has no area.

    Triangles are put in a canonical order first (corners sorted within each triangle, then
    triangles sorted), so the samples depend on the geometry, not on how the file lists it.
    """
    tri = vertices[faces]  # [T, 3, 3]
    ok = np.isfinite(tri).all(axis=(1, 2))
    tri = tri[ok]
    if not len(tri):
        return None
    c = np.lexsort((tri[:, :, 2], tri[:, :, 1], tri[:, :, 0]), axis=1)  # corners within a triangle
    tri = np.take_along_axis(tri, c[:, :, None], axis=1)
    flat = tri.reshape(len(tri), 9)
    tri = tri[np.lexsort(flat.T[::-1])]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=n, p=area / total)
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    a, b, cc = tri[pick, 0], tri[pick, 1], tri[pick, 2]
    return (1 - r1)[:, None] * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * cc


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


@dataclass
class Mesh:
    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray | None  # [T, 3] int64 (None: not read / no faces)
    n_faces: int = 0


# -------------------------------------------------------------------------------------------
# Readers. Each yields float64 xyz chunks or returns a Mesh (meshes are read whole).
# -------------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


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


@dataclass
class PlyHeader:
    fmt: str
    elements: list[PlyElement]
    offset: int
    comments: list[str]


def read_ply_header(f) -> PlyHeader:
    raw = b""
    while b"end_header" not in raw:
        more = f.read(4096)
        if not raw and not more.startswith(b"ply"):
            raise DecodeError("not a PLY file (no 'ply' magic)")
        if not more:
            raise DecodeError("corrupt PLY: no 'end_header' line")
        raw += more
        if len(raw) > (1 << 20):
            raise DecodeError("corrupt PLY: header longer than 1 MiB")
    end = raw.index(b"end_header") + len(b"end_header")
    nl = raw.find(b"\n", end)
    if nl < 0:
        nl = len(raw) - 1
    offset = nl + 1
    if not raw.startswith(b"ply"):
        raise DecodeError("not a PLY file (no 'ply' magic)")
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
            try:
                count = int(t[2])
            except ValueError:
                raise DecodeError(f"corrupt PLY header: bad element count {t[2]!r}") from None
            if count < 0:
                raise DecodeError(f"corrupt PLY header: negative element count {count}")
            elements.append(PlyElement(t[1], count, []))
        elif t[0] == "property" and elements:
            if len(t) == 5 and t[1] == "list":
                if t[2] not in _PLY_TYPES or t[3] not in _PLY_TYPES:
                    raise DecodeError(f"corrupt PLY header: unknown property type in {ln.strip()!r}")
                elements[-1].props.append((t[4], _PLY_TYPES[t[3]], _PLY_TYPES[t[2]]))
            elif len(t) == 3 and t[1] in _PLY_TYPES:
                elements[-1].props.append((t[2], _PLY_TYPES[t[1]], None))
            else:
                raise DecodeError(f"corrupt PLY header: bad property line {ln.strip()!r}")
        else:
            raise DecodeError(f"corrupt PLY header: unexpected line {ln.strip()[:60]!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DecodeError(f"corrupt PLY header: unknown format {fmt!r}")
    return PlyHeader(fmt, elements, offset, comments)


def _xyz_cols(names: list[str], what: str) -> list[int]:
    low = [n.lower() for n in names]
    try:
        return [low.index(c) for c in ("x", "y", "z")]
    except ValueError:
        raise DecodeError(f"{what} has no x/y/z fields (fields: {', '.join(names)})") from None


class PlyReader:
    """Streams PLY vertices; reads faces only when asked (small meshes -> surface samples)."""

    def __init__(self, path: Path):
        self.path = path
        self.size = file_size(path)
        with open(path, "rb") as f:
            self.h = read_ply_header(f)
        names = [e.name for e in self.h.elements]
        if "vertex" not in names:
            raise DecodeError(f"PLY has no 'vertex' element (elements: {', '.join(names) or 'none'})")
        self.vi = names.index("vertex")
        self.vertex = self.h.elements[self.vi]
        self.n = self.vertex.count
        self.cols = _xyz_cols([p[0] for p in self.vertex.props], "PLY vertex element")
        self.binary = self.h.fmt != "ascii"
        self.endian = "<" if self.h.fmt == "binary_little_endian" else ">"
        face = [e for e in self.h.elements if e.name in ("face", "faces")]
        self.face = face[0] if face else None
        self.meta = {"ply_format": self.h.fmt, "vertex_properties": [p[0] for p in self.vertex.props],
                     "elements": {e.name: e.count for e in self.h.elements}}
        if self.vertex.has_list:
            raise DecodeError("PLY vertex element with list properties is not supported")
        if self.binary:
            before = self.h.elements[: self.vi]
            if any(e.has_list for e in before):
                raise DecodeError("PLY with list elements before the vertices is not supported")
            self.vstart = self.h.offset + sum(e.count * e.dtype(self.endian).itemsize for e in before)
            rec = self.vertex.dtype(self.endian).itemsize
            need = self.n * rec
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

    def chunks(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        if self.binary:
            dt = self.vertex.dtype(self.endian)
            names = [f"f{c}" for c in self.cols]
            with open(self.path, "rb") as f:
                f.seek(self.vstart)
                left = self.n
                while left:
                    m = min(chunk, left)
                    rec = np.frombuffer(f.read(m * dt.itemsize), dtype=dt, count=m)
                    yield np.stack([rec[nm].astype(np.float64) for nm in names], axis=1)
                    left -= m
            return
        with self._open_text() as f:
            yield from self._ascii_vertices(f, chunk)

    def _open_text(self):
        fb = open(self.path, "rb")
        fb.seek(self.h.offset)
        f = io.TextIOWrapper(fb, encoding="ascii", errors="replace")
        for e in self.h.elements[: self.vi]:
            for _ in itertools.islice(f, e.count):
                pass
        return f

    def _ascii_vertices(self, f, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        left, done = self.n, 0
        nprops = len(self.vertex.props)
        while left:
            lines = list(itertools.islice(f, min(chunk, left)))
            if not lines:
                raise DecodeError(f"truncated ASCII PLY: the header declares {self.n:,} vertices, "
                                  f"the file ends after {done:,}")
            a = _loadtxt(lines, "PLY vertex", ncols=nprops, usecols=self.cols)
            if len(a) != len(lines):
                raise DecodeError(f"corrupt ASCII PLY: blank or malformed vertex line near vertex {done:,}")
            yield a
            left -= len(lines)
            done += len(lines)

    def mesh(self) -> Mesh:
        """All vertices and triangulated faces (for small meshes)."""
        if self.binary:
            v = np.concatenate(list(self.chunks())) if self.n else np.empty((0, 3))
            return self._mesh_faces(v, None)
        with self._open_text() as f:
            v = np.concatenate(list(self._ascii_vertices(f))) if self.n else np.empty((0, 3))
            return self._mesh_faces(v, f)

    def _mesh_faces(self, v: np.ndarray, f) -> Mesh:
        if self.face is None or not self.face.count:
            return Mesh(v, None)
        if self.face.count > MAX_FACES:
            raise DecodeError(f"PLY mesh with {self.face.count:,} faces is too large to sample")
        fi = self.h.elements.index(self.face)
        li = [i for i, p in enumerate(self.face.props) if p[2] is not None
              and p[0] in ("vertex_indices", "vertex_index")]
        if not li:
            return Mesh(v, None)
        li = li[0]
        if self.binary:
            if any(e.has_list for e in self.h.elements[self.vi + 1: fi]):
                return Mesh(v, None)
            start = self.vstart + sum(e.count * e.dtype(self.endian).itemsize
                                      for e in self.h.elements[self.vi: fi])
            polys = self._binary_faces(start)
        else:
            polys = self._ascii_faces(f, fi, li)
        faces = triangulate(polys)
        if len(faces) and (faces.min() < 0 or faces.max() >= len(v)):
            raise DecodeError("corrupt PLY: a face refers to a vertex that does not exist")
        return Mesh(v, faces, self.face.count)

    def _binary_faces(self, start: int):
        e, en = self.face, self.endian
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read()
        # Fast path: every face has the same corner count as the first one.
        pre = 0
        for name, vt, ct in e.props:
            if ct is not None and name in ("vertex_indices", "vertex_index"):
                break
            pre += np.dtype(vt).itemsize if ct is None else 10**9
        if pre < 10**9:
            ct = [p for p in e.props if p[0] in ("vertex_indices", "vertex_index")][0]
            csize = np.dtype(ct[2]).itemsize
            if len(data) < pre + csize:
                raise DecodeError("truncated binary PLY: the face list is cut off")
            c0 = int(np.frombuffer(data[pre: pre + csize], en + ct[2])[0])
            fields, simple = [], True
            for i, (name, vt, cnt) in enumerate(e.props):
                if cnt is None:
                    fields.append((f"p{i}", en + vt))
                elif name == ct[0]:
                    fields += [("n", en + cnt), ("idx", en + vt, (c0,))]
                else:
                    simple = False
            if simple and c0 >= 3:
                dt = np.dtype(fields)
                if len(data) >= e.count * dt.itemsize:
                    rec = np.frombuffer(data, dtype=dt, count=e.count)
                    if (rec["n"] == c0).all():
                        return rec["idx"].astype(np.int64)
        # General path: walk the records.
        polys, pos = [], 0
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
                    if name in ("vertex_indices", "vertex_index"):
                        face = vals.tolist()
                if face is not None and len(face) >= 3:
                    polys.append(face)
        except ValueError:
            raise DecodeError("truncated binary PLY: the face list is cut off") from None
        return polys

    def _ascii_faces(self, f, fi: int, li: int):
        for e in self.h.elements[self.vi + 1: fi]:
            for _ in itertools.islice(f, e.count):
                pass
        # position of the count among scalar props before the list
        pre = sum(1 for p in self.face.props[:li])
        polys = []
        for i, ln in enumerate(itertools.islice(f, self.face.count)):
            t = ln.split()
            try:
                k = int(t[pre])
                polys.append([int(x) for x in t[pre + 1: pre + 1 + k]])
            except (ValueError, IndexError):
                raise DecodeError(f"corrupt ASCII PLY: malformed face line {i}") from None
        if len(polys) < self.face.count:
            raise DecodeError(f"truncated ASCII PLY: the header declares {self.face.count:,} faces, "
                              f"the file has {len(polys):,}")
        return [p for p in polys if len(p) >= 3]


def _loadtxt(lines: list[str], what: str, ncols: int | None = None, usecols=(0, 1, 2),
             delimiter: str | None = None) -> np.ndarray:
    import warnings

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


# --- PCD ------------------------------------------------------------------------------------


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


def read_pcd_header(f) -> PcdHeader:
    raw = f.read(65536)
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
    return PcdHeader(fields, sizes, types, counts, points, data, pos, width, height)


def _pcd_dtype(h: PcdHeader) -> np.dtype:
    kind = {"F": "f", "I": "i", "U": "u"}
    return np.dtype([(f"f{i}", f"<{kind[t]}{s}", (c,)) if c > 1 else (f"f{i}", f"<{kind[t]}{s}")
                     for i, (s, t, c) in enumerate(zip(h.sizes, h.types, h.counts, strict=True))])


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


class PcdReader:
    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            self.h = read_pcd_header(f)
        h = self.h
        self.n = h.points
        # xyz positions in flattened columns (a field with COUNT c spans c columns)
        self.cols = _xyz_cols(h.fields, "PCD")
        for c in self.cols:
            if h.counts[c] != 1:
                raise DecodeError("corrupt PCD header: x/y/z with COUNT > 1")
        self.meta = {"pcd_data": h.data, "pcd_fields": h.fields, "width": h.width, "height": h.height}
        size = file_size(path)
        rec = sum(s * c for s, c in zip(h.sizes, h.counts, strict=True))
        if h.data == "binary" and size - h.offset < self.n * rec:
            raise DecodeError(f"truncated binary PCD: the header declares {self.n:,} points "
                              f"({self.n * rec:,} bytes) but only {size - h.offset:,} bytes follow")
        if h.data == "ascii" and size - h.offset < self.n * 2 * len(h.fields):
            raise DecodeError(f"truncated ASCII PCD: the header declares {self.n:,} points but the "
                              f"file has only {size - h.offset:,} bytes of data")

    def chunks(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        h = self.h
        if h.data == "binary":
            dt = _pcd_dtype(h)
            with open(self.path, "rb") as f:
                f.seek(h.offset)
                left = self.n
                while left:
                    m = min(chunk, left)
                    rec = np.frombuffer(f.read(m * dt.itemsize), dtype=dt, count=m)
                    yield np.stack([rec[f"f{c}"].astype(np.float64) for c in self.cols], axis=1)
                    left -= m
        elif h.data == "ascii":
            flat = [sum(h.counts[:c]) for c in self.cols]
            ncols = sum(h.counts)
            with open(self.path, "rb") as fb:
                fb.seek(h.offset)
                f = io.TextIOWrapper(fb, encoding="ascii", errors="replace")
                left, done = self.n, 0
                while left:
                    lines = list(itertools.islice(f, min(chunk, left)))
                    if not lines:
                        raise DecodeError(f"truncated ASCII PCD: the header declares {self.n:,} points, "
                                          f"the file ends after {done:,}")
                    yield _loadtxt(lines, "PCD point", ncols=ncols, usecols=flat)
                    left -= len(lines)
                    done += len(lines)
        else:
            yield from self._compressed()

    def _compressed(self) -> Iterator[np.ndarray]:
        h = self.h
        with open(self.path, "rb") as f:
            f.seek(h.offset)
            sizes = f.read(8)
            if len(sizes) < 8:
                raise DecodeError("truncated PCD binary_compressed: no size words")
            csize, usize = (int.from_bytes(sizes[i: i + 4], "little") for i in (0, 4))
            rec = sum(s * c for s, c in zip(h.sizes, h.counts, strict=True))
            if usize != self.n * rec:
                raise DecodeError(f"corrupt PCD binary_compressed: {usize:,} bytes uncompressed, "
                                  f"the header implies {self.n * rec:,}")
            if usize > MAX_DECOMPRESSED:
                raise DecodeError(f"PCD binary_compressed payload of {usize:,} bytes exceeds the "
                                  f"{MAX_DECOMPRESSED:,}-byte limit")
            comp = f.read(csize)
        if len(comp) < csize:
            raise DecodeError(f"truncated PCD binary_compressed: {len(comp):,} of {csize:,} bytes")
        raw = lzf_decompress(comp, usize) if usize else b""
        # Column layout: every field's values for all points, one field after another.
        cols = []
        off = 0
        kind = {"F": "f", "I": "i", "U": "u"}
        for i, (s, t, c) in enumerate(zip(h.sizes, h.types, h.counts, strict=True)):
            if i in self.cols:
                cols.append(np.frombuffer(raw, f"<{kind[t]}{s}", self.n, off).astype(np.float64))
            off += self.n * s * c
        if self.n:
            yield _ordered(cols, self.cols)


def _ordered(cols: list[np.ndarray], idx: list[int]) -> np.ndarray:
    """``cols`` were collected in file order of fields; return them in x, y, z order."""
    by_field = dict(zip(sorted(idx), cols, strict=True))
    return np.stack([by_field[i] for i in idx], axis=1)


# --- XYZ / PTS --------------------------------------------------------------------------------


def xyz_chunks(path: Path, meta: dict, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    with open(path, encoding="utf-8", errors="replace") as f:
        first: list[str] = []
        for ln in f:
            s = ln.strip()
            if s and not s.startswith(("#", "//")):
                first.append(ln)
                break
        if not first:
            return
        toks = first[0].split()
        if len(toks) == 1 and re.fullmatch(r"\d+", toks[0]):
            meta["declared_points"] = int(toks[0])  # Leica PTS: the first line is the count
            first = []
            for ln in f:
                if ln.strip():
                    first.append(ln)
                    break
            if not first:
                return
        s = first[0]
        delim = "," if "," in s else (";" if ";" in s else None)
        meta["columns"] = len(re.split(r"[\s,;]+", s.strip()))
        it = itertools.chain(first, f)
        while True:
            lines = [ln for ln in itertools.islice(it, chunk) if not ln.lstrip().startswith("//")]
            if not lines:
                return
            yield _loadtxt(lines, "XYZ", delimiter=delim)


# --- OFF / OBJ / STL ---------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    if file_size(path) > MAX_TEXT_MESH:
        raise DecodeError(f"{what} file larger than {MAX_TEXT_MESH >> 30} GiB")
    return path.read_text(encoding="utf-8", errors="replace")


def read_off(path: Path, want_faces: Callable[[int], bool]) -> Mesh:
    """OFF mesh; faces are parsed only when ``want_faces(n_vertices)`` says they will be used."""
    text = _read_text(path, "OFF")
    lines = [ln for ln in (x.split("#", 1)[0].strip() for x in text.splitlines()) if ln]
    if not lines:
        raise DecodeError("empty OFF file")
    m = re.match(r"^((?:ST)?C?N?4?OFF)\s*(.*)$", lines[0])
    if not m:
        raise DecodeError("corrupt OFF: first line is not an OFF header")
    rest = m.group(2).split()  # ModelNet's "OFF490 518 0" puts the counts on the header line
    i = 1
    if len(rest) < 2:
        if len(lines) < 2:
            raise DecodeError("corrupt OFF: no vertex/face counts")
        rest = lines[1].split()
        i = 2
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        raise DecodeError(f"corrupt OFF: bad counts {' '.join(rest)[:40]!r}") from None
    if nv < 0 or nf < 0:
        raise DecodeError("corrupt OFF: negative counts")
    if len(lines) < i + nv:
        raise DecodeError(f"truncated OFF: the header declares {nv:,} vertices, the file has "
                          f"{max(len(lines) - i, 0):,} lines left")
    v = _loadtxt(lines[i: i + nv], "OFF vertex") if nv else np.empty((0, 3))
    if not nf or not want_faces(nv):
        return Mesh(v, None, nf)
    polys = []
    for j, ln in enumerate(lines[i + nv: i + nv + nf]):
        t = ln.split()
        try:
            k = int(t[0])
            polys.append([int(x) for x in t[1: 1 + k]])
        except (ValueError, IndexError):
            raise DecodeError(f"corrupt OFF: malformed face line {j}") from None
    faces = triangulate([p for p in polys if len(p) >= 3])
    if len(faces) and (faces.min() < 0 or faces.max() >= nv):
        raise DecodeError("corrupt OFF: a face refers to a vertex that does not exist")
    return Mesh(v, faces, nf)


def read_obj(path: Path, want_faces: Callable[[int], bool]) -> Mesh:
    """Wavefront OBJ: ``v`` lines; ``f`` lines (fan-triangulated) only when they will be used."""
    text = _read_text(path, "OBJ")
    vlines, flines = [], []
    for ln in text.splitlines():
        if ln.startswith("v ") or ln.startswith("v\t"):
            vlines.append(ln[2:])
        elif ln.startswith("f ") or ln.startswith("f\t"):
            flines.append(ln[2:])
    v = _loadtxt(vlines, "OBJ vertex") if vlines else np.empty((0, 3))
    nv = len(v)
    if not want_faces(nv):
        return Mesh(v, None, len(flines))
    polys = []
    for j, ln in enumerate(flines):
        try:
            idx = [int(t.split("/")[0]) for t in ln.split()]
        except ValueError:
            raise DecodeError(f"corrupt OBJ: malformed face line {j}") from None
        idx = [k - 1 if k > 0 else nv + k for k in idx]  # 1-based; negative = relative
        if len(idx) >= 3:
            polys.append(idx)
    faces = triangulate(polys) if polys else None
    if faces is not None and len(faces) and (faces.min() < 0 or faces.max() >= nv):
        raise DecodeError("corrupt OBJ: a face refers to a vertex that does not exist")
    return Mesh(v, faces, len(flines))


def read_stl(path: Path, binary: bool) -> Mesh:
    if binary:
        dt = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
        with open(path, "rb") as f:
            head = f.read(84)
            if len(head) < 84:
                raise DecodeError("truncated binary STL header")
            n = int.from_bytes(head[80:84], "little")
            if file_size(path) < 84 + 50 * n:
                raise DecodeError(f"truncated binary STL: {n:,} triangles declared")
            tri = np.fromfile(f, dtype=dt, count=n)["v"].astype(np.float64)
    else:
        text = _read_text(path, "STL")
        num = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
        vals = re.findall(rf"vertex\s+({num})\s+({num})\s+({num})", text, flags=re.IGNORECASE)
        if len(vals) % 3:
            raise DecodeError("corrupt ASCII STL: vertex count is not a multiple of 3")
        tri = np.asarray(vals, dtype=np.float64).reshape(-1, 3, 3)
    if not len(tri):
        return Mesh(np.empty((0, 3)), None)
    # STL repeats shared corners per triangle: merge identical corners into vertices.
    v, inv = np.unique(tri.reshape(-1, 3), axis=0, return_inverse=True)
    return Mesh(v, inv.reshape(-1, 3).astype(np.int64), len(tri))


# --- LAS / LAZ, arrays, KITTI ------------------------------------------------------------------


_LAS_MIN_HEADER = {0: 227, 1: 227, 2: 227, 3: 235, 4: 375}
_LAS_MIN_RECORD = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}


def check_las_header(path: Path) -> None:
    """Validate the LAS public header block before laspy sees it.

    laspy trusts the header's counts: a corrupt VLR count makes it loop for minutes reading
    past the end of the file, so counts and offsets are checked against the file size first.
    """
    size = file_size(path)
    with open(path, "rb") as f:
        h = f.read(375)

    def bad(why: str) -> DecodeError:
        return DecodeError(f"corrupt LAS/LAZ header: {why}")

    if len(h) < 227 or h[:4] != b"LASF":
        raise bad(f"{len(h)}-byte header (a LAS header has at least 227 bytes after 'LASF')")
    major, minor = h[24], h[25]
    if major != 1 or minor not in _LAS_MIN_HEADER:
        raise bad(f"version {major}.{minor} (expected 1.0-1.4)")
    u16 = lambda o: int.from_bytes(h[o: o + 2], "little")  # noqa: E731
    u32 = lambda o: int.from_bytes(h[o: o + 4], "little")  # noqa: E731
    hsize, off, nvlr, fmt, rec = u16(94), u32(96), u32(100), h[104] & 0x3F, u16(105)
    if not _LAS_MIN_HEADER[minor] <= hsize <= min(size, 65535):
        raise bad(f"header size {hsize} is impossible for LAS 1.{minor} in a {size:,}-byte file")
    if not hsize <= off <= size:
        raise bad(f"point data offset {off:,} outside the file ({size:,} bytes)")
    if nvlr * 54 > off - hsize:
        raise bad(f"{nvlr:,} VLRs cannot fit in the {off - hsize:,} bytes before the point data")
    if fmt not in _LAS_MIN_RECORD:
        raise bad(f"point format {fmt} (expected 0-10)")
    if rec < _LAS_MIN_RECORD[fmt]:
        raise bad(f"point record length {rec} is too short for point format {fmt}")
    scales = np.frombuffer(h[131:155], "<f8")
    offsets = np.frombuffer(h[155:179], "<f8")
    if not (np.isfinite(scales).all() and (scales != 0).all() and np.isfinite(offsets).all()):
        raise bad(f"scales {scales.tolist()} / offsets {offsets.tolist()} are not usable")
    if minor >= 4 and len(h) >= 247:
        start, n_evlr = int.from_bytes(h[235:243], "little"), u32(243)
        if n_evlr and (start > size or n_evlr * 60 > size - start):
            raise bad(f"{n_evlr:,} extended VLRs at offset {start:,} do not fit in the file")


def las_chunks(path: Path, meta: dict, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    try:
        import laspy
    except ImportError:  # pragma: no cover - dependency
        raise MissingDependency("LAS/LAZ needs laspy: pip install 'laspy[lazrs]' (mtx[las])") from None
    check_las_header(path)
    try:
        fh = laspy.open(str(path))
    except laspy.errors.LaspyException as e:
        raise DecodeError(f"corrupt LAS/LAZ header: {e}") from None
    except (OSError, ValueError, EOFError, KeyError, IndexError) as e:
        raise DecodeError(f"corrupt LAS/LAZ header: {type(e).__name__}: {e}") from None
    with fh:
        hdr = fh.header
        n = int(hdr.point_count)
        meta.update(las_version=str(hdr.version), point_format=int(hdr.point_format.id),
                    compressed=bool(getattr(fh, "is_compressed", path.suffix.lower() == ".laz")),
                    declared_points=n)
        scales, offsets = np.asarray(hdr.scales, np.float64), np.asarray(hdr.offsets, np.float64)
        rec_size = hdr.point_format.size
        if not meta["compressed"]:
            have = file_size(path) - int(hdr.offset_to_point_data)
            if have < n * rec_size:
                raise DecodeError(f"truncated LAS: the header declares {n:,} points "
                                  f"({n * rec_size:,} bytes) but only {max(have, 0):,} bytes follow")
        try:
            for pts in fh.chunk_iterator(chunk):
                a = pts.array
                yield np.stack([a["X"] * scales[0] + offsets[0], a["Y"] * scales[1] + offsets[1],
                                a["Z"] * scales[2] + offsets[2]], axis=1)
        except laspy.errors.LaspyException as e:
            if "lazrs" in str(e).lower() or "backend" in str(e).lower():
                raise MissingDependency(f"LAZ needs a decompression backend: pip install lazrs ({e})") \
                    from None
            raise DecodeError(f"corrupt LAS/LAZ point data: {e}") from None
        except (OSError, ValueError, EOFError, RuntimeError) as e:
            raise DecodeError(f"corrupt LAS/LAZ point data: {type(e).__name__}: {e}") from None


def _array_xyz(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype.names:
        names = list(a.dtype.names)
        cols = _xyz_cols(names, f"{what} structured array")
        return np.stack([a[names[c]] for c in cols], axis=-1)
    if a.dtype.kind not in "fiub":
        raise DecodeError(f"{what} has dtype {a.dtype}, expected numbers")
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[1] < 3:
        raise DecodeError(f"{what} has shape {tuple(a.shape)}, expected (N, >=3) points")
    return a


def array_chunks(a: np.ndarray, what: str, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    a = _array_xyz(a, what)
    for i in range(0, len(a), chunk):
        part = a[i: i + chunk]
        yield np.asarray(part if a.dtype.names else part[:, :3], dtype=np.float64)


def npy_array(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        h = npy_header(f)
    if h is None:
        raise DecodeError("corrupt NPY header")
    if h[2].hasobject:
        raise DecodeError("NPY holds Python objects; refusing to unpickle (allow_pickle=False)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DecodeError("NPY holds Python objects; refusing to unpickle (allow_pickle=False)") \
                from None
        raise DecodeError(f"corrupt NPY: {e}") from None
    except (OSError, EOFError) as e:
        raise DecodeError(f"corrupt or truncated NPY: {e}") from None


def npz_array(path: Path, key: str | None) -> tuple[str, np.ndarray]:
    name, shape, dtype = npz_member(path, key)
    if dtype.hasobject:
        raise DecodeError(f"NPZ array {name!r} holds Python objects; refusing to unpickle")
    if math.prod(shape) * dtype.itemsize > MAX_DECOMPRESSED:
        raise DecodeError(f"NPZ array {name!r} of shape {shape} is too large to decompress (> 4 GiB)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return name, z[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DecodeError(f"corrupt NPZ array {name!r}: {e}") from None


def kitti_chunks(path: Path, fields: int, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    size = file_size(path)
    rec = 4 * fields
    if size % rec:
        raise DecodeError(f"not a KITTI velodyne scan: {size:,} bytes is not a multiple of "
                          f"{rec} (float32 x {fields})")
    n = size // rec
    with open(path, "rb") as f:
        left = n
        while left:
            m = min(chunk, left)
            a = np.fromfile(f, dtype="<f4", count=m * fields).reshape(m, fields)
            yield a[:, :3].astype(np.float64)
            left -= m


def describe_chunks(it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Pass-through that turns unexpected reader failures into DecodeError."""
    try:
        yield from it
    except (DecodeError, MissingDependency):
        raise
    except (ValueError, OSError, EOFError, IndexError, KeyError, TypeError) as e:
        raise DecodeError(f"cannot read points: {type(e).__name__}: {str(e)[:200]}") from None


__all__: list[Any] = [
    "CHUNK", "Mesh", "PcdReader", "PlyReader", "Reservoir", "detect_format", "farthest_point_sample",
    "gather_points", "knn", "las_chunks", "lzf_decompress", "npy_array", "npy_header", "npz_array",
    "path_hint", "read_obj", "read_off", "read_stl", "sample_surface", "velodyne_hint", "xyz_chunks",
]
