"""Synthetic inputs for ``mtx bench`` and benchmarks/: ``GENERATORS[modality](dir, n) -> files``.

Each modality writes its own examples (:meth:`mtx.modalities._base.Modality.synth`, beside its
loader); this mapping is derived from the registry, so a new modality needs no line here.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .modalities import list_modalities
from .modalities._base import Modality


def _point_cloud(d: Path, n: int, points: int = 2048) -> list[Path]:
    """Interim home of point_cloud's examples until ``point_cloud.synth`` exists (its module is
    being rewritten): ``n`` binary PLY clouds of anisotropic Gaussian points."""
    rng, out = np.random.default_rng(5), []
    for i in range(n):
        v = rng.normal(size=(points, 3)).astype("<f4") * np.array([1, 0.5 + i % 3, 0.3], "<f4")
        header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {points}\nproperty float x\n"
                  "property float y\nproperty float z\nend_header\n").encode()
        p = d / f"cloud{i:05d}.ply"
        p.write_bytes(header + v.tobytes())
        out.append(p)
    return out


_INTERIM = {"point_cloud": _point_cloud}


def _generator(m: Modality) -> Callable[..., list[Path]]:
    if type(m).synth is Modality.synth and m.name in _INTERIM:
        return _INTERIM[m.name]
    return m.synth


GENERATORS: dict[str, Callable[..., list[Path]]] = {m.name: _generator(m) for m in list_modalities()}
