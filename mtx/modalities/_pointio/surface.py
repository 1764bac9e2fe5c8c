"""Points on a mesh's surface: area-weighted triangle sampling, deterministic and order-free.

Triangles are put in a canonical order first (corners sorted within each triangle, then the
triangles sorted), so the samples depend on the geometry and the seed, not on how the file
lists the faces or which container holds them (PLY, OFF, OBJ, STL, glTF... give one result).
"""
from __future__ import annotations

import numpy as np

from .base import Mesh


def canonical_triangles(mesh: Mesh) -> tuple[np.ndarray, dict]:
    """Finite triangles [T, 3, 3] float64 in canonical order, and what was skipped.

    Triangles with a NaN/inf corner are dropped (``nonfinite_triangles``); zero-area ones are
    kept (they are never picked) and counted (``zero_area_triangles``).
    """
    assert mesh.faces is not None
    tri = mesh.vertices[mesh.faces]  # [T, 3, 3]
    facts: dict = {"triangles": int(len(tri))}
    ok = np.isfinite(tri).all(axis=(1, 2))
    if not ok.all():
        facts["nonfinite_triangles"] = int((~ok).sum())
        tri = tri[ok]
    if not len(tri):
        return tri, facts
    c = np.lexsort((tri[:, :, 2], tri[:, :, 1], tri[:, :, 0]), axis=1)  # corners within a triangle
    tri = np.take_along_axis(tri, c[:, :, None], axis=1)
    flat = tri.reshape(len(tri), 9)
    tri = tri[np.lexsort(flat.T[::-1])]
    return tri, facts


def triangle_areas(tri: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def sample_surface(mesh: Mesh, n: int, seed: int) -> tuple[np.ndarray | None, dict]:
    """``n`` area-weighted samples of a triangle mesh and the facts; None when it has no area.

    Each sample picks a triangle with probability proportional to its area, then a uniform
    point in it (``sqrt`` of the first uniform for the barycentric weights).
    """
    tri, facts = canonical_triangles(mesh)
    if not len(tri):
        return None, facts
    area = triangle_areas(tri)
    zero = int((area <= 0).sum())
    if zero:
        facts["zero_area_triangles"] = zero
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        return None, facts
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=n, p=area / total)
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    a, b, c = tri[pick, 0], tri[pick, 1], tri[pick, 2]
    pts = (1 - r1)[:, None] * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * c
    facts["surface_area"] = float(total)
    return pts, facts
