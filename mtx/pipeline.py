"""discover -> sniff+load in worker processes -> batch -> tokenize -> encode -> pool -> write.

Memory is bounded: each worker holds at most one chunk being filled, ``SLOTS`` ring slots and
``CREDITS`` unread chunk files; at most ``queue_size`` samples wait in the main process's
buckets, each batch holds ``batch_size`` segments, and the writer commits a part every
``part_rows`` rows. Worker processes are spawned (no fork of a torch process), use one intra-op
thread each, and are watched: a file without progress for ``timeout`` seconds or a worker that
dies (segfault in a decoder, OOM kill) becomes a failure row and the worker is replaced.
"""
from __future__ import annotations

import contextlib
import gc
import glob as globlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
import stat
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DecodeError, FileTimeout, MtxError, UsageError, WorkerCrashed, short

# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    path: Path  # absolute
    id: str  # relative to its input root (posix)


def _walk(root: Path) -> Iterator[Path]:
    """Recursive, sorted, hidden entries skipped, symlinked directories not followed (no loops)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _rel_id(path: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd()).as_posix()
    return path.as_posix()


def read_stdin_list(stream, null: bool) -> list[str]:
    data = stream.read()
    if isinstance(data, bytes):
        data = data.decode("utf-8", "surrogateescape")
    parts = data.split("\0") if null else data.splitlines()
    return [p for p in (x.strip("\n") if null else x.strip() for x in parts) if p]


def discover(inputs: Iterable[str], *, stdin=None, null: bool = False) -> tuple[list[Input], list[tuple[str, str]]]:
    """Expand paths, directories (recursive), globs and ``-`` into a sorted, de-duplicated list.

    Returns ``(inputs, problems)`` where problems are ``(path, message)`` for inputs that do not
    exist or cannot be listed. Companion files (an ENVI header's data file) are removed.
    """
    from .modalities import list_modalities

    found: dict[Path, Input] = {}
    problems: list[tuple[str, str]] = []

    def add(p: Path, root: Path | None) -> None:
        ap = Path(os.path.abspath(p))
        if ap not in found:
            found[ap] = Input(ap, _rel_id(ap, root))

    for raw in inputs:
        if raw == "-":
            src = stdin if stdin is not None else (sys.stdin.buffer if null else sys.stdin)
            for line in read_stdin_list(src, null):
                p = Path(line)
                if p.is_dir():
                    for f in _walk(p):
                        add(f, Path(os.path.abspath(p)))
                else:
                    add(p, None)
            continue
        p = Path(raw).expanduser()
        if p.is_dir():
            root = Path(os.path.abspath(p))
            for f in _walk(p):
                add(f, root)
        elif p.exists() or p.is_symlink():
            add(p, None)
        elif any(c in raw for c in "*?["):
            hits = sorted(globlib.glob(raw, recursive=True))
            if not hits:
                problems.append((raw, "glob matched no files"))
            for h in hits:
                hp = Path(h)
                if hp.is_dir():
                    for f in _walk(hp):
                        add(f, Path(os.path.abspath(hp)))
                else:
                    add(hp, None)
        else:
            problems.append((raw, "no such file or directory"))
    mods = list_modalities()
    companions: set[Path] = set()
    for ap in found:
        for m in mods:
            companions.update(Path(os.path.abspath(c)) for c in m.companions(ap))
    items = [v for k, v in found.items() if k not in companions]
    # Two roots can hold the same relative name (A/x.txt and B/x.txt): such ids fall back to the
    # path relative to the working directory (or absolute), so every id stays unique.
    counts: dict[str, int] = {}
    for it in items:
        counts[it.id] = counts.get(it.id, 0) + 1
    items = [Input(it.path, _rel_id(it.path, None)) if counts[it.id] > 1 else it for it in items]
    items.sort(key=lambda i: (i.id, str(i.path)))
    return items, problems


def fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def content_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------


@dataclass
class EmbedOptions:
    """Everything that decides what a run computes (recorded) and how fast (not recorded)."""

    model: str = "meta-b16"
    weights: list[str] | None = None
    device: str | None = None
    dtype: str = "float32"
    batch_size: int = 32
    workers: int | None = None
    modality: str | None = None
    rules: list[tuple[str, str]] = field(default_factory=list)
    pool: str | None = None
    store_dtype: str = "float32"
    save_tokens: bool = False
    overwrite: bool = False
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> config overrides
    timeout: float = 600.0
    compile: bool = False  # torch.compile the encoder's block stack (speed only, not recorded)
    queue_size: int = 256
    part_rows: int = 1024
    part_seconds: float = 30.0

    def modality_config(self, name: str):
        from .modalities import get_modality

        mod = get_modality(name)
        try:
            return mod.config(**self.options.get(name, {}))
        except TypeError as e:
            raise UsageError(f"bad option for {name}: {e}") from None


def default_workers(gpu: bool = False) -> int:
    """Decoder processes for this machine: on CPU half the cores (the encoder's intra-op
    threads take the other half); with a GPU every core but two (the main process collates,
    drives the GPU and writes)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if gpu:
        return max(1, n - 2)
    return max(1, min(8, n // 2))


def _gpu_likely(device: str | None) -> bool:
    """Whether ``device`` will be a GPU, answered before torch is imported (the decoders start
    while the model loads); corrected by :meth:`_WorkerPool.resize` once it is known."""
    if device is None or device == "auto":
        return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
    return device.startswith("cuda")


# ------------------------------------------------------------------------------------------
# Worker side
# ------------------------------------------------------------------------------------------


def _stat_regular(path: Path) -> os.stat_result:
    """stat() with every way a path can be unusable turned into a one-line DecodeError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise DecodeError(f"broken symlink: its target {target} does not exist") from None
        raise DecodeError("file disappeared before it could be read") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as e:
        if e.errno == 40:  # ELOOP
            raise DecodeError("symlink loop") from None
        raise DecodeError(f"cannot stat: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError("is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("not a regular file (a FIFO, socket or device); refusing to read it")
    return st


def process_file(inp: Input, opts_modality: str | None, rules, configs: dict[str, dict],
                 emit: Callable[[tuple], None], known: frozenset[str] | set[str] = frozenset()) -> None:
    """Sniff and load one file, emitting ``sample`` messages then one ``done`` or ``fail``.

    A file whose content hash is in ``known`` (already embedded under another path with the
    same configuration) is not decoded: a ``dup`` message lets the caller copy its vectors.
    """
    from .modalities import get_modality
    from .sniff import sniff

    modality = ""
    stage = "sniff"
    try:
        st = _stat_regular(inp.path)
        try:
            chash = content_hash(inp.path)
        except PermissionError:
            raise DecodeError("permission denied") from None
        except OSError as e:
            raise DecodeError(f"cannot read: {e.strerror or e}") from None
        fp = (st.st_size, st.st_mtime_ns, chash)
        if chash in known:
            emit(("dup", inp.path, fp))
            return
        dec = sniff(inp.path, modality=opts_modality, rules=rules)
        modality = dec.modality
        stage = "load"
        mod = get_modality(modality)
        cfg = mod.config(**configs.get(modality, {}))
        n = 0
        for s in mod.load(inp.path, cfg, dec.sniffed):
            emit(("sample", inp.path, modality, s))
            n += 1
        if n == 0:
            raise DecodeError("no samples in file (empty content)")
        emit(("done", inp.path, modality, dec.reason, fp, n))
    except MtxError as e:
        emit(("fail", inp.path, modality, stage, short(e)))
    except MemoryError:
        emit(("fail", inp.path, modality, stage, "out of memory while decoding"))
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop the run
        emit(("fail", inp.path, modality, stage, f"{type(e).__name__}: {short(e)}"))


# Decoded samples leave a worker in chunks: the results of up to CHUNK_FILES files (or
# SLOT_BYTES of arrays, or CHUNK_SECONDS of work) travel as one small message on the worker's
# own pipe. Their arrays go back to back into a slot of a shared-memory ring that the worker
# and the main process map once, for the whole run: the main process reads them in place (the
# batch collate is the one copy) and the slot returns to the worker when the last of its
# arrays is gone. A chunk that does not fit, or finds every slot still in use, goes through a
# file on the shared-memory filesystem instead (or the pipe, where there is none). On a 16-core
# GPU machine the main process's per-file work, not the decoders or the encoder, was the limit:
# one message and no page-table work per chunk instead of two messages and a mapping per file.
CHUNK_FILES = 16
CHUNK_SAMPLES = 1024
CHUNK_SECONDS = 0.5
SLOTS = 8  # ring slots per worker
SLOT_BYTES = 4 << 20
CREDITS = 4  # chunks outside the ring a worker may have sent that the main process has not read
WINDOW = 2 * CHUNK_FILES  # most files assigned to one worker (a chunk being decoded, one queued)
WINDOW_SECONDS = 1.0  # ... or about this much work, whichever is fewer
START_LIMIT = 300.0  # seconds a fresh decoder process may take to import before its first file
SHM_DIR = "/dev/shm"
_ALIGN = 64


@dataclass(frozen=True)
class _BlobRef:
    offset: int
    shape: tuple[int, ...]
    dtype: str


def _shm_prefix(parent_pid: int) -> str:
    return f"mtx{parent_pid}_"


def _padded(nbytes: int) -> int:
    return nbytes + (-nbytes % _ALIGN)


def _layout(events: list) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Give the chunk's sample arrays aligned offsets in one buffer, replacing them with refs;
    returns ``([(offset, array)], total bytes)``."""
    placed: list[tuple[int, np.ndarray]] = []
    offset = 0
    for ev in events:
        if ev[0] != "sample":
            continue
        sample = ev[3]
        refs = {}
        for k, a in sample.arrays.items():
            a = np.ascontiguousarray(a)
            refs[k] = _BlobRef(offset, tuple(a.shape), a.dtype.str)
            placed.append((offset, a))
            offset += _padded(a.nbytes)
        sample.arrays = refs
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


def _read_file(name: str) -> np.ndarray:
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


def _resolve(sample, blob: np.ndarray) -> None:
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


def _cleanup_stale_shm() -> None:
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


def _cleanup_shm(parent_pid: int) -> None:
    """Remove blocks a killed worker or an interrupted run left behind."""
    prefix = _shm_prefix(parent_pid)
    with contextlib.suppress(OSError):
        for name in os.listdir(SHM_DIR):
            if name.startswith(prefix):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))


@dataclass
class _Channel:
    """What one decoder process and the main process share besides its two pipes."""

    state: Any  # RawArray q[3]: [file being decoded (seq), progress counter, 1 = waiting on main]
    credits: Any  # Semaphore(CREDITS): unread chunks outside the ring
    ring: Any  # RawArray of slots * SLOT_BYTES bytes
    used: Any  # RawArray b[slots]: 1 while the main process holds a slot's arrays
    free: Any  # Semaphore(slots): free slots

    @classmethod
    def create(cls, ctx, slots: int = SLOTS) -> "_Channel":
        ch = cls(ctx.RawArray("q", 3), ctx.Semaphore(CREDITS), ctx.RawArray("B", max(1, slots * SLOT_BYTES)),
                 ctx.RawArray("b", max(1, slots)), ctx.Semaphore(slots))
        ch.state[0] = -1
        return ch


def _ring_slots(n_workers: int) -> int:
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


class _Chunker:
    """Worker side: collects one file's messages after another and ships them in chunks.

    A file whose samples were split over several chunks has its ``done`` shipped at once, so
    when a worker dies every file is either wholly unseen by the main process (and can be given
    to another worker) or has all its messages in the pipe.
    """

    def __init__(self, conn, ch: _Channel, use_shm: bool):
        from .modalities import get_modality

        self.get_modality = get_modality
        self.conn, self.ch = conn, ch
        self.ring = np.frombuffer(ch.ring, np.uint8)
        self.prefix = _shm_prefix(os.getppid()) + f"{os.getpid()}_"
        self.use_shm = use_shm
        self.n = 0
        self.events: list[tuple] = []
        self.files = self.samples = self.nbytes = 0
        self.since = time.monotonic()
        self.split: set[int] = set()  # files with samples in an earlier chunk

    def emit(self, seq: int, msg: tuple) -> None:
        kind = msg[0]
        if kind == "sample":
            _, _, modality, sample = msg
            size = sum(_padded(a.nbytes) for a in sample.arrays.values())
            if self.samples and self.nbytes + size > SLOT_BYTES:
                self.split.add(seq)  # keep chunks within a ring slot
                self.flush()
            key = self.get_modality(modality).batch_key(sample)
            self.events.append(("sample", seq, modality, sample, key))
            self.samples += 1
            self.nbytes += size
        else:
            self.events.append((kind, seq, *msg[2:]))
            self.files += 1
        self.ch.state[1] += 1  # progress, watched by the main process for --timeout
        if kind == "sample":
            if self.samples >= CHUNK_SAMPLES or time.monotonic() - self.since > CHUNK_SECONDS:
                self.split.add(seq)
                self.flush()
        elif seq in self.split or self.files >= CHUNK_FILES or time.monotonic() - self.since > CHUNK_SECONDS:
            self.split.discard(seq)
            self.flush()

    def flush(self) -> None:
        if not self.events:
            return
        where = None
        if self.samples:
            placed, total = _layout(self.events)
            if total <= SLOT_BYTES and self.ch.free.acquire(block=False):
                slot = next(i for i in range(len(self.ch.used)) if not self.ch.used[i])
                self.ch.used[slot] = 1
                _place(self.ring[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES], placed)
                where = ("slot", slot)
            else:
                self._wait(self.ch.credits.acquire)
                if self.use_shm:
                    self.n += 1
                    name = f"{self.prefix}{self.n}"
                    try:
                        _write_file(placed, os.path.join(SHM_DIR, name))
                        where = ("file", name)
                    except OSError:  # /dev/shm full: this chunk takes the pipe
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(SHM_DIR, name))
                if where is None:
                    buf = np.zeros(total, np.uint8)
                    _place(buf, placed)
                    where = ("inline", buf)
        data = pickle.dumps(("chunk", self.events, where), protocol=pickle.HIGHEST_PROTOCOL)
        self.events = []
        self.files = self.samples = self.nbytes = 0
        self._wait(lambda: self.conn.send_bytes(data))
        self.since = time.monotonic()

    def _wait(self, fn) -> None:
        """Run ``fn``, which may block until the main process reads: flagged in shared memory so
        that waiting on the main process is not taken for a decoder without progress."""
        self.ch.state[2] = 1
        try:
            fn()
        finally:
            self.ch.state[2] = 0


