"""Which point-cloud format a file is, from its first bytes (and, for weak signatures, the path).

Shared by ``point_cloud.sniff`` (which hands the answer to the loader as ``Sniffed.format``)
and by :func:`~mtx.modalities._pointio.open_reader` when it is called without one.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# Format names: what ``Evidence.format`` / ``Sniffed.format`` carry and ``meta["format"]`` records.
FORMATS = ("ply", "pcd", "las", "off", "obj", "stl-ascii", "stl-binary", "xyz", "npy", "npz", "kitti",
           "gltf", "glb", "fbx")
OPEN3D_FORMATS = ("gltf", "glb", "fbx")  # read through the optional open3d extra
MESH_EXTS = {".off", ".obj", ".stl"}
XYZ_EXTS = {".xyz", ".xyzn", ".xyzrgb", ".pts"}
_HINT_WORDS = {"pointcloud", "pointclouds", "pcd", "pcl", "lidar", "velodyne", "modelnet",
               "modelnet40", "modelnet10", "shapenet", "scannet", "kitti", "semantickitti",
               "ouster", "points", "ply"}
_EXT_FORMAT = {".ply": "ply", ".pcd": "pcd", ".off": "off", ".obj": "obj", ".las": "las", ".laz": "las",
               ".npy": "npy", ".npz": "npz", ".bin": "kitti", ".gltf": "gltf", ".glb": "glb", ".fbx": "fbx",
               **{e: "xyz" for e in XYZ_EXTS}}


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


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


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


_NAME = re.compile(r"^[A-Za-z_][\w.\-()\[\]/]*$")


def _numeric_rows(lines: list[str], min_cols: int = 3) -> int:
    """How many of ``lines`` (comments/blank skipped) are rows of >= min_cols numbers; -1 if any is not.

    The first line may be a header of >= min_cols column names (``x y z``, ``X,Y,Z,R,G,B``)."""
    rows, seen = 0, False
    for ln in lines:
        s = ln.strip()
        if not s or s.startswith(("#", "//")):
            continue
        toks = re.split(r"[\s,;]+", s)
        first, seen = not seen, True
        try:
            [float(t) for t in toks]
        except ValueError:
            if first and len(toks) >= min_cols and all(_NAME.match(t) for t in toks):
                continue  # a header line of column names
            return -1
        if len(toks) >= min_cols:
            rows += 1
        elif rows:  # a short row after data rows
            return -1
    return rows


def stl_binary_size_ok(head: bytes, size: int) -> bool:
    if size < 84 or len(head) < 84:
        return False
    n = int.from_bytes(head[80:84], "little")
    return n > 0 and size == 84 + 50 * n


def npy_header(fileobj) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran_order, dtype) of an NPY header at the file position, or None."""
    try:
        version = np.lib.format.read_magic(fileobj)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fileobj)
        return np.lib.format.read_array_header_2_0(fileobj)
    except Exception:  # noqa: BLE001 - anything unparsable is simply not an array header
        return None


def cloud_shape(shape: tuple[int, ...]) -> bool:
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    return len(shape) == 2 and 3 <= shape[1] <= 12 and shape[0] >= 1


def record_xyz(dtype: np.dtype) -> bool:
    """A record dtype with numeric fields named x, y, z (any case): LiDAR tools' NPY layout."""
    if not dtype.names:
        return False
    low = {n.lower(): n for n in dtype.names}
    return all(c in low and dtype.fields[low[c]][0].kind in "fiu" and not dtype.fields[low[c]][0].shape
               for c in "xyz")


def cloud_array(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """An (N, 3..12) numeric array, or N records with x/y/z fields."""
    if dtype.names:
        return record_xyz(dtype) and len(shape) == 1 and shape[0] >= 1
    return cloud_shape(shape) and dtype.kind in "fiu"


def _gltf_json(head: bytes) -> bool:
    """A JSON object with an ``"asset": {`` member (every glTF 2.0 file has one)."""
    return head.lstrip().startswith(b"{") and re.search(rb'"asset"\s*:\s*\{', head) is not None


def _exchange_format(head: bytes, ext: str) -> tuple[str, str] | None:
    """glTF / GLB / FBX: meshes read through the open3d extra."""
    if head.startswith(b"glTF") and len(head) >= 12 and int.from_bytes(head[4:8], "little") in (1, 2):
        return "glb", "GLB magic 'glTF'"
    if head.startswith(b"Kaydara FBX Binary"):
        return "fbx", "FBX magic 'Kaydara FBX Binary'"
    if ext == ".fbx" and head.lstrip().startswith(b"; FBX"):
        return "fbx", "ASCII FBX header '; FBX'"
    if _gltf_json(head) and (ext == ".gltf" or any(k in head for k in (b'"accessors"', b'"meshes"'))):
        return "gltf", "glTF JSON with an \"asset\" object"
    return None


def detect_format(head: bytes, path: Path, size: int | None = None) -> tuple[str, str] | None:
    """``(format, evidence)`` from content (and, for weak signatures, the extension), else None.

    Formats: see :data:`FORMATS`. ``size`` (the file size) saves a ``stat`` when known.
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
    exchange = _exchange_format(head, ext)
    if exchange:
        return exchange
    lines = _text_lines(head)
    if lines is not None:
        text = _text_format(lines, head, ext)
        if text:
            return text
    if ext == ".stl" and stl_binary_size_ok(head, file_size(path) if size is None else size):
        return "stl-binary", "binary STL (size = 84 + 50 x triangles)"
    if head.startswith(b"\x93NUMPY"):
        return "npy", "NPY array"
    if head.startswith(b"PK\x03\x04") and ext == ".npz":
        return "npz", "NPZ archive"
    if ext == ".bin":
        return "kitti", "KITTI velodyne .bin"
    return None


def _text_format(lines: list[str], head: bytes, ext: str) -> tuple[str, str] | None:
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
        if _numeric_rows(lines) >= 1:
            return "xyz", f"numeric rows of >= 3 columns ({ext or 'no extension'})"
    return None


def format_from_extension(head: bytes, path: Path) -> str | None:
    """The format an extension promises (for a precise error when the content does not match)."""
    ext = path.suffix.lower()
    if ext == ".stl":
        return "stl-ascii" if head.lstrip().lower().startswith(b"solid") else "stl-binary"
    return _EXT_FORMAT.get(ext)
