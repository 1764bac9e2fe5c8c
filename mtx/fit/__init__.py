"""Training a modality's tokenizer against the frozen encoder (``mtx fit``) and using it.

Modules: :mod:`.data` (decoding through the embed pipeline, the sample cache), :mod:`.labels`,
:mod:`.augment` (per-modality views for the contrastive objective), :mod:`.heads` (heads,
losses, the differentiable encoder path), :mod:`.train` (the loop), :mod:`.bundle` (the
tokenizer file). Importing this package is cheap; torch loads inside the functions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import FitInterrupted, FitOptions
    from .train import fit

__all__ = ["FitInterrupted", "FitOptions", "fit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import train

        return getattr(train, name)
    raise AttributeError(f"module 'mtx.fit' has no attribute {name!r}")
