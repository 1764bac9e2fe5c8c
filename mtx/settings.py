"""Settings declared once: each option's type and allowed range, checked before any work; and
the comparison of recorded settings with new ones (what differs, one line each, and how to fix it).

A field of a config dataclass (:class:`mtx.pipeline.EmbedOptions`, every modality's ``Config``)
declares its range with :func:`setting`; :func:`check_fields` coerces every value to the field's
type (``"32"`` -> 32, ``2`` -> 2.0, ``"yes"`` -> True) and refuses one outside its range with an
:class:`OptionError` naming the field and the values it allows. ``docs/modalities/*.md`` show the
same ranges (scripts/gen_docs.py reads them with :func:`allowed`).

Torch-free: the CLI imports it before anything heavy.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any

from .errors import UsageError

KEY = "mtx_range"  # the dataclass field metadata key


class OptionError(UsageError, ValueError):
    """An option value of the wrong type or outside its range (exit 2; a ValueError in the API)."""


@dataclass(frozen=True)
class Range:
    """The values a setting allows (every bound optional)."""

    lo: float | None = None  # smallest allowed value (inclusive)
    above: float | None = None  # values must be greater than this (exclusive)
    hi: float | None = None  # largest allowed value (inclusive)
    choices: tuple[Any, ...] | None = None
    multiple_of: int | None = None
    check: Callable[[Any], str | None] | None = None  # extra test: the problem, or None
    flag: str | None = None  # the CLI option that sets it, for messages
    note: str = ""  # what the check tests, for the allowed-values text

    def describe(self, kind: str) -> str:
        """The allowed values as text: ``an integer from 16 to 4096``, ``one of: a, b``."""
        if self.choices is not None:
            return "one of: " + ", ".join(repr(c) if isinstance(c, str) and not c.isidentifier() else str(c)
                                          for c in self.choices)
        low = (f">= {_num(self.lo)}" if self.lo is not None else
               f"> {_num(self.above)}" if self.above is not None else "")
        if self.lo is not None and self.hi is not None:
            bounds = f"from {_num(self.lo)} to {_num(self.hi)}"
        else:
            bounds = " and ".join(x for x in (low, f"<= {_num(self.hi)}" if self.hi is not None else "") if x)
        parts = [x for x in (bounds, f"a multiple of {self.multiple_of}" if self.multiple_of else "", self.note) if x]
        return f"{kind} {', '.join(parts)}" if parts else kind


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **bounds: Any) -> Any:
    """A dataclass field with its allowed values (see :class:`Range` for ``bounds``).

    Example:
        >>> @dataclass
        ... class C:
        ...     size: int = setting(224, lo=16, hi=4096)
    """
    meta = {KEY: Range(**bounds)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _kind(tp: Any) -> tuple[type | None, bool]:
    """(the base type, whether None is allowed) of an annotation: ``int | None`` -> (int, True)."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (_kind(rest[0])[0] if len(rest) == 1 else None), True
    origin = typing.get_origin(tp)
    if origin is not None:
        return origin if isinstance(origin, type) else None, False
    return (tp if isinstance(tp, type) else None), False


