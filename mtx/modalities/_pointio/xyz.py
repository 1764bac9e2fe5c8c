"""XYZ / XYZN / XYZRGB / PTS text: rows of numbers (x y z first), streamed in chunks.

Separators: whitespace, ``,`` or ``;``; ``#`` and ``//`` comment lines. Leica PTS puts the
point count alone on the first line (recorded as ``declared_points``). A header line of column
names (``x y z``, ``X,Y,Z,R,G,B``, CloudCompare's ``//X,Y,Z,...`` comment) is skipped and names
the coordinate columns: ``x``, ``y`` and ``z`` wherever they are (recorded as ``xyz_columns``);
a header without those names leaves the first three columns.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import numpy as np

from .base import CHUNK, Reader, TextView, bounded_lines, chunk_points, loadtxt

_SPLIT = re.compile(r"[\s,;]+")
_NAME = re.compile(r"^[A-Za-z_][\w.\-()\[\]/]*$")


def header_names(line: str) -> list[str] | None:
    """The column names of a header line (a comment's ``//`` or ``#`` stripped), or None when
    the line is not a row of names."""
    s = line.strip().lstrip("/#").strip()
    toks = [t for t in _SPLIT.split(s) if t]
    if len(toks) >= 3 and all(_NAME.match(t) for t in toks):
        return toks
    return None


def xyz_positions(names: list[str]) -> tuple[int, int, int] | None:
    low = [n.lower() for n in names]
    try:
        return low.index("x"), low.index("y"), low.index("z")
    except ValueError:
        return None


class XyzReader(Reader):
    format = "xyz"

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        f = TextView(self.rewind(0), encoding="utf-8", errors="replace")
        comment, first = _first_data_line(f)
        if first is None:
            return
        names = header_names(first)
        if names is not None:  # a header line of column names
            first = _first_data_line(f)[1]
            if first is None:
                return
        elif comment is not None:
            names = header_names(comment)  # CloudCompare: '//X,Y,Z,R,G,B'
        toks = first.split()
        if len(toks) == 1 and re.fullmatch(r"\d+", toks[0]):
            self.meta["declared_points"] = int(toks[0])  # Leica PTS: the first line is the count
            first = next((ln for ln in f if ln.strip()), None)
            if first is None:
                return
        delim = "," if "," in first else (";" if ";" in first else None)
        ncols = len(_SPLIT.split(first.strip()))
        self.meta["columns"] = ncols
        usecols: tuple[int, int, int] = (0, 1, 2)
        if names is not None and len(names) == ncols:
            self.meta["header"] = names
            pos = xyz_positions(names)
            if pos is not None:
                usecols = pos
            else:
                self.meta["xyz_note"] = "the header names no x/y/z columns: the first three are used"
            self.meta["xyz_columns"] = [names[i] for i in usecols]
        it = itertools.chain([first], bounded_lines(f, "XYZ"))
        chunk = chunk_points(8 * len(first) + 64, chunk)  # text lines held, then parsed
        while True:
            lines = [ln for ln in itertools.islice(it, chunk) if not ln.lstrip().startswith("//")]
            if not lines:
                return
            yield loadtxt(lines, "XYZ", delimiter=delim, usecols=usecols)


def _first_data_line(f) -> tuple[str | None, str | None]:
    """(the last comment line before it, the first non-comment line)."""
    comment = None
    for ln in f:
        s = ln.strip()
        if not s:
            continue
        if s.startswith(("#", "//")):
            comment = ln
            continue
        return comment, ln
    return comment, None