def _die_with_parent() -> None:
    """Linux: the kernel kills this decoder when the main process dies (even by SIGKILL), so
    none is left behind waiting on a semaphore or a pipe."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call above
        os._exit(0)


def _load_known(path: str | None) -> frozenset[str]:
    if not path:
        return frozenset()
    with open(path, "rb") as f:
        return pickle.load(f)


def _worker_main(wid: int, tasks, results, ch: _Channel, opts_modality, rules, configs, known_path) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(1)
    with contextlib.suppress(Exception):
        from . import modalities

        modalities.list_modalities()  # import the decoders now, while the parent loads the model
    known = _load_known(known_path)
    results.send_bytes(pickle.dumps(("ready", wid)))
    chunker = _Chunker(results, ch, use_shm=os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK))
    while True:
        if not tasks.poll():
            chunker.flush()  # nothing queued: ship what is done before waiting
        try:
            batch = tasks.recv()
        except EOFError:
            break
        if batch is None:
            break
        if batch[0] == "known":
            known = _load_known(batch[1])
            continue
        for seq, inp in batch[1]:
            if not chunker.events:
                chunker.since = time.monotonic()  # a chunk's age counts from the work, not its first event
            ch.state[0] = seq
            process_file(inp, opts_modality, rules, configs, lambda m, s=seq: chunker.emit(s, m), known)
    chunker.flush()


class _Worker:
    def __init__(self, ctx, wid: int, args: tuple, slots: int = SLOTS):
        self.wid = wid
        task_r, self.tasks = ctx.Pipe(duplex=False)  # each pipe: (receiving end, sending end)
        self.results, res_w = ctx.Pipe(duplex=False)
        # A window of tasks (up to 32 paths) must fit the task pipe whatever the worker is doing,
        # or the main process could block on it while the worker blocks on its result pipe.
        with contextlib.suppress(Exception):
            import fcntl

            fcntl.fcntl(self.tasks.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        self.ch = _Channel.create(ctx, slots)
        self.ring = memoryview(self.ch.ring).cast("B")
        self.proc = ctx.Process(target=_worker_main, name=f"mtx-worker-{wid}", daemon=True,
                                args=(wid, task_r, res_w, self.ch, *args))
        self.proc.start()
        task_r.close()
        res_w.close()
        self.assigned: dict[int, Input] = {}  # seq -> file, in submission order
        self.since = self.seen = time.monotonic()
        self.progress = (-1, 0)
        self.eof = False
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
        kind, val = where
        if kind == "slot":
            # An array over a memoryview, not a view of another array: the arrays sliced from it
            # keep it alive, so the slot is freed only when the last of them is gone.
            holder = np.frombuffer(self.ring[val * SLOT_BYTES:(val + 1) * SLOT_BYTES], np.uint8)
            weakref.finalize(holder, _free_slot, self.ch.used, self.ch.free, val)
            return holder
        self.ch.credits.release()
        return _read_file(val) if kind == "file" else val


class _WorkerPool:
    """Spawned decoder processes, each with its own task and result pipes, watched for timeouts
    and crashes.

    Every file gets a sequence number and is assigned to a known worker, which records in shared
    memory the file it is decoding and a progress counter. When a worker dies (segfault in a
    decoder, OOM kill) or makes no progress for ``timeout`` seconds, the file it was on becomes a
    failure row, whatever it had not shipped is handed to other workers, and a fresh worker
    replaces it.
    """

    def __init__(self, n: int, opts: EmbedOptions, configs: dict[str, dict]):
        _cleanup_stale_shm()
        self.ctx = mp.get_context("spawn")
        self.args = (opts.modality, opts.rules, configs, None)
        self._known_path: str | None = None
        self.timeout = opts.timeout
        self.workers: dict[int, _Worker] = {}
        self.ready: set[int] = set()
        self.paths: dict[int, Path] = {}  # seq -> path of files in flight
        self._next = 0
        self._seq = 0
        self._start_deaths = 0
        self._retired: list[_Worker] = []
        self.slots = _ring_slots(n)
        for _ in range(n):
            self._spawn()

    def _spawn(self) -> None:
        # The ring is allocated (zero-filled) here: check the space again for replacements.
        slots = min(self.slots, _ring_slots(1))
        self.workers[self._next] = _Worker(self.ctx, self._next, self.args, slots)
        self._next += 1

    def resize(self, n: int) -> None:
        """Start more decoder processes, or stop idle ones, until there are ``n``."""
        if n > len(self.workers):
            self.slots = min(self.slots, _ring_slots(n))
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

        fd, path = tempfile.mkstemp(prefix=f"{_shm_prefix(os.getpid())}known_",
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

    def _read(self, w: _Worker) -> list[tuple]:
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
            kind, seq = ev[0], ev[1]
            path = self.paths.get(seq)
            if kind == "sample":
                if blob is not None:
                    _resolve(ev[3], blob)
            elif self._ended(w, seq):
                ended += 1
            if path is not None:
                out.append((kind, path, *ev[2:]))
        if ended:
            w.record(ended)
        self._start_deaths = 0
        return out

    def _ended(self, w: _Worker, seq: int) -> bool:
        """The last message of file ``seq`` came back from ``w``: it is no longer in flight."""
        if seq not in w.assigned:
            return False
        del w.assigned[seq]
        del self.paths[seq]
        return True

    def _unreadable(self, w: _Worker, events: list, message: str) -> list[tuple]:
        out, seen = [], set()
        for ev in events:
            kind, seq = ev[0], ev[1]
            path = self.paths.get(seq)
            if kind != "sample":
                self._ended(w, seq)
            if path is not None and seq not in seen:
                seen.add(seq)
                out.append(("fail", path, ev[2] if kind != "dup" else "", "load", message))
        return out

    def get(self, timeout: float) -> list[tuple]:
        """Events from whichever workers have something (waits up to ``timeout`` seconds)."""
        from multiprocessing.connection import wait

        conns = {w.results: w for w in self.workers.values() if not w.eof}
        out: list[tuple] = []
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

    def check(self) -> tuple[list[tuple], list[Input]]:
        """(events, files to resubmit) for workers that died or made no progress: the events
        are what the worker shipped before it ended, then a failure for the file it was on."""
        events: list[tuple] = []
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
            if not (dead or slow):
                continue
            if not dead:
                w.proc.kill()
            w.proc.join(5)
            code = w.proc.exitcode
            while not w.eof and w.results.poll():  # what it shipped before it ended still counts
                events.extend(self._read(w))
            del self.workers[wid]
            for c in (w.tasks, w.results):
                with contextlib.suppress(OSError):
                    c.close()
            culprit = w.ch.state[0]
            if culprit in w.assigned:
                if not dead:
                    err = FileTimeout(f"no progress for {self.timeout:g} s (--timeout); the decoder was stopped")
                else:
                    why = f"signal {-code}" if code and code < 0 else f"exit code {code}"
                    err = WorkerCrashed(f"the decoder process died ({why}) while reading this file")
                events.append(("fail", w.assigned[culprit].path, "", "load", err.message))
            elif w.assigned:
                # It ended before starting a file (at start-up, or between files): blame none,
                # but do not respawn forever when every fresh process fails at once.
                self._start_deaths += 1
                if self._start_deaths > 3:
                    why = f"die (exit code {code})" if dead else "hang"
                    raise WorkerCrashed(f"decoder processes {why} before reading any file; try --workers 0 "
                                        "to decode in the main process")
            for seq, inp in w.assigned.items():
                self.paths.pop(seq, None)
                if seq != culprit:
                    again.append(inp)
            self._spawn()
        return events, again

    def close(self) -> None:
        for w in self.workers.values():
            w.send(None)
        deadline = time.monotonic() + 5
        for w in [*self.workers.values(), *self._retired]:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(1)
            for c in (w.tasks, w.results):
                with contextlib.suppress(OSError):
                    c.close()
        _cleanup_shm(os.getpid())
        if self._known_path:
            with contextlib.suppress(OSError):
                os.unlink(self._known_path)

# ------------------------------------------------------------------------------------------
# Main side
# ------------------------------------------------------------------------------------------


@dataclass
class _FileState:
    inp: Input
    modality: str = ""
    expected: int | None = None
    encoded: int = 0
    failed: bool = False
    fp: tuple[int, int, str] | None = None
    reason: str = ""


class Interrupted(MtxError):
    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}; committed work is kept, "
                         "rerun the same command to resume")
        self.exit_code = 128 + signum


class _Writer(threading.Thread):
    """The single writer thread: buffers rows, commits parts, reports its first error."""

    def __init__(self, store, part_rows: int, part_seconds: float):
        super().__init__(name="mtx-writer", daemon=True)
        from .store import PartBuffer

        self.store = store
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.buf = PartBuffer()
        self.part_rows = part_rows
        self.part_seconds = part_seconds
        self.error: BaseException | None = None
        self.parts = 0

    def run(self) -> None:
        from .store import PartBuffer

        last = time.monotonic()
        while True:
            try:
                item = self.q.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None:
                break
            if self.error is not None:
                continue
            kind = item[0] if item else ""
            if kind == "rows":
                self.buf.rows.append(item[1])
            elif kind == "files":
                for rec, failure in item[1]:
                    self.buf.files.append(rec)
                    if failure is not None:
                        self.buf.failures.append(failure)
            if self.buf.n_rows >= self.part_rows or (
                    not self.buf.empty() and time.monotonic() - last > self.part_seconds):
                try:
                    self.store.commit(self.buf)
                    self.parts += 1
                except BaseException as e:  # noqa: BLE001 - reported to the main thread
                    self.error = e
                self.buf = PartBuffer()
                last = time.monotonic()
        if self.error is None and not self.buf.empty():
            try:
                self.store.commit(self.buf)
                self.parts += 1
            except BaseException as e:  # noqa: BLE001
                self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)


class Embedder:
    """Turns a stream of samples into vectors with one loaded model (no store involved)."""

    def __init__(self, model, opts: EmbedOptions):
        from .modalities._base import BufferPool

        self.model = model
        self.opts = opts
        self.configs = {}
        self.pools: dict[str, str] = {}
        # On CUDA the collate writes into torch's pinned-memory cache instead.
        self.buffers = BufferPool() if model.device.type == "cpu" else None

    def config(self, modality: str):
        if modality not in self.configs:
            self.configs[modality] = self.opts.modality_config(modality)
        return self.configs[modality]

    def tokenizer(self, modality: str):
        return self.model.tokenizer(modality, self.config(modality))

    def pool_mode(self, modality: str) -> str:
        if modality not in self.pools:
            from .modalities import get_modality

            tok = self.tokenizer(modality)
            fitted = (tok.file_info or {}).get("fit_pool")  # a fitted tokenizer: the pooling it was trained with
            self.pools[modality] = self.opts.pool or fitted or get_modality(modality).default_pool(tok.init)
        return self.pools[modality]

    def prepare(self, modality: str, samples: list) -> dict:
        """Collate on the CPU and start the copy to the device (pinned, non-blocking on CUDA)."""
        from .modalities import get_modality

        dev = self.model.device
        inputs = get_modality(modality).collate(samples, pin=dev.type == "cuda", buffers=self.buffers)
        return {k: v.to(dev, non_blocking=dev.type == "cuda") for k, v in inputs.items()}

    def release(self, inputs: dict) -> None:
        """The encoder is done with ``inputs``: their buffers may hold the next batch."""
        if self.buffers is not None:
            self.buffers.give_back(inputs.values())

    def tokens(self, modality: str, samples: list, inputs: dict | None = None):
        import torch

        if inputs is None:
            inputs = self.prepare(modality, samples)
        with torch.inference_mode(), self.model.autocast():
            return self.tokenizer(modality)(inputs)

    def embed(self, modality: str, samples: list, inputs: dict | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
        """Vectors [n, D], token counts [n] and (with save_tokens) per-sample token arrays."""
        import torch

        from .encoder import pool

        tokens = self.tokens(modality, samples, inputs)
        hidden = self.model.encode_tokens(tokens)
        rows = pool(hidden, tokens, self.pool_mode(modality)).float()
        segs = torch.tensor([s.n_segments for s in samples], device=rows.device)
        owner = torch.repeat_interleave(torch.arange(len(samples), device=rows.device), segs)
        vecs = torch.zeros(len(samples), rows.shape[1], device=rows.device).index_add_(0, owner, rows)
        vecs = vecs / segs[:, None].to(vecs.dtype)
        n_row = (torch.full((rows.shape[0],), tokens.x.shape[1], device=rows.device)
                 if tokens.pad_mask is None else (~tokens.pad_mask).sum(1))
        ntok = torch.zeros(len(samples), dtype=torch.long, device=rows.device).index_add_(0, owner, n_row)
        saved = None
        if self.opts.save_tokens:
            x = tokens.x.float().cpu()
            keep = None if tokens.pad_mask is None else (~tokens.pad_mask).cpu()
            per_row = [x[r] if keep is None else x[r][keep[r]] for r in range(x.shape[0])]
            owner_l = owner.cpu().tolist()
            saved = [np.concatenate([per_row[r].numpy() for r in range(len(owner_l)) if owner_l[r] == i])
                     for i in range(len(samples))]
        return vecs.cpu().numpy().astype(np.float32), ntok.cpu().numpy().astype(np.int32), saved


class _Compute(threading.Thread):
    """Runs tokenizer + encoder on prepared batches, so the main thread can decode-collate the
    next batch (and the device copy can run) while this one computes. A failing batch is split
    and each sample retried alone, so one bad sample fails only its own file."""

    def __init__(self, emb: Embedder):
        super().__init__(name="mtx-compute", daemon=True)
        self.emb = emb
        self.inq: queue.Queue = queue.Queue(maxsize=2)
        self.outq: queue.Queue = queue.Queue()

    def run(self) -> None:
        while (item := self.inq.get()) is not None:
            modality, entries, inputs = item
            results, errors = [], []
            try:
                if inputs is None:
                    raise RuntimeError("collate failed")
                results.append((entries, *self.emb.embed(modality, [s for _, s in entries], inputs)))
                self.emb.release(inputs)
            except Exception as e:  # noqa: BLE001 - isolate the bad sample(s)
                if len(entries) == 1 and inputs is not None:
                    errors.append((entries[0][0], _stage_of(e), short(e)))
                else:
                    for ent in entries:
                        try:
                            results.append(([ent], *self.emb.embed(modality, [ent[1]])))
                        except Exception as e1:  # noqa: BLE001
                            errors.append((ent[0], _stage_of(e1), short(e1)))
            self.outq.put((modality, results, errors))


def _stage_of(e: BaseException) -> str:
    from .errors import TokenizeError

    return "tokenize" if isinstance(e, TokenizeError) else "encode"


ProgressFn = Callable[[dict[str, Any]], None]


def start_workers(opts: EmbedOptions, n_items: int) -> "_WorkerPool | None":
    """Spawn the decoder processes early (they import the decoders while the model loads)."""
    from .modalities import list_modalities

    n = opts.workers if opts.workers is not None else default_workers(_gpu_likely(opts.device))
    if n <= 0 or n_items <= 1:
        return None
    configs = {m.name: opts.modality_config(m.name).to_dict() for m in list_modalities()}
    return _WorkerPool(min(n, n_items), opts, configs)


def _iter_inline(items: list[Input], opts: EmbedOptions, configs, known) -> Iterator[tuple]:
    out: list[tuple] = []
    for inp in items:
        process_file(inp, opts.modality, opts.rules, configs, out.append, known)
        yield from out
        out.clear()


def run_config_of(model, opts: EmbedOptions) -> dict[str, Any]:
    """What decides the vectors (besides per-modality configs): hashed, recorded, compared."""
    from .weights import weights_digest

    return {
        "format_version": 1,
        "preset": model.spec.name,
        "geometry": model.spec.geometry(),
        "weights_sha256": weights_digest(model.weights),
        "compute_dtype": str(model.dtype).removeprefix("torch."),
        "pool": opts.pool,
        "store_dtype": opts.store_dtype,
        "save_tokens": opts.save_tokens,
        "options": opts.options,
        "forced_modality": opts.modality,
        "rules": opts.rules,
        # Fitted tokenizer files (only when used, so other outputs keep their config hash).
        **({"tokenizers": {m: t["file_sha256"] for m, t in sorted(model.weights.tokenizer_files.items())}}
           if model.weights.tokenizer_files else {}),
    }


def run_embed(items: list[Input], output: str | Path, opts: EmbedOptions, model,
              progress: ProgressFn | None = None, problems: list[tuple[str, str]] | None = None,
              shard: tuple[int, int] | None = None, pool: "_WorkerPool | None" = None) -> dict:
    """Embed ``items`` into ``output`` (resuming committed work) and return the summary.

    With ``shard=(i, n)`` the items are that shard's slice: the work is committed as parts and a
    shard marker, and ``mtx merge`` builds the final file once every shard is done.
    """
    from .modalities import get_modality, list_modalities
    from .store import Failure, FileRecord, Rows, Store, config_hash, h5_text

    t0 = time.monotonic()
    emb = Embedder(model, opts)
    configs = {m.name: opts.modality_config(m.name).to_dict() for m in list_modalities()}
    run_config = run_config_of(model, opts)
    # The loaded model, torch and the decoders are hundreds of thousands of long-lived objects:
    # keep the cyclic collector, which the per-file objects trigger, from walking them again
    # and again (it took about a tenth of the main thread).
    frozen = not gc.isenabled() or gc.get_freeze_count() > 0
    if not frozen:
        gc.freeze()
    # Resolved per-modality configs are checked per modality (a new modality in a later mtx
    # version must not invalidate an output; a changed default of a used one must).
    store = Store(output, run_config, overwrite=opts.overwrite, store_dtype=opts.store_dtype,
                  part_rows=opts.part_rows, part_seconds=opts.part_seconds, modality_configs=configs,
                  shard=shard)
    summary: dict[str, Any] = {"output": str(output), "n_inputs": len(items), "n_embedded": 0,
                               "n_samples": 0, "n_skipped": 0, "n_failed": 0, "by_modality": {},
                               "failures": []}
    stop = {"sig": 0}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["sig"] = signum

    old_handlers = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            old_handlers[s] = signal.signal(s, on_signal)
    try:
        store.open()
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    writer = _Writer(store, opts.part_rows, opts.part_seconds)
    writer.start()
    threads: dict[str, _Compute] = {}
    try:
        done = store.done_files()
        todo: list[Input] = []
        for inp in items:
            rec = done.get(h5_text(str(inp.path)))
            try:
                size, mtime = fingerprint(inp.path)
            except OSError:
                size = mtime = -1
            # Finished inputs are skipped; failed ones are tried again (the cause may be gone).
            if rec is not None and rec.status == "ok" and rec.size == size and rec.mtime_ns == mtime:
                summary["n_skipped"] += 1
            else:
                todo.append(inp)
        discover_failures = []
        for raw, msg in problems or []:
            discover_failures.append((FileRecord(raw, raw, "", -1, -1, "", 0, "failed"),
                                      Failure(raw, "", "discover", msg)))
            summary["n_failed"] += 1
            summary["failures"].append({"path": raw, "stage": "discover", "message": msg})
        if discover_failures:
            writer.put(("files", discover_failures))
        states = {inp.path: _FileState(inp) for inp in todo}
        redo = {h5_text(str(i.path)) for i in todo}  # their old rows are being replaced
        by_hash = {r.content_hash: r for r in done.values()
                   if r.status == "ok" and r.content_hash and r.path not in redo}
        known = frozenset(by_hash)
        buckets: dict[tuple, list[tuple[Path, Any]]] = {}
        seg_count: dict[tuple, int] = {}  # segments buffered per bucket
        buffered = 0
        files_done = 0
        finished: list[tuple] = []  # file records not yet handed to the writer (one put per group)

        def push_files() -> None:
            if finished:
                writer.put(("files", finished.copy()))
                finished.clear()

        def report(final: bool = False) -> None:
            if progress:
                el = time.monotonic() - t0
                progress({"event": "tick", "files_done": files_done, "files_total": len(todo), "skipped": summary["n_skipped"],
                          "samples": summary["n_samples"], "failed": summary["n_failed"],
                          "by_modality": dict(summary["by_modality"]), "elapsed": el, "final": final})

        def finish(st: _FileState, failure: Failure | None = None) -> None:
            nonlocal files_done
            files_done += 1
            size, mtime, chash = st.fp if st.fp else (-1, -1, "")
            if failure is None:
                rec = FileRecord(str(st.inp.path), st.inp.id, st.modality, size, mtime, chash,
                                 st.expected or 0, "ok")
                summary["n_embedded"] += 1
                summary["by_modality"][st.modality] = summary["by_modality"].get(st.modality, 0) + 1
            else:
                if size < 0:
                    with contextlib.suppress(OSError):
                        size, mtime = fingerprint(st.inp.path)
                rec = FileRecord(str(st.inp.path), st.inp.id, st.modality, size, mtime, chash, 0, "failed")
                summary["n_failed"] += 1
                summary["failures"].append({"path": failure.path, "modality": failure.modality,
                                            "stage": failure.stage, "message": failure.message})
            finished.append((rec, failure))
            if len(finished) >= 256:
                push_files()
            states.pop(st.inp.path, None)
            if progress:
                progress({"event": "file", "path": str(st.inp.path), "id": st.inp.id,
                          "modality": st.modality, "status": rec.status, "n_samples": rec.n_samples,
                          "stage": failure.stage if failure else None,
                          "message": failure.message if failure else None})
            report()

        def fail(path: Path, modality: str, stage: str, message: str) -> None:
            nonlocal buffered
            st = states.get(path)
            if st is None or st.failed:
                return
            st.failed = True
            st.modality = st.modality or modality
            for key in list(buckets):
                before = len(buckets[key])
                buckets[key] = [(p, s) for p, s in buckets[key] if p != path]
                buffered -= before - len(buckets[key])
                seg_count[key] = sum(s.n_segments for _, s in buckets[key])
                if not buckets[key]:
                    del buckets[key]
                    seg_count.pop(key, None)
            finish(st, Failure(str(path), st.modality, stage, message))

        compute = _Compute(emb)
        compute.start()
        threads["compute"] = compute

        def flush(key: tuple) -> None:
            """Hand a bucket to the compute thread (blocks while two batches are in flight)."""
            nonlocal buffered
            entries = buckets.pop(key)
            seg_count.pop(key, None)
            buffered -= len(entries)
            try:
                inputs = emb.prepare(key[0], [s for _, s in entries])
            except Exception:  # noqa: BLE001 - the compute thread isolates the bad sample
                inputs = None
            compute.inq.put((key[0], entries, inputs))
            drain()

        def drain(block: bool = False) -> None:
            while True:
                try:
                    modality, results, errors = compute.outq.get(block=block, timeout=None)
                except queue.Empty:
                    return
                block = False
                collect(modality, results, errors)

        def collect(modality: str, results: list, errors: list) -> None:
            for path, stage, message in errors:
                fail(path, modality, stage, message)
            for ents, vecs, ntok, toks in results:
                live = [i for i, (p, _) in enumerate(ents) if p in states and not states[p].failed]
                if not live:
                    continue
                ents2 = [ents[i] for i in live]
                writer.put(("rows", Rows(
                    ids=[states[p].inp.id + (f"#{s.key}" if s.key else "") for p, s in ents2],
                    paths=[str(p) for p, _ in ents2],
                    modalities=[modality] * len(ents2),
                    vectors=vecs[live], n_tokens=ntok[live],
                    tokens=[toks[i] for i in live] if toks is not None else None)))
                summary["n_samples"] += len(ents2)
                for p, _ in ents2:
                    st = states[p]
                    st.encoded += 1
                    if st.expected is not None and st.encoded >= st.expected:
                        finish(st)

        def settle() -> None:
            """Wait for every batch handed to the compute thread and collect its results."""
            compute.inq.put(None)
            compute.join()
            drain()

        def handle(msg: tuple) -> None:
            nonlocal buffered
            kind = msg[0]
            if kind == "sample":
                path, modality, sample = msg[1:4]
                st = states.get(path)
                if st is None or st.failed:
                    return
                st.modality = modality
                # Workers compute the batch key; inline decoding (no workers) does it here.
                key = (modality, msg[4] if len(msg) > 4 else get_modality(modality).batch_key(sample))
                buckets.setdefault(key, []).append((path, sample))
                seg_count[key] = seg_count.get(key, 0) + sample.n_segments
                buffered += 1
                if seg_count[key] >= opts.batch_size:
                    flush(key)
                elif buffered > opts.queue_size:
                    flush(max(buckets, key=lambda k: len(buckets[k])))
            elif kind == "done":
                _, path, modality, reason, fp, n = msg
                st = states.get(path)
                if st is None or st.failed:
                    return
                st.modality, st.reason, st.fp, st.expected = modality, reason, fp, n
                if st.encoded >= n:
                    finish(st)
            elif kind == "fail":
                _, path, modality, stage, message = msg
                fail(path, modality, stage, message)
            elif kind == "dup":
                # Same bytes as a file embedded earlier under another name: copy, don't recompute.
                _, path, fp = msg
                st = states.get(path)
                if st is None or st.failed:
                    return
                src = by_hash[fp[2]]
                rows = store.rows_of(src.path, src.id, st.inp.id, str(path))
                if rows is None:
                    fail(path, "", "load", "identical to an embedded file whose rows could not be read")
                    return
                writer.put(("rows", rows))
                summary["n_samples"] += len(rows.ids)
                st.modality, st.fp, st.expected, st.encoded = src.modality, fp, len(rows.ids), len(rows.ids)
                st.reason = f"identical content to {src.id}"
                summary["n_copied"] = summary.get("n_copied", 0) + 1
                finish(st)

        pending = list(reversed(todo))
        if pool is None:
            pool = start_workers(opts, len(todo))
        if pool is not None and len(todo) <= 1:
            pool.close()
            pool = None
        if pool is not None and opts.workers is None:  # now the device is known
            pool.resize(min(len(todo), default_workers(model.device.type == "cuda")))
        if pool is None:
            for msg in _iter_inline(todo, opts, configs, known):
                handle(msg)
                if stop["sig"]:
                    break
        else:
            pool.set_known(known)
            checked = time.monotonic()
            while states and not stop["sig"]:
                # A bounded window of files per worker; the decoders run ahead of the encoder.
                pool.submit_from(pending)
                events = pool.get(timeout=0.05)
                drain()
                for ev in events:
                    handle(ev)
                    if stop["sig"]:
                        break
                push_files()
                now = time.monotonic()
                if events and now - checked < 0.5:
                    continue
                # Dead or stuck decoders are looked for at least twice a second, even while
                # the other workers keep the stream full.
                checked = now
                evs, again = pool.check()
                for m in evs:
                    handle(m)
                pending.extend(reversed(again))
                if not events and buckets and not stop["sig"] and compute.inq.empty():
                    # Decoders are behind: keep the encoder busy with what is buffered.
                    flush(max(buckets, key=lambda k: len(buckets[k])))
        for key in list(buckets):
            flush(key)
        settle()
        push_files()
        if stop["sig"]:
            raise Interrupted(stop["sig"])
        writer.put(None)
        writer.join()
        if writer.error is not None:
            raise writer.error
        report(final=True)
        attrs = _root_attrs(model, run_config, config_hash(run_config), store.merged_modality_configs())
        mod_attrs = {}
        for name in summary["by_modality"]:
            tok = emb.tokenizer(name)
            mod_attrs[name] = {**tok.describe(), "pool": emb.pool_mode(name),
                               "config_json": json.dumps(emb.config(name).to_dict(), default=str)}
        if shard is None:
            store.consolidate(attrs, mod_attrs)
        else:
            store.finish_shard(attrs, mod_attrs, summary)
    finally:
        c = threads.get("compute")
        if c is not None and c.is_alive():
            with contextlib.suppress(queue.Full):  # lets it end (and free the model) after a failure
                c.inq.put(None, timeout=5)
        if pool is not None:
            pool.close()
        if writer.is_alive():
            with contextlib.suppress(Exception):
                writer.q.put(None)
            writer.join(60)
        store.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if not frozen:
            gc.unfreeze()
    el = time.monotonic() - t0
    summary["elapsed_s"] = round(el, 3)
    summary["samples_per_s"] = round(summary["n_samples"] / el, 3) if el > 0 else 0.0
    desc = model.describe()
    summary.update(device=desc["device"], dtype=desc["dtype"], model=model.spec.name,
                   weights=desc["weights_source"])
    return summary


def _root_attrs(model, run_config: dict, cfg_hash: str, modality_configs: dict) -> dict[str, Any]:
    from . import __version__
    from .store import FORMAT_NAME, FORMAT_VERSION

    d = model.describe()
    import datetime

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mtx_version": __version__,
        "preset": model.spec.name,
        "geometry_json": json.dumps(model.spec.geometry()),
        "weights_source": d["weights_source"],
        "weights_sha256": d["weights_sha256"],
        "weights_files_json": json.dumps(d["weights_files"], default=str),
        "encoder_sha256": d["encoder_sha256"],
        "compute_dtype": d["dtype"],
        "device_kind": d["device"],
        "config_json": json.dumps(run_config, sort_keys=True, default=str),
        "modality_configs_json": json.dumps(modality_configs, sort_keys=True, default=str),
        "config_sha256": cfg_hash,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
