"""Batching: samples grouped by (modality, batch key) into batches bounded by rows and tokens.

One :class:`Batcher` serves ``mtx embed``, ``mtx.embed()`` and ``mtx similar``'s file queries.
Only samples with the same batch key share a batch, so a ragged modality (text, graph, short
audio clips) is padded only up to the longest row of its own key.

Sizing: a batch closes once it holds ``rows`` rows (segments) *and* ``tokens`` tokens (rows x
its longest row, the padding included), or ``max_rows`` rows. By default ``tokens`` is
``batch_size`` images' worth, so a batch of images, audio or video is ``batch_size`` rows as
before, and short rows (an 8-token table row, a 78-token series) are packed until the batch
holds as much work as ``batch_size`` images: on CPU the bare B/16 encoder does about twice as
many 8-token rows per second at 512 rows as at 32, and the tiny encoder ten times as many.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ..modalities._base import Sample
    from ..weights import EncoderSpec
    from .options import EmbedOptions

MAX_ROWS_PER_BATCH_SIZE = 16  # default max_rows = this x batch_size


@dataclass(frozen=True)
class BatchLimits:
    rows: int = 32  # a batch closes once it holds this many rows (segments) ...
    tokens: int = 32 * 197  # ... and this many tokens (rows x its longest row, padding included)
    max_rows: int = 32 * MAX_ROWS_PER_BATCH_SIZE  # ... or this many rows, whatever their length
    queue: int = 256  # samples buffered in all buckets before the largest bucket goes ...
    queue_tokens: int = 256 * 197  # ... when they also hold this many tokens

    @classmethod
    def of(cls, opts: EmbedOptions, spec: EncoderSpec) -> BatchLimits:
        """The limits of ``opts`` for an encoder of geometry ``spec`` (token defaults in images)."""
        image = 1 + spec.grid * spec.grid
        rows = max(1, opts.batch_size)
        return cls(rows=rows, tokens=opts.batch_tokens or rows * image,
                   max_rows=max(rows, opts.max_rows or rows * MAX_ROWS_PER_BATCH_SIZE),
                   queue=opts.queue_size, queue_tokens=opts.queue_size * image)


class Batch(NamedTuple):
    """Samples of one modality and batch key; ``owner`` says whose each sample is (a file's
    path in a run, a sample id in the API)."""

    modality: str
    entries: list[tuple[Hashable, Sample]]

    @property
    def samples(self) -> list[Sample]:
        return [s for _, s in self.entries]


@dataclass
class _Bucket:
    entries: list[tuple[Hashable, Any]] = field(default_factory=list)
    rows: int = 0
    width: int = 0  # tokens of its longest row

    @property
    def tokens(self) -> int:
        return self.rows * self.width


class Batcher:
    """Groups samples into batches; says when one is full or the buffer too large.

    Args:
        limits: the batch and buffer bounds.
        cost: ``(modality, sample) -> tokens`` of each of the sample's rows.
    """

    def __init__(self, limits: BatchLimits, cost: Callable[[str, Sample], int]):
        self.limits = limits
        self.cost = cost
        self.buckets: dict[tuple, _Bucket] = {}
        self.samples = 0  # buffered, in all buckets
        self.tokens = 0

    def __bool__(self) -> bool:
        return bool(self.buckets)

    def add(self, owner: Hashable, modality: str, sample: Sample, key: Hashable | None = None) -> Batch | None:
        """Buffer ``sample``; returns a batch to run now (its own when full, else the largest
        when the buffer is too large) or None. ``key`` is its batch key when already known."""
        if key is None:
            from ..modalities import get_modality

            key = get_modality(modality).batch_key(sample)
        bk = (modality, key)
        b = self.buckets.get(bk)
        if b is None:
            b = self.buckets[bk] = _Bucket()
        before = b.tokens
        b.entries.append((owner, sample))
        b.rows += sample.n_segments
        b.width = max(b.width, self.cost(modality, sample))
        self.samples += 1
        self.tokens += b.tokens - before
        lim = self.limits
        if (b.rows >= lim.rows and b.tokens >= lim.tokens) or b.rows >= lim.max_rows:
            return self._pop(bk)
        if self.samples > lim.queue and self.tokens > lim.queue_tokens:
            return self.largest()
        return None

    def largest(self) -> Batch | None:
        """The bucket holding most samples, as a batch (None when nothing is buffered)."""
        if not self.buckets:
            return None
        return self._pop(max(self.buckets, key=lambda k: len(self.buckets[k].entries)))

    def drain(self) -> Iterator[Batch]:
        """Every buffered bucket as a batch, oldest bucket first."""
        while self.buckets:
            yield self._pop(next(iter(self.buckets)))

    def drop(self, owner: Hashable) -> None:
        """Forget the buffered samples of ``owner`` (its file failed)."""
        for bk, b in list(self.buckets.items()):
            keep = [(o, s) for o, s in b.entries if o != owner]
            if len(keep) == len(b.entries):
                continue
            self.samples -= len(b.entries) - len(keep)
            self.tokens -= b.tokens
            if not keep:
                del self.buckets[bk]
                continue
            b.entries = keep
            b.rows = sum(s.n_segments for _, s in keep)
            b.width = max(self.cost(bk[0], s) for _, s in keep)
            self.tokens += b.tokens

    def _pop(self, bk: tuple) -> Batch:
        b = self.buckets.pop(bk)
        self.samples -= len(b.entries)
        self.tokens -= b.tokens
        return Batch(bk[0], b.entries)
