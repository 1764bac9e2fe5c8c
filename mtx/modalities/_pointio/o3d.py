"""The optional open3d extra (``pip install 'mtx[mesh]'``): glTF/GLB/FBX meshes, Poisson-disk sampling.

open3d is imported here only, on first use. Guards, each from a measured behaviour:
- its logger prints to **stdout** (where mtx writes data), through Python's ``sys.stdout``
  and, from C++/assimp, straight to file descriptor 1: verbosity is set to errors only, and
  every call runs with both redirected (C buffers flushed before fd 1 is restored); what it
  said becomes the reason of a failure;
- on a corrupt or unreadable file it returns an empty mesh, no exception: counts and
  finiteness are validated after reading (and glTF/GLB structure before, see :mod:`.gltf`);
- its shared library needs libusb-1.0 at import: an OSError, turned into a one-line error
  naming the apt package and the extra, as is a missing package.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import tempfile
import threading
from collections.abc import Iterator

import numpy as np

from ...errors import DecodeError, MissingDependency
from .base import Mesh, Reader
from .gltf import check_document, read_document
from .surface import canonical_triangles, triangle_areas

INSTALL = "pip install 'mtx[mesh]'"
NAMES = {"gltf": "glTF", "glb": "GLB", "fbx": "FBX"}
_LOCK = threading.Lock()
_module = None


def require_open3d(what: str):
    """The open3d module, or MissingDependency with the install command."""
    global _module
    if _module is not None:
        return _module
    try:
        import open3d
    except ImportError:
        raise MissingDependency(f"{what} needs open3d, which is not installed: {INSTALL}") from None
    except OSError as e:  # its shared library cannot load a system library
        lib = re.search(r"lib[\w.+-]+\.so[\d.]*", str(e))
        hint = " (Debian/Ubuntu: apt-get install libusb-1.0-0)" if "libusb" in str(e) else ""
        raise MissingDependency(f"{what} needs open3d, which cannot load "
                                f"{lib.group(0) if lib else 'a system library'}{hint}; "
                                f"install it, or reinstall with {INSTALL}") from None
    except Exception as e:  # noqa: BLE001 - a broken install must be one line, not a traceback
        raise MissingDependency(f"{what} needs open3d, which failed to import "
                                f"({type(e).__name__}: {str(e)[:120]}); reinstall with {INSTALL}") from None
    open3d.utility.set_verbosity_level(open3d.utility.VerbosityLevel.Error)
    _module = open3d
    return open3d


class _Captured:
    text = ""

    @property
    def reason(self) -> str:
        """open3d's first warning/error line, without colour codes and prefixes."""
        for ln in re.sub(r"\x1b\[[0-9;]*m", "", self.text).splitlines():
            ln = re.sub(r"^\[Open3D \w+\]\s*", "", ln.strip())
            if ln:
                return ln[:200]
        return ""


@contextlib.contextmanager
def captured_stdout() -> Iterator[_Captured]:
    """Capture stdout for the duration: ``sys.stdout`` (open3d's Python bindings print through
    it) and file descriptor 1 (what its C++ code and assimp write directly)."""
    cap = _Captured()
    with _LOCK, tempfile.TemporaryFile() as tmp, contextlib.redirect_stdout(io.StringIO()) as py:
        try:
            saved = os.dup(1)
        except OSError:  # no stdout at all: nothing to protect at the descriptor level
            saved = None
        if saved is not None:
            os.dup2(tmp.fileno(), 1)
        try:
            yield cap
        finally:
            if saved is not None:
                with contextlib.suppress(Exception):
                    ctypes.CDLL(None).fflush(None)  # C stdio buffers, before fd 1 is given back
                os.dup2(saved, 1)
                os.close(saved)
            tmp.seek(0)
            cap.text = py.getvalue() + tmp.read(1 << 16).decode("utf-8", errors="replace")


class Open3dReader(Reader):
    """glTF / GLB / FBX meshes through open3d (assimp). The path is read by open3d itself."""

    is_mesh = True

    def __init__(self, f, head, path, size, opts, fmt: str):
        super().__init__(f, head, path, size, opts)
        self.format, self.name = fmt, NAMES[fmt]
        if fmt in ("gltf", "glb"):
            doc, bin_len = read_document(path, head, size, fmt)
            self.meta.update(check_document(doc, path, bin_len))

    def mesh(self) -> Mesh:
        o3d = require_open3d(f"reading {self.name} meshes")
        with captured_stdout() as cap, o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Warning):
            m = o3d.io.read_triangle_mesh(str(self.path), enable_post_processing=False, print_progress=False)
        v = np.asarray(m.vertices, dtype=np.float64).reshape(-1, 3)
        t = np.asarray(m.triangles, dtype=np.int64).reshape(-1, 3)
        if not len(v):
            raise DecodeError(f"{self.name}: open3d read no geometry ({cap.reason or 'empty or corrupt file'})")
        if not np.any(v):
            raise DecodeError(f"{self.name}: all {len(v):,} vertices are 0 (open3d returns zero-filled "
                              "geometry for a corrupt file)")
        self.n_vertices, self.n_faces = len(v), len(t)
        return Mesh(v, t if len(t) else None, len(t)).check(self.name)

    def points(self) -> Iterator[np.ndarray]:
        yield self.mesh().vertices


def poisson_disk(mesh: Mesh, n: int, seed: int) -> tuple[np.ndarray | None, dict]:
    """``n`` Poisson-disk samples of the surface (open3d's sample elimination), seeded.

    The triangles go in canonical order (see :mod:`.surface`), so the result does not depend on
    the file's face order; None when the mesh has no area."""
    o3d = require_open3d("Poisson-disk mesh sampling (-O point_cloud.mesh_sampling=poisson)")
    tri, facts = canonical_triangles(mesh)
    area = triangle_areas(tri) if len(tri) else np.zeros(0)
    keep = area > 0
    if not keep.any() or not np.isfinite(area[keep].sum()):
        return None, facts
    if not keep.all():
        facts["zero_area_triangles"] = int((~keep).sum())
        tri = tri[keep]
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(tri.reshape(-1, 3)),
                                  o3d.utility.Vector3iVector(np.arange(3 * len(tri), dtype=np.int32).reshape(-1, 3)))
    with captured_stdout() as cap:
        o3d.utility.random.seed(seed)
        pc = m.sample_points_poisson_disk(n, init_factor=5)
    pts = np.asarray(pc.points, dtype=np.float64).reshape(-1, 3)
    if not len(pts) or not np.isfinite(pts).all():
        raise DecodeError(f"Poisson-disk sampling gave {len(pts)} usable points ({cap.reason or 'open3d'})")
    facts.update(surface_area=float(area.sum()), method="Poisson-disk (open3d sample elimination, init_factor 5)")
    return pts, facts
