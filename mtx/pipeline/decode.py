"""Decoding a file, in a decoder process (or inline): stat, content hash, sniff, load.

:func:`process_file` turns one input into events (:mod:`.events`); :func:`worker_main` is a
decoder process: it takes files from its task pipe and ships their events in chunks
(:mod:`.transport`).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .._files import stat_regular
from ..errors import DecodeError, UnknownModality, short
from .events import Done, Dup, Event, Failed, Sampled, Unclaimed
from .inputs import Input, content_hash
from .transport import SHM_DIR, Channel, Chunker


def _hash(path: Path) -> str:
    try:
        return content_hash(path)
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as e:
        raise DecodeError(f"cannot read: {e.strerror or e}") from None


def process_file(inp: Input, opts_modality: str | None, rules, configs: dict[str, dict],
                 emit: Callable[[Event], None], known: frozenset[str] | set[str] = frozenset()) -> None:
    """Sniff and load one file, emitting ``Sampled`` events then one ``Done`` or ``Failed``
    (:func:`file_events` as a callback)."""
    for ev in file_events(inp, opts_modality, rules, configs, known):
        emit(ev)


def file_events(inp: Input, opts_modality: str | None, rules, configs: dict[str, dict],
                known: frozenset[str] | set[str] = frozenset()) -> Iterator[Event]:
    """Sniff and load one file: its ``Sampled`` events one at a time, as the decoder yields
    them (a file of a million table rows is never held whole), then one ``Done`` or ``Failed``.

    A file whose content hash is in ``known`` (already embedded under another path with the
    same configuration) is not decoded: a ``Dup`` event lets the caller copy its vectors.
    """
    from ..modalities import get_modality
    from ..sniff import sniff

    modality = ""
    stage = "sniff"
    try:
        st = stat_regular(inp.path, listed=True)
        chash = _hash(inp.path)
        fp = (st.st_size, st.st_mtime_ns, chash)
        if chash in known:
            yield Dup(file=inp.path, fp=fp)
            return
        dec = sniff(inp.path, modality=opts_modality, rules=rules)
        modality = dec.modality
        stage = "load"
        mod = get_modality(modality)
        cfg = mod.config(**configs.get(modality, {}))
        n = 0
        for s in mod.load(inp.path, cfg, dec.sniffed):
            yield Sampled(file=inp.path, modality=modality, sample=s)
            n += 1
        if n == 0:
            raise DecodeError("no samples in file (empty content)")
        yield Done(file=inp.path, modality=modality, reason=dec.reason, fp=fp, n=n)
    except UnknownModality as e:
        yield Unclaimed(file=inp.path, message=_reason(e, inp.path))
    except MemoryError:
        yield Failed(file=inp.path, modality=modality, stage=stage, message="out of memory while decoding")
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop the run
        yield Failed(file=inp.path, modality=modality, stage=stage, message=_reason(e, inp.path))


def _reason(e: BaseException, path: Path) -> str:
    """The one-line reason of a failure row, which names its file already: the path is not
    repeated (a library's message that quotes it gets the file's name instead)."""
    return short(e, with_path=False).replace(str(path), path.name)


def iter_inline(items: list[Input], modality: str | None, rules, configs: dict[str, dict],
                known: frozenset[str] = frozenset()) -> Iterator[Event]:
    """The events of ``items``, decoded one after another in this process (``--workers 0``: no
    timeout, no crash isolation), streamed: each sample goes on as soon as it is decoded."""
    for inp in items:
        yield from file_events(inp, modality, rules, configs, known)


# ------------------------------------------------------------------------------------------
# A decoder process
# ------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: the kernel kills this decoder when the main process dies (even by SIGKILL), so
    none is left behind waiting on a semaphore or a pipe."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call above
        os._exit(0)


def load_known(path: str | None) -> frozenset[str]:
    if not path:
        return frozenset()
    with open(path, "rb") as f:
        return pickle.load(f)


def worker_main(wid: int, tasks, results, ch: Channel, opts_modality, rules, configs, known_path) -> None:
    """A decoder process: files arrive in ``("tasks", [(seq, Input)])`` messages on ``tasks``
    (``("known", path)`` updates the known content hashes; None ends it); events leave in
    chunks on ``results``, after one ``("ready", wid)`` once the decoders are imported."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(1)
    with contextlib.suppress(Exception):
        from .. import modalities

        modalities.list_modalities()  # import the decoders now, while the parent loads the model
    known = load_known(known_path)
    results.send_bytes(pickle.dumps(("ready", wid)))
    chunker = Chunker(results, ch, use_shm=os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK))
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
            known = load_known(batch[1])
            continue
        for seq, inp in batch[1]:
            if not chunker.events:
                chunker.since = time.monotonic()  # a chunk's age counts from the work, not its first event
            ch.state[0] = seq
            process_file(inp, opts_modality, rules, configs, lambda m, s=seq: chunker.emit(s, m), known)
    chunker.flush()
