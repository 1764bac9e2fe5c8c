"""Decoder -> main process transport: chunks of events, a shared-memory ring, /dev/shm files.

Decoded samples leave a worker in chunks: the results of up to CHUNK_FILES files (or
SLOT_BYTES of arrays, or CHUNK_SECONDS of work) travel as one small message on the worker's
own pipe. Their arrays go back to back into a slot of a shared-memory ring that the worker
and the main process map once, for the whole run: the main process reads them in place (the
batch collate is the one copy) and the slot returns to the worker when the last of its
arrays is gone. A chunk that does not fit, or finds every slot still in use, goes through a
file on the shared-memory filesystem instead (or the pipe, where there is none). On a 16-core
GPU machine the main process's per-file work, not the decoders or the encoder, was the limit:
one message and no page-table work per chunk instead of two messages and a mapping per file.

Memory: each worker holds at most one chunk being filled, ``SLOTS`` ring slots and
``CREDITS`` unread chunk files.
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .events import BY_KIND, Sampled

CHUNK_FILES = 16
CHUNK_SAMPLES = 1024
CHUNK_SECONDS = 0.5
SLOTS = 8  # ring slots per worker
SLOT_BYTES = 4 << 20
CREDITS = 4  # chunks outside the ring a worker may have sent that the main process has not read
SHM_DIR = "/dev/shm"
_ALIGN = 64


@dataclass(frozen=True)
class _BlobRef:
    offset: int
    shape: tuple[int, ...]
    dtype: str


def shm_prefix(parent_pid: int) -> str:
    return f"mtx{parent_pid}_"


def _padded(nbytes: int) -> int:
    return nbytes + (-nbytes % _ALIGN)


def _layout(events: list) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Give the chunk's sample arrays aligned offsets in one buffer, replacing them with refs;
    returns ``([(offset, array)], total bytes)``."""
    placed: list[tuple[int, np.ndarray]] = []
    offset = 0
    for ev in events:
        if not isinstance(ev, Sampled):
            continue
        refs = {}
        for k, a in ev.sample.arrays.items():
            a = np.ascontiguousarray(a)
            refs[k] = _BlobRef(offset, tuple(a.shape), a.dtype.str)
            placed.append((offset, a))
            offset += _padded(a.nbytes)
        ev.sample.arrays = refs
    return placed, offset


def _place(dst: np.ndarray, placed: list[tuple[int, np.ndarray]]) -> None:
    """Copy a chunk's arrays into the byte buffer ``dst`` at their offsets."""
    for offset, a in placed:
        dst[offset:offset + a.nbytes] = a.reshape(-1).view(np.uint8)


def _write_file(placed: list[tuple[int, np.ndarray]], path: str) -> None:
    with open(path, "wb", buffering=0) as f:
        for offset, a in placed:
            f.seek(offset)
            f.write(memoryview(a).cast("B"))
        f.truncate(max((o + _padded(a.nbytes) for o, a in placed), default=0))


def read_file(name: str) -> np.ndarray:
    """Read (then unlink) a chunk file as a byte array: the fallback path, so a plain read,
    which keeps no file descriptor open while its samples wait in a batch."""
    path = os.path.join(SHM_DIR, name)
    try:
        with open(path, "rb", buffering=0) as f:
            buf = np.empty(os.fstat(f.fileno()).st_size, np.uint8)
            if buf.size and f.readinto(memoryview(buf)) != buf.size:
                raise OSError(f"short read of {path}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return buf


def resolve(sample, blob: np.ndarray) -> None:
    """Replace a sample's refs with views of ``blob``, made by slicing it: slices keep ``blob``
    itself alive (``np.frombuffer`` of it would not), which frees a ring slot at the right time."""
    arrays = {}
    for k, r in sample.arrays.items():
        dt = np.dtype(r.dtype)
        n = math.prod(r.shape) * dt.itemsize
        arrays[k] = blob[r.offset:r.offset + n].view(dt).reshape(r.shape) if n else np.empty(r.shape, dt)
    sample.arrays = arrays


def _free_slot(used, free, slot: int) -> None:
    used[slot] = 0
    free.release()


def cleanup_stale_shm() -> None:
    """Remove blocks left by mtx runs that no longer exist (a kill -9 skips every cleanup)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(SHM_DIR):
            if not name.startswith("mtx") or "_" not in name:
                continue
            pid = name[3:name.index("_")]
            if not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))
            except PermissionError:
                pass


def cleanup_shm(parent_pid: int) -> None:
    """Remove blocks a killed worker or an interrupted run left behind."""
    prefix = shm_prefix(parent_pid)
    with contextlib.suppress(OSError):
        for name in os.listdir(SHM_DIR):
            if name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))


def ring_slots(n_workers: int) -> int:
    """Ring slots per worker that surely fit the shared-memory filesystem.

    A tmpfs that runs out kills the process touching the page with SIGBUS (Docker's default
    /dev/shm is 64 MB): use at most half of what is free, else no ring (chunks then go through
    files, or the pipe).
    """
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return SLOTS  # no /dev/shm: multiprocessing maps the ring from a temporary file
    per_worker = st.f_bavail * st.f_frsize // 2 // max(1, n_workers) // SLOT_BYTES
    return int(min(SLOTS, per_worker)) if per_worker >= 2 else 0


@dataclass
class Channel:
    """What one decoder process and the main process share besides its two pipes."""

    state: Any  # RawArray q[3]: [file being decoded (seq), progress counter, 1 = waiting on main]
    credits: Any  # Semaphore(CREDITS): unread chunks outside the ring
    ring: Any  # RawArray of slots * SLOT_BYTES bytes
    used: Any  # RawArray b[slots]: 1 while the main process holds a slot's arrays
    free: Any  # Semaphore(slots): free slots

    @classmethod
    def create(cls, ctx, slots: int = SLOTS) -> "Channel":
        ch = cls(ctx.RawArray("q", 3), ctx.Semaphore(CREDITS), ctx.RawArray("B", max(1, slots * SLOT_BYTES)),
                 ctx.RawArray("b", max(1, slots)), ctx.Semaphore(slots))
        ch.state[0] = -1
        return ch

    def blob(self, where, ring: memoryview) -> np.ndarray:
        """Main side: the buffer a chunk's arrays are views of (a ring slot is freed when they are
        gone); ``ring`` is this channel's ring as bytes."""
        kind, val = where
        if kind == "slot":
            # An array over a memoryview, not a view of another array: the arrays sliced from it
            # keep it alive, so the slot is freed only when the last of them is gone.
            holder = np.frombuffer(ring[val * SLOT_BYTES:(val + 1) * SLOT_BYTES], np.uint8)
            weakref.finalize(holder, _free_slot, self.used, self.free, val)
            return holder
        self.credits.release()
        return read_file(val) if kind == "file" else val


