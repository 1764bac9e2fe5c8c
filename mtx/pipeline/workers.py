"""The decoder processes, seen from the main process: the pool, its health, blame, respawn.

Worker processes are spawned (no fork of a torch process), use one intra-op thread each, and
are watched: a file without progress for ``timeout`` seconds or a worker that dies (segfault in
a decoder, OOM kill) becomes a failure row and the worker is replaced.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import FileTimeout, WorkerCrashed
from .decode import iter_inline, worker_main
from .events import Event, Failed, readdress
from .inputs import Input
from .options import EmbedOptions, default_workers, gpu_likely
from .transport import (
    CHUNK_FILES,
    SHM_DIR,
    SLOTS,
    Channel,
    cleanup_shm,
    cleanup_stale_shm,
    resolve,
    ring_slots,
    shm_prefix,
)

WINDOW = 2 * CHUNK_FILES  # most files assigned to one worker (a chunk being decoded, one queued)
WINDOW_SECONDS = 1.0  # ... or about this much work, whichever is fewer
START_LIMIT = 300.0  # seconds a fresh decoder process may take to import before its first file
FILES_PER_DECODER = 8  # a run starts one decoder process per this many files (decoders_for)


class Worker:
    """One decoder process: its pipes, its channel, and the files assigned to it."""

    def __init__(self, ctx, wid: int, args: tuple, slots: int = SLOTS):
        self.wid = wid
        task_r, self.tasks = ctx.Pipe(duplex=False)  # each pipe: (receiving end, sending end)
        self.results, res_w = ctx.Pipe(duplex=False)
        # A window of tasks (up to 32 paths) must fit the task pipe whatever the worker is doing,
        # or the main process could block on it while the worker blocks on its result pipe.
        with contextlib.suppress(Exception):
            import fcntl

            fcntl.fcntl(self.tasks.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        self.ch = Channel.create(ctx, slots)
        self.ring = memoryview(self.ch.ring).cast("B")
        self.proc = ctx.Process(target=worker_main, name=f"mtx-worker-{wid}", daemon=True,
                                args=(wid, task_r, res_w, self.ch, *args))
        self.proc.start()
        task_r.close()
        res_w.close()
        self.assigned: dict[int, Input] = {}  # seq -> file, in submission order
        self.since = self.seen = time.monotonic()
        self.progress = (-1, 0)
        self.eof = False
        self.stopped = False  # told to end (None sent)
        self.per_file: float | None = None  # seconds per file, a running average

    def record(self, ended: int) -> None:
        """``ended`` files came back: update the running seconds-per-file of this worker."""
        now = time.monotonic()
        x = (now - self.seen) / ended
        self.per_file = x if self.per_file is None else 0.7 * self.per_file + 0.3 * x
        self.seen = now

    def window(self) -> int:
        """Files to keep assigned: about a second of work (a few slow videos, a chunk or two of
        small images), so the last files of a run are not queued behind one busy worker."""
        if self.per_file is None:
            return 4
        return max(2, min(WINDOW, math.ceil(WINDOW_SECONDS / max(self.per_file, 1e-6))))

    def send(self, obj) -> None:
        with contextlib.suppress(OSError):  # a dead worker is found and replaced by check()
            self.tasks.send(obj)

    def blob(self, where):
        """The buffer a chunk's arrays are views of (a ring slot is freed when they are gone)."""
        return self.ch.blob(where, self.ring)

    def close_pipes(self) -> None:
        for c in (self.tasks, self.results):
            with contextlib.suppress(OSError):
                c.close()


