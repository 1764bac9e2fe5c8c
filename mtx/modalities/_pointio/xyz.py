"""XYZ / XYZN / XYZRGB / PTS text: rows of numbers (x y z first), streamed in chunks.

Separators: whitespace, ``,`` or ``;``; ``#`` and ``//`` comment lines. Leica PTS puts the
point count alone on the first line (recorded as ``declared_points``).
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import numpy as np

from .base import CHUNK, Reader, TextView, bounded_lines, chunk_points, loadtxt


class XyzReader(Reader):
    format = "xyz"

    def points(self, chunk: int = CHUNK) -> Iterator[np.ndarray]:
        f = TextView(self.rewind(0), encoding="utf-8", errors="replace")
        first = _first_data_line(f)
        if first is None:
            return
        toks = first.split()
        if len(toks) == 1 and re.fullmatch(r"\d+", toks[0]):
            self.meta["declared_points"] = int(toks[0])  # Leica PTS: the first line is the count
            first = next((ln for ln in f if ln.strip()), None)
            if first is None:
                return
        delim = "," if "," in first else (";" if ";" in first else None)
        self.meta["columns"] = len(re.split(r"[\s,;]+", first.strip()))
        it = itertools.chain([first], bounded_lines(f, "XYZ"))
        chunk = chunk_points(8 * len(first) + 64, chunk)  # text lines held, then parsed
        while True:
            lines = [ln for ln in itertools.islice(it, chunk) if not ln.lstrip().startswith("//")]
            if not lines:
                return
            yield loadtxt(lines, "XYZ", delimiter=delim)


def _first_data_line(f) -> str | None:
    for ln in f:
        s = ln.strip()
        if s and not s.startswith(("#", "//")):
            return ln
    return None
