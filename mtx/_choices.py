"""The CLI's choice-valued options, declared once: Typer checks them (exit 2 with the valid values),
lists them in ``--help`` and the shell completions (scripts/gen_completions.py) read them.

Values come from the registries where there is one (encoder presets, modalities, export
formats), without importing torch: ``mtx --help`` stays light. The encoder's dtypes and poolings
live beside torch in :mod:`mtx.encoder`; a test keeps the copies here equal to them.

Typer hands a command the ``Enum`` member; :func:`plain_choices` gives the command body the plain
string instead, so what the library records (config JSON, HDF5 attributes) is unchanged.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from .export import FORMATS
from .modalities import MODULES
from .weights import PRESETS


def _choice(name: str, values: Iterable[str]) -> type[Enum]:
    return Enum(name, [(v, v) for v in values], module=__name__, qualname=name)


Preset = _choice("Preset", PRESETS)
Modality = _choice("Modality", MODULES)  # module name == registry key (the registry enforces it)
ExportFormat = _choice("ExportFormat", FORMATS)
Dtype = _choice("Dtype", ("auto", "float32", "bfloat16", "float16"))  # auto + mtx.encoder.DTYPES
Pool = _choice("Pool", ("cls", "mean", "max"))  # mtx.encoder.POOLS
StoreDtype = _choice("StoreDtype", ("float32", "float16"))
TextUnit = _choice("TextUnit", ("file", "line"))  # text.unit
Engine = _choice("Engine", ("local", "ray"))
Objective = _choice("Objective", ("supervised", "contrastive"))  # mtx.fit.options.OBJECTIVES
Task = _choice("Task", ("classification", "regression"))  # mtx.fit.options.TASKS
PredictFormat = _choice("PredictFormat", ("csv", "jsonl"))
Color = _choice("Color", ("auto", "always", "never"))  # mtx._console.COLOR_MODES

# Open-ended options (not choices: cuda:N, any weights file): option -> (words, also files?).
OPEN_COMPLETIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "--device": (("auto", "cpu", "cuda", "cuda:0", "cuda:1"), False),
    "--weights": (("seeded",), True),
    "--tokenizer": ((), True),  # MODALITY=FILE or FILE
    "--labels": (("folders",), True),
    "--val-labels": ((), True),
}


# Options whose value is KEY=CHOICE (--map GLOB=MODALITY): completion offers the choices after "=".
KEYED_COMPLETIONS: dict[str, type[Enum]] = {"--map": Modality}


def values(choice: type[Enum]) -> tuple[str, ...]:
    return tuple(m.value for m in choice)


def param_choices(param: Any) -> tuple[str, ...] | None:
    """The choices of a Typer/Click parameter, or None (Typer >= 0.16 keeps the annotation; older
    versions a click Choice type)."""
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(ann, type) and issubclass(ann, Enum):
        return values(ann)
    choices = getattr(getattr(param, "type", None), "choices", None)
    return tuple(getattr(c, "value", c) for c in choices) if choices else None


def plain_choices(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Typer command so that its body receives choice values as plain strings."""

    @functools.wraps(command)  # Typer reads the signature (and the Enum annotations) through it
    def run(**kwargs: Any) -> Any:
        return command(**{k: v.value if isinstance(v, Enum) else v for k, v in kwargs.items()})

    return run