class Chunker:
    """Worker side: collects one file's events after another and ships them in chunks.

    A file whose samples were split over several chunks has its ``done`` shipped at once, so
    when a worker dies every file is either wholly unseen by the main process (and can be given
    to another worker) or has all its messages in the pipe.
    """

    def __init__(self, conn, ch: Channel, use_shm: bool):
        from ..modalities import get_modality

        self.get_modality = get_modality
        self.conn, self.ch = conn, ch
        self.ring = np.frombuffer(ch.ring, np.uint8)
        self.prefix = shm_prefix(os.getppid()) + f"{os.getpid()}_"
        self.use_shm = use_shm
        self.n = 0
        self.events: list[tuple] = []
        self.files = self.samples = self.nbytes = 0
        self.since = time.monotonic()
        self.split: set[int] = set()  # files with samples in an earlier chunk

    def emit(self, seq: int, ev: tuple) -> None:
        """Add event ``ev`` (an event of :mod:`.events`, or its plain tuple) of file ``seq``."""
        if ev[0] == "sample":
            self._add_sample(seq, Sampled(*ev))
        else:
            self.events.append(BY_KIND[ev[0]](ev[0], seq, *ev[2:]))
            self.files += 1
        self.ch.state[1] += 1  # progress, watched by the main process for --timeout
        aged = time.monotonic() - self.since > CHUNK_SECONDS
        if ev[0] == "sample":
            if self.samples >= CHUNK_SAMPLES or aged:
                self.split.add(seq)
                self.flush()
        elif seq in self.split or self.files >= CHUNK_FILES or aged:
            self.split.discard(seq)
            self.flush()

    def _add_sample(self, seq: int, ev: Sampled) -> None:
        size = sum(_padded(a.nbytes) for a in ev.sample.arrays.values())
        if self.samples and self.nbytes + size > SLOT_BYTES:
            self.split.add(seq)  # keep chunks within a ring slot
            self.flush()
        key = self.get_modality(ev.modality).batch_key(ev.sample)
        self.events.append(Sampled("sample", seq, ev.modality, ev.sample, key))
        self.samples += 1
        self.nbytes += size

    def flush(self) -> None:
        if not self.events:
            return
        where = self._place_arrays() if self.samples else None
        data = pickle.dumps(("chunk", self.events, where), protocol=pickle.HIGHEST_PROTOCOL)
        self.events = []
        self.files = self.samples = self.nbytes = 0
        self._wait(lambda: self.conn.send_bytes(data))
        self.since = time.monotonic()

    def _place_arrays(self) -> tuple[str, Any]:
        """Move the chunk's arrays into a ring slot, else a /dev/shm file, else the message."""
        placed, total = _layout(self.events)
        if total <= SLOT_BYTES and self.ch.free.acquire(block=False):
            slot = next(i for i in range(len(self.ch.used)) if not self.ch.used[i])
            self.ch.used[slot] = 1
            _place(self.ring[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES], placed)
            return "slot", slot
        self._wait(self.ch.credits.acquire)
        if self.use_shm:
            self.n += 1
            name = f"{self.prefix}{self.n}"
            try:
                _write_file(placed, os.path.join(SHM_DIR, name))
                return "file", name
            except OSError:  # /dev/shm full: this chunk takes the pipe
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))
        buf = np.zeros(total, np.uint8)
        _place(buf, placed)
        return "inline", buf

    def _wait(self, fn) -> None:
        """Run ``fn``, which may block until the main process reads: flagged in shared memory so
        that waiting on the main process is not taken for a decoder without progress."""
        self.ch.state[2] = 1
        try:
            fn()
        finally:
            self.ch.state[2] = 0