class WorkerPool:
    """Spawned decoder processes, each with its own task and result pipes, watched for timeouts
    and crashes.

    Every file gets a sequence number and is assigned to a known worker, which records in shared
    memory the file it is decoding and a progress counter. When a worker dies (segfault in a
    decoder, OOM kill) or makes no progress for ``timeout`` seconds, the file it was on becomes a
    failure row, whatever it had not shipped is handed to other workers, and a fresh worker
    replaces it.
    """

    def __init__(self, n: int, opts: EmbedOptions, configs: dict[str, dict]):
        cleanup_stale_shm()
        self.ctx = mp.get_context("spawn")
        self.args = (opts.modality, opts.rules, configs, None)
        self._known_path: str | None = None
        self.timeout = opts.timeout
        self.workers: dict[int, Worker] = {}
        self.ready: set[int] = set()
        self.paths: dict[int, Path] = {}  # seq -> path of files in flight
        self._next = 0
        self._seq = 0
        self._start_deaths = 0
        self._retired: list[Worker] = []
        self.slots = ring_slots(n)
        for _ in range(n):
            self._spawn()

    def _spawn(self) -> None:
        # The ring is allocated (zero-filled) here: check the space again for replacements.
        slots = min(self.slots, ring_slots(1))
        self.workers[self._next] = Worker(self.ctx, self._next, self.args, slots)
        self._next += 1

    def resize(self, n: int) -> None:
        """Start more decoder processes, or stop idle ones, until there are ``n``."""
        if n > len(self.workers):
            self.slots = min(self.slots, ring_slots(n))
        while len(self.workers) < n:
            self._spawn()
        for wid in [wid for wid, w in self.workers.items() if not w.assigned][: max(0, len(self.workers) - n)]:
            w = self.workers.pop(wid)
            w.send(None)
            w.proc.join(0)  # reaped by close(); it ends on its own
            self._retired.append(w)

    def set_known(self, known: frozenset[str]) -> None:
        """Content hashes already embedded: written to a file whose path goes to each worker
        (and to replacements), so a large set never blocks the main process on a pipe."""
        if not known:
            return
        import tempfile

        fd, path = tempfile.mkstemp(prefix=f"{shm_prefix(os.getpid())}known_",
                                    dir=SHM_DIR if os.access(SHM_DIR, os.W_OK) else None)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(known, f, protocol=pickle.HIGHEST_PROTOCOL)
        self._known_path = path
        self.args = (*self.args[:3], path)
        for w in self.workers.values():
            w.send(("known", path))

    def submit_from(self, pending: list[Input]) -> None:
        """Fill the workers' windows from the end of ``pending``, one file per worker in turn
        (least loaded first), and send each worker its files in one message."""
        room = {w.wid: w.window() - len(w.assigned) for w in self.workers.values()}
        order = [w for w in sorted(self.workers.values(), key=lambda w: len(w.assigned)) if room[w.wid] > 0]
        batches: dict[int, list] = {}
        while pending and order:
            for w in list(order):
                if not pending:
                    break
                inp = pending.pop()
                self._seq += 1
                if not w.assigned:
                    w.since = w.seen = time.monotonic()
                w.assigned[self._seq] = inp
                self.paths[self._seq] = inp.path
                batches.setdefault(w.wid, []).append((self._seq, inp))
                room[w.wid] -= 1
                if room[w.wid] <= 0:
                    order.remove(w)
        for wid, batch in batches.items():
            self.workers[wid].send(("tasks", batch))

    def _read(self, w: Worker) -> list[Event]:
        """One message from ``w`` as main-side events (path instead of sequence number)."""
        try:
            msg = pickle.loads(w.results.recv_bytes())
        except (EOFError, OSError):
            w.eof = True
            return []
        if msg[0] == "ready":
            self.ready.add(msg[1])
            w.seen = time.monotonic()  # its start-up is not decoding time
            return []
        _, events, where = msg
        try:
            blob = w.blob(where) if where is not None else None
        except OSError as e:  # a chunk file gone or unreadable: its files fail, the run goes on
            return self._unreadable(w, events, f"the decoded data could not be read back from shared memory "
                                               f"({e.strerror or e})")
        out = []
        ended = 0
        for ev in events:
            path = self.paths.get(ev.file)
            if ev.kind == "sample":
                if blob is not None:
                    resolve(ev.sample, blob)
            elif self._ended(w, ev.file):
                ended += 1
            if path is not None:
                out.append(readdress(ev, path))
        if ended:
            w.record(ended)
        self._start_deaths = 0
        return out

    def _ended(self, w: Worker, seq: int) -> bool:
        """The last message of file ``seq`` came back from ``w``: it is no longer in flight."""
        if seq not in w.assigned:
            return False
        del w.assigned[seq]
        del self.paths[seq]
        return True

    def _unreadable(self, w: Worker, events: list, message: str) -> list[Event]:
        out, seen = [], set()
        for ev in events:
            path = self.paths.get(ev.file)
            if ev.kind != "sample":
                self._ended(w, ev.file)
            if path is not None and ev.file not in seen:
                seen.add(ev.file)
                out.append(Failed(file=path, modality=ev[2] if ev.kind != "dup" else "", stage="load",
                                  message=message))
        return out

    def get(self, timeout: float) -> list[Event]:
        """Events from whichever workers have something (waits up to ``timeout`` seconds)."""
        from multiprocessing.connection import wait

        conns = {w.results: w for w in self.workers.values() if not w.eof}
        out: list[Event] = []
        for c in wait(list(conns), timeout):
            out.extend(self._read(conns[c]))
        return out

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until every decoder process has imported the decoders (benchmarks time the
        steady state; `mtx embed` overlaps this start-up with loading the model instead)."""
        deadline = time.monotonic() + timeout
        while not set(self.workers) <= self.ready and time.monotonic() < deadline:
            if self.get(timeout=0.1):  # nothing was submitted yet: only "ready" can arrive
                raise RuntimeError("unexpected message before any task")

    def check(self) -> tuple[list[Event], list[Input]]:
        """(events, files to resubmit) for workers that died or made no progress: the events
        are what the worker shipped before it ended, then a failure for the file it was on."""
        events: list[Event] = []
        again: list[Input] = []
        now = time.monotonic()
        for wid, w in list(self.workers.items()):
            current, progress = w.ch.state[0], w.ch.state[1]
            if (current, progress) != w.progress or w.ch.state[2]:
                # Progress, or waiting for the main process to read (not the decoder's fault).
                w.progress, w.since = (current, progress), now
            dead = w.eof or not w.proc.is_alive()
            # The clock runs for the file being decoded; a process not yet on any of its files
            # (still importing the decoders) gets a start-up allowance instead.
            limit = self.timeout if current in w.assigned else max(self.timeout, START_LIMIT)
            slow = bool(w.assigned) and now - w.since > limit
            if dead or slow:
                events.extend(self._retire(wid, w, dead))
                again.extend(inp for seq, inp in w.assigned.items() if seq != w.ch.state[0])
                self._spawn()
        return events, again

    def _retire(self, wid: int, w: Worker, dead: bool) -> list[Event]:
        """Stop ``w`` (dead, or stuck on a file): what it shipped, then its culprit's failure."""
        if not dead:
            w.proc.kill()
        w.proc.join(5)
        code = w.proc.exitcode
        events: list[Event] = []
        while not w.eof and w.results.poll():  # what it shipped before it ended still counts
            events.extend(self._read(w))
        del self.workers[wid]
        w.close_pipes()
        culprit = w.ch.state[0]
        if culprit in w.assigned:
            if not dead:
                err = FileTimeout(f"no progress for {self.timeout:g} s (--timeout); the decoder was stopped")
            else:
                why = f"signal {-code}" if code and code < 0 else f"exit code {code}"
                err = WorkerCrashed(f"the decoder process died ({why}) while reading this file")
            events.append(Failed(file=w.assigned[culprit].path, stage="load", message=err.message))
        elif w.assigned:
            # It ended before starting a file (at start-up, or between files): blame none,
            # but do not respawn forever when every fresh process fails at once.
            self._start_deaths += 1
            if self._start_deaths > 3:
                why = f"die (exit code {code})" if dead else "hang"
                raise WorkerCrashed(f"decoder processes {why} before reading any file; try --workers 0 "
                                    "to decode in the main process")
        for seq in w.assigned:
            self.paths.pop(seq, None)
        return events

    def stop(self) -> None:
        """Tell every decoder to end (decoding is over) without waiting: they exit, and free
        their memory, while the main process encodes the last batches; :meth:`close` reaps them."""
        for w in self.workers.values():
            if not w.stopped:
                w.send(None)
                w.stopped = True

    def close(self) -> None:
        self.stop()
        deadline = time.monotonic() + 5
        for w in [*self.workers.values(), *self._retired]:
            if w.wid not in self.ready and not w.assigned:
                w.proc.kill()  # still importing the decoders, never used: no need to wait for it
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1)
            w.close_pipes()
        cleanup_shm(os.getpid())
        if self._known_path:
            with contextlib.suppress(OSError):
                os.unlink(self._known_path)


