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
from collections.abc import Callable, Iterator
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


def _events(items, modality: str, configs: dict[str, dict], workers: int | None, timeout: float
            ) -> Iterator[tuple]:
    """Worker events ``("sample", path, modality, sample[, key])``, ``("done", path, ...)``,
    ``("fail", path, modality, stage, message)`` for every item (order across files varies)."""
    from ..pipeline import EmbedOptions, _iter_inline, start_workers

    opts = EmbedOptions(modality=modality, workers=workers, timeout=timeout,
                        options={modality: configs.get(modality, {})})
    pool = start_workers(opts, len(items))
    if pool is None:
        yield from _iter_inline(items, opts, configs, frozenset())
        return
    try:
        pending = list(reversed(items))
        waiting = {it.path for it in items}
        checked = time.monotonic()
        while waiting:
            pool.submit_from(pending)
            events = pool.get(timeout=0.05)
            for ev in events:
                if ev[0] in ("done", "fail"):
                    waiting.discard(ev[1])
                yield ev
            if time.monotonic() - checked > 0.5 or not events:
                checked = time.monotonic()
                evs, again = pool.check()
                for ev in evs:
                    if ev[0] in ("done", "fail"):
                        waiting.discard(ev[1])
                    yield ev
                pending.extend(reversed(again))
    finally:
        pool.close()


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
    cache = SampleCache() if cache is None else cache
    configs = {modality: dict(config)}
    per_file: dict[Path, list[Sample]] = {}
    status: dict[Path, Failure | None] = {}
    n_samples = 0
    last = 0.0
    for ev in _events(items, modality, configs, workers, timeout):
        kind, path = ev[0], ev[1]
        if kind == "sample":
            if path not in status:
                per_file.setdefault(path, []).append(_own(ev[3]))
                n_samples += 1
        elif kind == "done":
            status.setdefault(path, None)
        elif kind == "fail":
            per_file.pop(path, None)
            status[path] = Failure(str(path), ev[3], ev[4])
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
            out.ids.append(it.id + (f"#{s.key}" if s.key else ""))
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
