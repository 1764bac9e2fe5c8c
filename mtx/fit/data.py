"""Decoded samples for training: the embed decoders in worker processes, kept after one pass.

:func:`decode_samples` is the one adapter between ``mtx fit``/``mtx predict`` and the embed
pipeline (discovery, sniff + load in spawned decoder processes, a bad file reported and
skipped). :class:`SampleCache` keeps the decoded samples in memory up to a bound and spills the
rest into one cache file, so epochs after the first never decode again.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..modalities._base import Sample


@dataclass
class Failure:
    path: str
    stage: str
    message: str


@dataclass
class Decoded:
    """Samples of one run in input order: ``ids[i]`` is sample i's id exactly as embed writes it."""

    cache: "SampleCache"
    ids: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # the input file id (no #key) of sample i
    first_meta: dict[str, dict] = field(default_factory=dict)  # input id -> meta of its first sample
    failures: list[Failure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def _own(sample: Sample) -> Sample:
    """A copy that owns its arrays (a worker's samples are views of a shared-memory ring slot,
    which returns to the worker only when they are gone)."""
    return Sample(sample.key, {k: np.array(a, copy=True) for k, a in sample.arrays.items()}, sample.meta)


def decode_samples(items, modality: str, config: dict[str, Any], *, workers: int | None = None,
                   timeout: float = 600.0, cache: "SampleCache | None" = None,
                   progress: Callable[[int, int, int], None] | None = None) -> Decoded:
    """Decode ``items`` (``mtx.pipeline.Input``) as ``modality`` with the embed decoders.

    Args:
        items: discovered inputs.
        modality: every input is read as this modality (as ``embed --modality``).
        config: the modality's config overrides (``-O`` options).
        workers: decoder processes (None = embed's default, 0 = in this process).
        timeout: a file without decoder progress for this long fails.
        cache: where the samples go (default: a memory-only cache).
        progress: called with (files done, files total, samples) now and then.

    Returns:
        :class:`Decoded`: samples in input order (file order, then sample order), their ids as
        ``mtx embed`` writes them, and one failure per bad file (never an exception for one).
    """
    from ..pipeline import EmbedOptions, decode_events, sample_id

    cache = SampleCache() if cache is None else cache
    opts = EmbedOptions(modality=modality, workers=workers, timeout=timeout, options={modality: dict(config)})
    per_file: dict[Path, list[Sample]] = {}
    status: dict[Path, Failure | None] = {}
    n_samples = 0
    last = 0.0
    for ev in decode_events(items, opts):
        if ev.kind == "sample":
            if ev.file not in status:
                per_file.setdefault(ev.file, []).append(_own(ev.sample))
                n_samples += 1
        elif ev.kind == "done":
            status.setdefault(ev.file, None)
        elif ev.kind == "fail":
            per_file.pop(ev.file, None)
            status[ev.file] = Failure(str(ev.file), ev.stage, ev.message)
        if progress and time.monotonic() - last > 0.2:
            last = time.monotonic()
            progress(len(status), len(items), n_samples)
    out = Decoded(cache)
    for it in items:
        st = status.get(it.path, Failure(str(it.path), "load", "no result from the decoder"))
        if st is not None:
            out.failures.append(st)
            continue
        for k, s in enumerate(per_file.pop(it.path, [])):
            if k == 0:
                out.first_meta[it.id] = s.meta
            out.ids.append(sample_id(it.id, s.key))
            out.paths.append(it.path)
            out.inputs.append(it.id)
            cache.add(Sample(s.key, s.arrays, {}))
    cache.seal()
    if progress:
        progress(len(items), len(items), len(out))
    return out


class SampleCache:
    """Decoded samples by index: in memory up to ``max_bytes``, then appended to one cache file
    (read back through a memory map, so the page cache, not the process, holds them).

    Args:
        max_bytes: arrays kept in memory before spilling (default 2 GiB, ``MTX_FIT_CACHE_MB``).
        spill: the cache file (created on the first spill, removed by :meth:`close`).
    """

    def __init__(self, max_bytes: int | None = None, spill: Path | None = None):
        if max_bytes is None:
            max_bytes = int(float(os.environ.get("MTX_FIT_CACHE_MB", 2048)) * (1 << 20))
        self.max_bytes = max_bytes
        self.spill_path = spill
        self.mem: list[Sample | None] = []
        self.disk: dict[int, tuple[str, list[tuple[str, int, tuple[int, ...], str]]]] = {}
        self.nbytes = 0
        self._f = None
        self._off = 0
        self._map: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.mem)

    def add(self, s: Sample) -> int:
        size = sum(a.nbytes for a in s.arrays.values())
        i = len(self.mem)
        if self.nbytes + size <= self.max_bytes or self.spill_path is None:
            self.mem.append(s)
            self.nbytes += size
            return i
        if self._f is None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.spill_path, "wb")
        refs = []
        for k, a in s.arrays.items():
            a = np.ascontiguousarray(a)
            self._f.write(a.tobytes())
            refs.append((k, self._off, tuple(a.shape), a.dtype.str))
            self._off += a.nbytes
        self.mem.append(None)
        self.disk[i] = (s.key, refs)
        return i

    def seal(self) -> None:
        """No more samples: map the cache file for reading."""
        if self._f is not None:
            self._f.close()
            self._f = None
            self._map = np.memmap(self.spill_path, np.uint8, "r") if self._off else None

    @property
    def spilled(self) -> int:
        return len(self.disk)

    def get(self, i: int) -> Sample:
        s = self.mem[i]
        if s is not None:
            return s
        key, refs = self.disk[i]
        arrays = {}
        for k, off, shape, dt in refs:
            d = np.dtype(dt)
            n = int(np.prod(shape)) * d.itemsize
            arrays[k] = np.array(self._map[off:off + n]).view(d).reshape(shape) if n else np.empty(shape, d)
        return Sample(key, arrays, {})

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self._map = None
        if self.spill_path is not None and self._off:
            with contextlib.suppress(OSError):
                os.unlink(self.spill_path)
