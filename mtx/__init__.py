"""mtx: embed files of twelve modalities with one frozen Meta-Transformer encoder.

The public API is small: :func:`embed`, :func:`tokenize`, :func:`sniff`, :func:`load_model`.
Importing ``mtx`` is cheap: torch and the decoders load on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "embed", "load_model", "sniff", "tokenize"]

if TYPE_CHECKING:
    from .api import embed, tokenize
    from .encoder import load_model
    from .sniff import sniff


def __getattr__(name: str) -> Any:
    if name in ("embed", "tokenize"):
        from . import api

        return getattr(api, name)
    if name == "load_model":
        from .encoder import load_model

        return load_model
    if name == "sniff":
        from .sniff import sniff

        return sniff
    raise AttributeError(f"module 'mtx' has no attribute {name!r}")
