"""Synthetic inputs for ``mtx bench`` and benchmarks/: ``GENERATORS[modality](dir, n) -> files``.

Each modality writes its own examples (:meth:`mtx.modalities._base.Modality.synth`, beside its
loader); this mapping is derived from the registry, so a new modality needs no line here.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .modalities import list_modalities

GENERATORS: dict[str, Callable[..., list[Path]]] = {m.name: m.synth for m in list_modalities()}
