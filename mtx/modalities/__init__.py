"""The twelve modalities. This list is the one place that says which exist, in sniff order."""
from __future__ import annotations

import importlib

from ._registry import get_modality, list_modalities, register_modality

# Explicit, ordered import list (timm style). Adding a modality = one module + one line here.
MODULES = (
    "image",
    "infrared",
    "xray",
    "video",
    "audio",
    "point_cloud",
    "hyperspectral",
    "tabular",
    "time_series",
    "imu",
    "graph",
    "text",
)

_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")


__all__ = ["MODULES", "get_modality", "list_modalities", "register_modality"]
