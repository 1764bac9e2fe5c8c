"""The bounded, order-independent subsample every reader's chunks stream into.

It keeps the points with the smallest seeded hash of their exact coordinates (not of their
position in the file), so a shuffled file gives the same subsample; the kept points come out
sorted lexicographically, a canonical order for the farthest-point sampling that follows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
