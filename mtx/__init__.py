"""mtx: embed files of twelve modalities with one frozen Meta-Transformer encoder.

The public API is small: :func:`embed`, :func:`tokenize`, :func:`sniff`, :func:`load_model`,
:func:`export`, :func:`similar`. Importing ``mtx`` is cheap: torch and the decoders load on first use.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "embed", "export", "load_model", "similar", "sniff", "tokenize"]

if TYPE_CHECKING:
    from .api import embed, tokenize
    from .encoder import load_model
    from .export import export
    from .similar import similar
    from .sniff import sniff

# public function -> the module that defines it (imported on first use)
_FUNCTIONS = {"embed": "api", "tokenize": "api", "load_model": "encoder", "sniff": "sniff",
              "export": "export", "similar": "similar"}


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'mtx' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``mtx.sniff``, ``mtx.export`` and ``mtx.similar`` are functions whose modules have the same
    name. Importing such a module binds it on the package, over the function; refusing that
    binding keeps ``mtx.sniff(...)`` callable whatever was imported before (the modules stay
    importable: ``from mtx.similar import topk``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _FUNCTIONS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
