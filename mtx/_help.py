"""How the CLI reads: one escape for everything printed through rich, and help in CLI notation.

* :func:`esc` is the one helper that makes a string literal for rich: every user-supplied string
  (file names, ids, messages) and every help text goes through it, so ``photo[copy].txt`` and
  ``pip install 'mtx[ray]'`` print as written instead of being read as markup.
* :func:`value_name` is the value a parameter takes, written as CLIs write it (``PATH``,
  ``INTEGER``, ``[cls|mean|max]``; nothing for a flag). The live ``--help`` (through the classes
  below) and ``docs/cli.md`` (scripts/gen_docs.py) both use it, so they cannot disagree whatever
  Typer version renders the help: Typer >= 0.26 would otherwise print ``<bool>``,
  ``<list[str]>`` and ``{inputs}...``.

:class:`CliTyper` is ``typer.Typer`` whose commands and groups are built by :class:`CliCommand`
and :class:`CliGroup`; they escape the help texts and give each parameter the CLI notation.
"""
from __future__ import annotations

import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ._choices import param_choices


def esc(text: Any) -> str:
    """``text`` as a literal for rich markup (``[`` in file names, ids, messages and help)."""
    return escape(str(text))


def _annotation(p: Any) -> Any:
    ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    while typing.get_origin(ann) in (typing.Union, types.UnionType, list):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        ann = args[0] if args else str
    return ann


def value_name(p: Any) -> str:
    """The value a parameter takes in CLI notation: ``[a|b]`` for a choice, else TEXT, PATH,
    INTEGER, FLOAT; ``""`` for a flag. Works from the annotation (Typer >= 0.16) or the click type."""
    if getattr(p, "is_flag", False) or getattr(p, "count", False):
        return ""
    choices = param_choices(p)
    if choices:
        return "[" + "|".join(choices) + "]"
    ann = _annotation(p)
    if ann is None:
        name = str(getattr(getattr(p, "type", None), "name", "text")).upper()
        return {"BOOLEAN": "", "INTEGER RANGE": "INTEGER", "FLOAT RANGE": "FLOAT"}.get(name, name)
    if isinstance(ann, type) and issubclass(ann, Enum):
        return "[" + "|".join(str(m.value) for m in ann) + "]"
    return {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "", Path: "PATH"}.get(ann, "TEXT")


def argument_name(p: Any) -> str:
    """An argument as usage lines write it: NAME, NAME... (one or more), [NAME] (optional)."""
    name = (p.metavar or p.name).upper() + ("..." if p.nargs != 1 else "")
    return name if p.required else f"[{name}]"


class CliArgument(TyperArgument):
    """An argument shown as ``INPUTS...`` (no ``{inputs}...`` and no ``<list[str]>``)."""

    def display_type(self, ctx: Any) -> str:  # the type column: the choices, else the name says it
        return value_name(self) if param_choices(self) else ""

    def display_type_rich(self, ctx: Any) -> str | None:
        return self.display_type(ctx) or None

    def _rich_display_name(self) -> str:
        return argument_name(self)

    @property
    def display_name_raw(self) -> str:
        return (self.metavar or self.name or "").upper()

    def _usage_display_name(self) -> str:
        return argument_name(self)

    def make_metavar(self, *args: Any, **kwargs: Any) -> str:
        return argument_name(self)


class CliOption(TyperOption):
    """An option shown with its :func:`value_name` (nothing for a flag)."""

    def display_type(self, ctx: Any) -> str:
        return value_name(self)

    def display_type_rich(self, ctx: Any) -> str | None:
        return value_name(self) or None

    def make_metavar(self, *args: Any, **kwargs: Any) -> str:
        return value_name(self)


def _conventional(params: list[Any]) -> list[Any]:
    """Give each parameter the CLI notation (a class that only changes how it is shown) and
    escape its help, once: Typer adds ``--help`` and the completion options late, so this runs
    on every :meth:`get_params`."""
    for p in params:
        if type(p) is TyperArgument:
            p.__class__ = CliArgument
        elif type(p) is TyperOption:
            p.__class__ = CliOption
        if getattr(p, "help", None) and not getattr(p, "_mtx_escaped", False):
            p.help = esc(p.help)
            p._mtx_escaped = True
    return params


class _Literal:
    """Mixin for Typer's command and group classes: help texts literal, values in CLI notation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = esc(self.help) if self.help else self.help
        _conventional(self.params)

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))


class CliCommand(_Literal, TyperCommand):
    """A Typer command whose help texts are literal and whose values read like a CLI."""


class CliGroup(_Literal, TyperGroup):
    """A Typer group (the app, ``weights``) with literal help texts and the CLI notation."""


class CliTyper(typer.Typer):
    """``typer.Typer`` building :class:`CliGroup` / :class:`CliCommand`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", CliGroup)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", CliCommand)
        return super().command(*args, **kwargs)
