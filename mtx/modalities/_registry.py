"""The modality registry: filled at import time by ``@register_modality``; duplicates raise."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from ._base import Modality

_MODALITIES: dict[str, "Modality"] = {}


def register_modality(cls: type["Modality"]) -> type["Modality"]:
    """Class decorator: instantiate and register a modality under ``cls.name``.

    The name must equal the module name (``mtx/modalities/<name>.py``) so that the registry and
    the file layout cannot disagree.
    """
    name = cls.name
    module = cls.__module__.rsplit(".", 1)[-1]
    if name != module:
        raise RuntimeError(f"modality {name!r} is defined in module {module!r}; they must match")
    if name in _MODALITIES:
        raise RuntimeError(f"modality {name!r} is registered twice")
    cfg = cls.__dict__.get("Config")
    if cfg is not None and not cfg.__dict__.get("owner"):
        cfg.owner = name  # messages name the modality: "image.size=0: expected ..."
    _MODALITIES[name] = cls()
    return cls


def get_modality(name: str) -> "Modality":
    from . import _ensure_loaded

    _ensure_loaded()
    try:
        return _MODALITIES[name]
    except KeyError:
        raise UsageError(
            f"unknown modality {name!r}; choose one of: {', '.join(_MODALITIES)}"
        ) from None


def list_modalities() -> list["Modality"]:
    """Every registered modality, in the order of ``MODULES`` (the sniffing order)."""
    from . import MODULES, _ensure_loaded

    _ensure_loaded()
    order = {n: i for i, n in enumerate(MODULES)}
    return sorted(_MODALITIES.values(), key=lambda m: order.get(m.name, len(order)))
