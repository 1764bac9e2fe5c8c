"""What a decoder reports about a file: typed records instead of positional tuples.

Each event is a ``NamedTuple`` whose first field is its kind, so the wire format stays a small
tuple (cheap to pickle) while code reads fields by name. ``file`` names the file: its path in
the process that decoded it, its sequence number on the way from a decoder process to the main
process (:mod:`mtx.pipeline.transport`), its path again once received (:mod:`.workers`).

A file produces ``Sampled`` events (one per sample) then exactly one ``Done`` or ``Failed``;
or, when its content was embedded before under another name, a single ``Dup``; or, when no
modality claims it, a single ``Unclaimed``.
"""
from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ..modalities._base import Sample

FileRef = Path | int | None  # a path, or a sequence number on the wire
Fingerprint = tuple[int, int, str]  # (size, mtime_ns, content hash)


class Sampled(NamedTuple):
    """One decoded sample of ``file``; ``key`` is its batch key when the decoder computed it."""

    kind: str = "sample"
    file: FileRef = None
    modality: str = ""
    sample: Sample | None = None
    key: Hashable | None = None


class Done(NamedTuple):
    """``file`` ended well after ``n`` samples; ``reason`` says why it is ``modality``."""

    kind: str = "done"
    file: FileRef = None
    modality: str = ""
    reason: str = ""
    fp: Fingerprint | None = None
    n: int = 0


class Failed(NamedTuple):
    """``file`` failed at ``stage`` (sniff, load, tokenize, encode); ``message`` is one line."""

    kind: str = "fail"
    file: FileRef = None
    modality: str = ""
    stage: str = ""
    message: str = ""


class Dup(NamedTuple):
    """``file`` has the content of a file embedded before: copy its rows, do not decode it."""

    kind: str = "dup"
    file: FileRef = None
    fp: Fingerprint | None = None


class Unclaimed(NamedTuple):
    """No modality claims ``file`` (``message`` lists what was tried): a ``sniff`` failure, or,
    with ``--skip-unknown``, a file left out and listed once at the end."""

    kind: str = "unclaimed"
    file: FileRef = None
    message: str = ""


Event = Sampled | Done | Failed | Dup | Unclaimed
BY_KIND: dict[str, Any] = {"sample": Sampled, "done": Done, "fail": Failed, "dup": Dup, "unclaimed": Unclaimed}


def readdress(ev: tuple, file: FileRef) -> Event:
    """``ev`` (an event, or the plain tuple of one) about ``file`` instead."""
    return BY_KIND[ev[0]](ev[0], file, *ev[2:])