def decoders_for(n_items: int, workers: int | None, gpu: bool) -> int:
    """Decoder processes for a run of ``n_items`` files: ``--workers`` when given (no more than
    the files), else one per ``FILES_PER_DECODER`` files up to :func:`default_workers` (a process
    costs a second or two of imports, which a handful of files does not repay). At least one
    whenever there is a file, except with ``--workers 0``: a single input is decoded in a process
    of its own too, under ``--timeout`` and away from the main process's memory."""
    if n_items <= 0 or workers == 0:
        return 0
    if workers is not None:
        return min(workers, n_items)
    return max(1, min(default_workers(gpu), math.ceil(n_items / FILES_PER_DECODER)))


def start_workers(opts: EmbedOptions, n_items: int) -> WorkerPool | None:
    """Spawn the decoder processes early (they import the decoders while the model loads);
    None with ``--workers 0`` (decoding in the main process: no timeout, no isolation)."""
    n = decoders_for(n_items, opts.workers, gpu_likely(opts.device))
    if n == 0:
        return None
    return WorkerPool(n, opts, opts.modality_configs())


def decode_events(items: list[Input], opts: EmbedOptions) -> Iterator[Event]:
    """Every event of ``items`` as it arrives, for callers that keep the decoded samples
    themselves (``mtx fit``, ``mtx predict``): decoded in the decoder processes (here with
    ``workers=0`` or a single file), watched as in a run, so a dead or stuck decoder fails its
    file and is replaced. Each file ends with one ``Done`` or ``Failed``."""
    pool = start_workers(opts, len(items))
    if pool is None:
        yield from iter_inline(items, opts.modality, opts.rules, opts.modality_configs())
        return
    try:
        pending = list(reversed(items))
        waiting = {it.path for it in items}
        checked = time.monotonic()
        while waiting:
            pool.submit_from(pending)
            events = pool.get(timeout=0.05)
            if not events or time.monotonic() - checked > 0.5:  # dead or stuck decoders, twice a second
                checked = time.monotonic()
                more, again = pool.check()
                events += more
                pending.extend(reversed(again))
            for ev in events:
                if ev.kind != "sample":
                    waiting.discard(ev.file)
                yield ev
    finally:
        pool.close()