_KIND_TEXT = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
              dict: "a mapping"}


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as the annotation ``tp`` asks, or raise ValueError (bools, ints and floats from
    their text; an integral float for an int; a number for a string)."""
    base, optional = _kind(tp)
    if value is None:
        if optional or base is None:
            return None
        raise ValueError
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError
    if base is int:
        if isinstance(value, str):
            value = float(value.strip()) if value.strip() else math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise ValueError
        return int(value)
    if base is float:
        if isinstance(value, str):
            value = float(value.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError
        return float(value)
    if base is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError
        return value if isinstance(value, str) else json.dumps(value)
    if base in (list, tuple, dict) and not isinstance(value, (list, tuple) if base is not dict else dict):
        raise ValueError
    return value


def _in_range(value: Any, r: Range) -> bool:
    if value is None:
        return True
    if r.choices is not None:
        return value in r.choices
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (r.lo is not None and value < r.lo) or (r.hi is not None and value > r.hi):
            return False
        if r.above is not None and value <= r.above:
            return False
        if r.multiple_of and value % r.multiple_of:
            return False
    return True


def check_value(owner: str, f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """``value`` coerced to field ``f`` of ``owner`` and checked against its range.

    Raises:
        OptionError: "<owner>.<field>=<value>: expected <allowed values>".
    """
    r = f.metadata.get(KEY)
    try:
        out = coerce(value, tp)
    except (ValueError, TypeError):
        raise OptionError(_bad(owner, f, value, allowed(f, tp))) from None
    if r is not None:
        if not _in_range(out, r):
            raise OptionError(_bad(owner, f, value, allowed(f, tp)))
        why = r.check(out) if r.check is not None and out is not None else None
        if why:
            raise OptionError(f"{_subject(owner, f, value)}: {why}")
    return out


def _subject(owner: str, f: dataclasses.Field, value: Any) -> str:
    """How a message names a setting, for the API and the CLI alike: ``image.size='abc'``,
    ``timeout=0 (--timeout)``, ``imu.window=-5 (--window)``."""
    r = f.metadata.get(KEY)
    flag = r.flag if r is not None else None
    name = f"{owner}.{f.name}" if owner else f.name
    return f"{name}={_show(value)}" + (f" ({flag})" if flag else "")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _bad(owner: str, f: dataclasses.Field, value: Any, what: str) -> str:
    return f"{_subject(owner, f, value)}: expected {what}"


def allowed(f: dataclasses.Field, tp: Any = None) -> str:
    """The values field ``f`` allows, as text (``an integer from 16 to 4096``; for the docs)."""
    base, optional = _kind(tp if tp is not None else f.type)
    kind = _KIND_TEXT.get(base, "a value") if base is not None else "a value"
    r = f.metadata.get(KEY)
    text = r.describe(kind) if r is not None else kind
    return text + (" (or null)" if optional and f.default is None else "")


def check_fields(obj: Any, owner: str = "") -> None:
    """Coerce every field of the dataclass ``obj`` to its type and check its range, in place.

    Raises:
        OptionError: a value of the wrong type or outside the field's range.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        new = check_value(owner, f, hints.get(f.name, Any), value)
        if new is not value:
            object.__setattr__(obj, f.name, new)


def codec_problem(name: str) -> str | None:
    """Why ``name`` is not a Python text codec ('' = detect), or None."""
    import codecs

    if not name:
        return None
    try:
        codecs.lookup(name)
    except LookupError:
        return "unknown text encoding; use a Python codec name such as utf-8, gb18030, shift_jis, cp1252"
    return None


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device mtx can use (checked before torch loads), or None."""
    import re

    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", name.strip().lower()):
        return None
    return "unknown device; use auto, cpu, cuda or cuda:N"


def check_device(name: str | None) -> None:
    """Refuse a device name mtx cannot use, before torch loads.

    Raises:
        OptionError: "device='gpu' (--device): unknown device; use auto, cpu, cuda or cuda:N".
    """
    why = device_problem(name) if name is not None else None
    if why:
        raise OptionError(f"device={name!r} (--device): {why}")


def one_char(text: str) -> str | None:
    """Why ``text`` is not one character ('' = detect), or None."""
    return None if len(text) <= 1 else "expected one character (or '' to detect it)"


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A class's resolved annotations (configs are made per file: resolved once)."""
    return typing.get_type_hints(cls)


# ------------------------------------------------------------------------------------------
# Comparing recorded settings with new ones
# ------------------------------------------------------------------------------------------


def canonical(obj: Any) -> Any:
    """``obj`` as JSON would store it: tuples as lists, keys sorted, numpy scalars as numbers."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_plain))


def _plain(o: Any) -> Any:
    """numpy scalars and arrays, paths, sets: as JSON would hold them."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    return str(o)


