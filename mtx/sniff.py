"""Which modality a file is, and why.

Precedence (DESIGN.md §4):
1. ``--modality M`` for every input, or ``--map GLOB=M`` rules (first match wins).
2. Exclusive content claims (``CLAIM``): magic bytes and headers — DICOM ``DICM``, ENVI header,
   FLIR APP1, RIFF WAVE/AVI, OggS, fLaC, ADTS/AC-3 frames, H.264/H.265 start codes, PLY, PCD, LAS,
   GML/GraphML/GEXF roots... Containers that hold sound or pictures alike (``ftyp`` MP4/M4A,
   EBML Matroska/WebM, ASF, MPEG-TS/PS) are claimed by audio or video according to their stream
   list: the container header read by FFmpeg (bounded, nothing decoded, once per file).
3. Shared containers (CSV/Parquet/NPY/PNG/TIFF/MAT) decided by cheap structure checks
   (``STRUCTURE``), then by path hints (``HINT``), then by the extension alone (``EXTENSION``).
4. Nothing matched, or two modalities tie at the top strength: an error that lists every
   attempt and how to force a choice. Never a silent guess.

CSV-like files are the crowded case, decided in this order (strongest first):
``imu`` (>= 3 accelerometer-named columns) > ``time_series`` (a time-like column and numeric
channels) > ``tabular`` (any delimited table, one sample per row). The ladder is detailed in
``mtx/modalities/_columns.py``; ``mtx tokenize`` prints the winning reason.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from ._files import os_error_words, stat_regular
from .errors import AmbiguousModality, DecodeError, UnknownModality
from .modalities import get_modality, list_modalities
from .modalities._base import Evidence, Sniffed

HEAD_BYTES = 8192


@dataclass(frozen=True)
class Decision:
    """The chosen modality, the reason, and every candidate that was considered."""

    modality: str
    reason: str
    candidates: tuple[Evidence, ...] = field(default=())
    head: bytes = field(default=b"", repr=False)
    format: str = ""  # what the winning (or, when forced, the modality's own) check recognised

    @property
    def sniffed(self) -> Sniffed:
        """What the loader is handed, so it does not open the file to detect its format again."""
        return Sniffed(self.head, self.format)


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of a regular file; a FIFO, device or socket is refused before it is
    opened (opening a FIFO waits for a writer), in the words every command uses."""
    stat_regular(path)
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise DecodeError(os_error_words(path, e, listed=True)) from None


def _pickled(head: bytes) -> str | None:
    """What kind of pickle ``head`` starts, judged from the bytes alone (nothing is loaded)."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if head.startswith(b"\x93NUMPY"):
        from .modalities._columns import read_npy_header

        h = read_npy_header(head)
        if h is not None and h[1].hasobject:
            return "an NPY array of Python objects (pickled)"
    return None


def match_rule(path: Path, rules: list[tuple[str, str]]) -> tuple[str, str] | None:
    s = str(path)
    for pattern, modality in rules:
        if fnmatch.fnmatch(s, pattern) or fnmatch.fnmatch(path.name, pattern):
            return modality, pattern
    return None


def sniff(path: str | Path, modality: str | None = None,
          rules: list[tuple[str, str]] | None = None) -> Decision:
    """Decide the modality of ``path``.

    Args:
        path: the file.
        modality: force this modality for the file (``--modality``).
        rules: ``(glob, modality)`` pairs (``--map``); the first match wins.

    Returns:
        A :class:`Decision` with the modality and the human-readable reason.

    Raises:
        UnknownModality: nothing claims the file.
        AmbiguousModality: two modalities claim it equally strongly.
        DecodeError: the file cannot be read at all.

    Example:
        >>> sniff("photo.jpg").modality  # doctest: +SKIP
        'image'
    """
    path = Path(path)
    forced = None
    if modality:
        forced = (get_modality(modality), "forced by --modality")
    elif rules:
        hit = match_rule(path, rules)
        if hit:
            forced = (get_modality(hit[0]), f"--map rule {hit[1]!r}")
    head = read_head(path)
    if not head:
        raise DecodeError("empty file (0 bytes)")
    if forced is not None:
        mod, reason = forced
        try:
            ev = mod.sniff(head, path)
        except DecodeError:
            ev = None  # the loader gives the real reason
        return Decision(mod.name, reason, head=head, format=ev.format if ev else "")
    cands: list[Evidence] = []
    errors: list[str] = []
    for mod in list_modalities():
        try:
            ev = mod.sniff(head, path)
        except DecodeError as e:
            errors.append(f"{mod.name}: {e.message}")
            continue
        if ev is not None:
            cands.append(ev)
    if not cands:
        pickled = _pickled(head)
        if pickled:
            raise DecodeError(f"{pickled}: refused, never unpickled (a pickle can run code); "
                                  "save plain arrays or a standard file format", path=str(path))
        magic = head[:8].hex(" ")
        extra = f"; checks that failed: {'; '.join(errors)}" if errors else ""
        raise UnknownModality(
            f"no modality matched (magic bytes: {magic}, extension: {path.suffix or 'none'}){extra}; "
            "pass --modality M or --map 'GLOB=M' (see `mtx modalities`)", path=str(path))
    cands.sort(key=lambda e: -e.strength)
    top = [c for c in cands if c.strength == cands[0].strength]
    if len({c.modality for c in top}) > 1:
        listing = "; ".join(f"{c.modality} ({c.reason})" for c in top)
        raise AmbiguousModality(
            f"equally strong candidates: {listing}; pass --modality M or --map 'GLOB=M'",
            path=str(path))
    best = cands[0]
    return Decision(best.modality, reason_of(best), tuple(cands), head=head, format=best.format)


def reason_of(ev: Evidence) -> str:
    """``strength: reason``, the strength said once ("extension .txt", not "extension:
    extension .txt")."""
    name = ev.strength_name
    return ev.reason if ev.reason.split(" ", 1)[0].rstrip(":") == name else f"{name}: {ev.reason}"
