"""Point-cloud file I/O: one module per format family, one entry point, :func:`open_reader`.

=============  =====================================================================
module         holds
=============  =====================================================================
``detect``     format detection from the first bytes (+ path hints), shared with sniff
``base``       the :class:`Reader` contract, :class:`Mesh`, limits, shared text helpers
``ply``        PLY ASCII / binary: vertices streamed, faces for meshes
``pcd``        PCD ASCII / binary / LZF ``binary_compressed``
``las``        LAS / LAZ through laspy, header checked first, chunked
``xyz``        XYZ / XYZN / XYZRGB / PTS text rows
``arrays``     NPY / NPZ arrays, KITTI velodyne ``.bin``
``meshes``     OFF, OBJ, STL (ASCII / binary)
``surface``    area-weighted surface samples of a mesh (canonical triangle order)
``gltf``       glTF / GLB structure checks (before open3d reads them)
``o3d``        the optional open3d extra: glTF / GLB / FBX, Poisson-disk sampling
``reservoir``  the bounded, order-independent subsample the chunks stream into
=============  =====================================================================

Readers are plain numpy (open3d only for glTF/GLB/FBX and Poisson sampling, laspy for LAS)
and never hold a whole large cloud: ``points()`` yields float64 xyz chunks of at most
:data:`CHUNK` points. The file is opened once per reader, and not at all to detect its format
when the caller passes what sniffing learned (:class:`~mtx.modalities._base.Sniffed`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import DecodeError
from .arrays import KittiReader, NpyReader, NpzReader, npz_member
from .base import CHUNK, Mesh, MeshTooLarge, Reader, ReadOptions, decode_errors, describe_chunks
from .detect import FORMATS, OPEN3D_FORMATS, detect_format, format_from_extension
from .gltf import companions as gltf_companions
from .las import LasReader
from .meshes import ObjReader, OffReader, StlReader
from .o3d import Open3dReader, poisson_disk
from .pcd import PcdReader
from .ply import PlyReader
from .reservoir import Reservoir
from .surface import sample_surface
from .xyz import XyzReader

if TYPE_CHECKING:
    from .._base import Sniffed

HEAD = 8192  # bytes read to detect a format when nothing was sniffed (= mtx.sniff.HEAD_BYTES)
NOT_OURS = ("not a point-cloud format mtx reads (PLY, PCD, XYZ/PTS, OFF, OBJ, STL, LAS/LAZ, NPY/NPZ, "
            "KITTI .bin, glTF/GLB/FBX)")
_READERS = {"ply": PlyReader, "pcd": PcdReader, "las": LasReader, "xyz": XyzReader, "npy": NpyReader,
            "npz": NpzReader, "kitti": KittiReader, "off": OffReader, "obj": ObjReader}


def open_reader(path: str | Path, sniffed: Sniffed | None = None, *, npz_key: str | None = None,
                bin_fields: int = 4) -> Reader:
    """Open ``path`` as a point set or mesh reader.

    Args:
        path: the file.
        sniffed: what sniffing learned (head bytes, format). Its format is trusted; without
            one (or with ``format=''``) the format is detected from the head, which is then
            read from the same handle that the reader goes on to use.
        npz_key: the array of an ``.npz`` to read (default: ``points``/``xyz``/... or the only fit).
        bin_fields: float32 values per point in a KITTI velodyne ``.bin``.

    Returns:
        A :class:`Reader` (a context manager; close it to close the file).

    Raises:
        DecodeError: empty, unreadable or not a point-cloud format; a corrupt header.
    """
    path = Path(path)
    opts = ReadOptions(npz_key=npz_key, bin_fields=bin_fields)
    head = sniffed.head if sniffed is not None else b""
    fmt = sniffed.format if sniffed is not None and sniffed.format in FORMATS else ""
    if fmt in OPEN3D_FORMATS:  # open3d reads the path itself: no handle of ours
        return _make(fmt, None, head, path, _size(path), opts)
    f = _open(path)
    try:
        size = os.fstat(f.fileno()).st_size
        if not head:
            head = f.read(HEAD)
        if not head:
            raise DecodeError("empty file (0 bytes)")
        if not fmt:
            hit = detect_format(head, path, size)
            fmt = hit[0] if hit else (format_from_extension(head, path) or "")
        if not fmt:
            raise DecodeError(NOT_OURS)
        if fmt in OPEN3D_FORMATS:
            f.close()
            f = None
        return _make(fmt, f, head, path, size, opts)
    except BaseException:
        if f is not None:
            f.close()
        raise


def _make(fmt: str, f, head: bytes, path: Path, size: int, opts: ReadOptions) -> Reader:
    with decode_errors():
        if fmt in OPEN3D_FORMATS:
            return Open3dReader(f, head, path, size, opts, fmt)
        if fmt in ("stl-ascii", "stl-binary"):
            return StlReader(f, head, path, size, opts, fmt == "stl-binary")
        return _READERS[fmt](f, head, path, size, opts)


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DecodeError("file disappeared before it could be read") from None
    except IsADirectoryError:
        raise DecodeError("is a directory, not a file") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as e:
        raise DecodeError(f"cannot read: {e.strerror or e}") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise DecodeError(f"cannot read: {e.strerror or e}") from None


__all__ = ["CHUNK", "FORMATS", "Mesh", "MeshTooLarge", "Reader", "Reservoir", "describe_chunks",
           "detect_format", "gltf_companions", "npz_member", "open_reader", "poisson_disk", "sample_surface"]