def differences(old: dict[str, Any], new: dict[str, Any],
                defaults: dict[str, Any] | None = None) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key whose canonical values differ; a key one side lacks
    counts as its default (``defaults``) when there is one, else as None."""
    defaults = defaults or {}
    old_c, new_c, def_c = canonical(old or {}), canonical(new or {}), canonical(defaults)
    out = []
    for k in sorted(set(old_c) | set(new_c)):
        a, b = old_c.get(k, def_c.get(k)), new_c.get(k, def_c.get(k))
        if a != b:  # 200 == 200.0: a number is compared by value
            out.append((k, a, b))
    return out


def short_value(v: Any, width: int = 60) -> str:
    """A value in at most ``width`` characters (a long one is cut with an ellipsis)."""
    text = "unset" if v is None else json.dumps(v, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def diff_lines(diffs: list[tuple[str, Any, Any]], prefix: str = "") -> list[str]:
    """One short line per difference: ``pool: unset -> "max"``."""
    return [f"{prefix}{k}: {short_value(a)} -> {short_value(b)}" for k, a, b in diffs]


# How to get a recorded run setting back on the command line (run_config_of's keys).
_RUN_FLAGS: dict[str, Callable[[Any], str]] = {
    "preset": lambda v: f"-m {v}",
    "compute_dtype": lambda v: f"--dtype {v} (--dtype auto depends on the machine)",
    "pool": lambda v: f"--pool {v}" if v else "no --pool",
    "store_dtype": lambda v: f"--store-dtype {v}",
    "save_tokens": lambda v: "--save-tokens" if v else "no --save-tokens",
    "forced_modality": lambda v: f"--modality {v}" if v else "no --modality",
    "rules": lambda v: ("--map " + " --map ".join(f"'{g}={m}'" for g, m in v)) if v else "no --map",
    "weights_sha256": lambda v: "the same weights (`mtx info` shows them)" if v != "seeded" else "--weights seeded",
    "tokenizers": lambda v: ("the same --tokenizer files (`mtx info` shows their sha256)" if v
                             else "no --tokenizer (nor MTX_TOKENIZERS, nor a tokenizer file in --weights)"),
}
_RUN_DEFAULTS = {"pool": None, "save_tokens": False, "forced_modality": None, "rules": [], "store_dtype": "float32"}


def mismatch(subject: str, old: dict[str, Any], new: dict[str, Any],
             old_modalities: dict[str, dict[str, Any]] | None = None,
             new_modalities: dict[str, dict[str, Any]] | None = None,
             modality_defaults: dict[str, dict[str, Any]] | None = None) -> tuple[list[str], list[str]]:
    """What differs between recorded settings and new ones, and how to get the recorded ones back.

    Args:
        subject: what is compared, for the lines of an unknown earlier config.
        old, new: run settings (:func:`mtx.pipeline.run_config_of`).
        old_modalities, new_modalities: per-modality configs; only modalities on both sides count.
        modality_defaults: per-modality defaults, for a field one side does not record.

    Returns:
        ``(lines, fixes)``: one short line per difference (``pool: unset -> "max"``) and the
        options that reproduce the recorded settings (``no --pool``); both empty when equal.
    """
    lines: list[str] = []
    fixes: list[str] = []
    if not old and new:
        return [f"{subject}: the earlier settings were not recorded"], []
    for k, a, _b in (diffs := differences(old, new, _RUN_DEFAULTS)):
        fix = _RUN_FLAGS.get(k)
        fixes.append(fix(a) if fix else f"the mtx version that wrote it ({k} is built in)")
    lines += diff_lines(diffs)
    old_m, new_m = old_modalities or {}, new_modalities or {}
    for name in sorted(set(old_m) & set(new_m)):
        d = differences(old_m[name], new_m[name], (modality_defaults or {}).get(name))
        lines += diff_lines(d, prefix=f"{name}.")
        fixes += [f"-O {name}.{k}={short_value(a, 40)}" for k, a, _ in d]
    return lines, list(dict.fromkeys(fixes))


def refusal(head: str, lines: list[str], fixes: list[str], remedy: str) -> str:
    """A refusal users can act on: the head, each difference on its own line, then the fix."""
    body = "".join(f"\n  {line}" for line in lines)
    keep = f"\nto continue it, pass {', '.join(fixes)}; or {remedy}" if fixes else f"\n{remedy}"
    return f"{head}:{body}{keep}"


def config_defaults(config_cls: type) -> dict[str, Any]:
    """The default of every field of a config dataclass."""
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out
