"""The decoder -> main process transport: chunks, the shared-memory ring and its slot lifetimes."""
from __future__ import annotations

import gc
import multiprocessing as mp
import pickle

import numpy as np
import pytest

from mtx.modalities import get_modality
from mtx.modalities._base import Sample
from mtx.pipeline import transport as T
from mtx.pipeline import workers as W


class _Conn:
    def __init__(self):
        self.sent: list[bytes] = []

    def send_bytes(self, b: bytes) -> None:
        self.sent.append(b)


def _main_side(ch) -> W.Worker:
    w = W.Worker.__new__(W.Worker)  # the main side of a worker, without a process
    w.ch, w.ring = ch, memoryview(ch.ring).cast("B")
    return w


def _samples(rng, n, shape=(1, 3, 8, 8)):
    return [Sample("", {"pixels": rng.integers(0, 255, shape, dtype=np.uint8),
                        "extra": rng.normal(size=(shape[0], 5)).astype(np.float32)}, {"i": i}) for i in range(n)]


@pytest.mark.parametrize("use_shm", [True, False])
def test_chunks_round_trip_through_ring_file_and_pipe(use_shm):
    ch = T.Channel.create(mp.get_context("spawn"))
    conn = _Conn()
    ck = T.Chunker(conn, ch, use_shm=use_shm)
    rng = np.random.default_rng(0)
    small = _samples(rng, 3)
    expect = [{k: a.copy() for k, a in s.arrays.items()} for s in small]
    for i, s in enumerate(small):
        ck.emit(i, ("sample", None, "image", s))
        ck.emit(i, ("done", None, "image", "why", (1, 2, "h"), 1))
    ck.flush()
    # A sample bigger than a ring slot travels outside the ring.
    big = _samples(rng, 1, shape=(1, 3, 1300, 1300))[0]
    big_expect = big.arrays["pixels"].copy()
    ck.emit(9, ("sample", None, "image", big))
    ck.emit(9, ("done", None, "image", "why", (1, 2, "h"), 1))
    ck.flush()
    w = _main_side(ch)
    msgs = [pickle.loads(b) for b in conn.sent]
    assert [m[2][0] for m in msgs] == ["slot", "file" if use_shm else "inline"]
    got = []
    for _, events, where in msgs:
        blob = w.blob(where)
        for ev in events:
            if ev[0] == "sample":
                T.resolve(ev[3], blob)
                got.append(ev[3])
    for s, e in zip(got[:3], expect, strict=True):
        for k in e:
            np.testing.assert_array_equal(s.arrays[k], e[k])
    np.testing.assert_array_equal(got[3].arrays["pixels"], big_expect)
    # Events keep their order and carry the batch key computed in the worker.
    assert [ev[0] for ev in msgs[0][1]] == ["sample", "done"] * 3
    assert msgs[0][1][0][4] == get_modality("image").batch_key(got[0])


def test_a_ring_slot_is_freed_only_when_its_last_array_is_gone():
    ch = T.Channel.create(mp.get_context("spawn"))
    conn = _Conn()
    ck = T.Chunker(conn, ch, use_shm=False)
    for i, s in enumerate(_samples(np.random.default_rng(1), 2)):
        ck.emit(i, ("sample", None, "image", s))
    ck.flush()
    (_, events, where), = [pickle.loads(b) for b in conn.sent]
    slot = where[1]
    assert where[0] == "slot" and ch.used[slot] == 1
    w = _main_side(ch)
    blob = w.blob(where)
    for ev in events:
        T.resolve(ev[3], blob)
    keep = events[1][3].arrays["extra"]
    del blob, events, ev
    gc.collect()
    assert ch.used[slot] == 1, "slot freed while an array still points into it"
    del keep
    gc.collect()
    assert ch.used[slot] == 0
    # Every slot can be taken again (the semaphore was released once per chunk).
    assert all(ch.free.acquire(block=False) for _ in range(T.SLOTS))
    assert not ch.free.acquire(block=False)


def test_a_file_split_over_chunks_ships_its_done_at_once():
    ch = T.Channel.create(mp.get_context("spawn"))
    conn = _Conn()
    ck = T.Chunker(conn, ch, use_shm=False)
    rng = np.random.default_rng(2)
    per = (1, 3, 600, 600)  # ~1 MB each: a 4 MB slot holds three
    for s in _samples(rng, 5, shape=per):
        ck.emit(7, ("sample", None, "image", s))
    ck.emit(7, ("done", None, "image", "why", (1, 2, "h"), 5))
    ck.emit(8, ("fail", None, "image", "load", "bad"))  # a later file: must not wait with the done
    msgs = [pickle.loads(b) for b in conn.sent]
    assert len(msgs) == 2
    assert [ev[0] for ev in msgs[-1][1]] == ["sample", "sample", "done"]
    assert ck.events == [("fail", 8, "image", "load", "bad")]


def test_reused_collate_buffers_give_the_vectors_of_fresh_ones():
    from mtx.encoder import load_model
    from mtx.pipeline import Embedder, EmbedOptions

    model = load_model("tiny", "seeded", "cpu", "float32")
    rng = np.random.default_rng(3)
    batches = [[Sample("", {"pixels": rng.integers(0, 255, (1, 3, 224, 224), dtype=np.uint8)}) for _ in range(3)]
               for _ in range(4)]
    emb = Embedder(model, EmbedOptions())
    seen = set()
    got = []
    for b in batches + batches[:2]:  # more batches than buffers kept: every buffer is reused
        inputs = emb.prepare("image", b)
        seen.add(inputs["pixels"].data_ptr())
        got.append(emb.embed("image", b, inputs)[0])
        emb.release(inputs)
    assert len(seen) == 1  # one buffer served every batch of this shape
    for i, b in enumerate(batches + batches[:2]):
        fresh = Embedder(model, EmbedOptions()).embed("image", b)[0]
        np.testing.assert_array_equal(got[i], fresh)


def test_ring_is_sized_to_the_free_shared_memory(monkeypatch):
    import os
    from types import SimpleNamespace

    def free(mb):
        monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bavail=mb << 20, f_frsize=1))

    free(64)  # Docker's default /dev/shm: 14 rings of 32 MB would end in SIGBUS
    assert T.ring_slots(14) == 0
    free(64)
    assert T.ring_slots(1) == 8  # 32 MB = 8 slots of 4 MB fit in half of 64 MB
    free(100_000)
    assert T.ring_slots(14) == T.SLOTS
    # Without ring slots every chunk takes the file (or pipe) path, and still arrives intact.
    ch = T.Channel.create(mp.get_context("spawn"), slots=0)
    conn = _Conn()
    ck = T.Chunker(conn, ch, use_shm=False)
    s = _samples(np.random.default_rng(4), 1)[0]
    want = s.arrays["pixels"].copy()
    ck.emit(1, ("sample", None, "image", s))
    ck.flush()
    (_, events, where), = [pickle.loads(b) for b in conn.sent]
    assert where[0] == "inline"
    T.resolve(events[0][3], _main_side(ch).blob(where))
    np.testing.assert_array_equal(events[0][3].arrays["pixels"], want)


def test_waiting_on_the_main_process_is_flagged_not_taken_for_a_stall():
    ch = T.Channel.create(mp.get_context("spawn"))
    seen = []

    class Conn:
        def send_bytes(self, b):
            seen.append(ch.state[2])

    ck = T.Chunker(Conn(), ch, use_shm=False)
    ck.emit(1, ("fail", None, "image", "load", "bad"))
    ck.flush()
    assert seen == [1] and ch.state[2] == 0


def test_an_unreadable_chunk_fails_its_files_and_the_run_goes_on(tmp_path):
    from pathlib import Path

    ch = T.Channel.create(mp.get_context("spawn"), slots=0)
    conn = _Conn()
    ck = T.Chunker(conn, ch, use_shm=True)
    for seq in (5, 6):
        ck.emit(seq, ("sample", None, "image", _samples(np.random.default_rng(seq), 1)[0]))
        ck.emit(seq, ("done", None, "image", "why", (1, 2, "h"), 1))
    ck.flush()
    (raw,) = conn.sent
    where = pickle.loads(raw)[2]
    assert where[0] == "file"
    os_path = Path(T.SHM_DIR) / where[1]
    os_path.unlink()  # e.g. removed by someone else's clean-up

    pool = W.WorkerPool.__new__(W.WorkerPool)
    pool.paths = {5: Path("/x/a.png"), 6: Path("/x/b.png")}
    pool.ready, pool._start_deaths = set(), 0
    w = _main_side(ch)
    w.assigned = {5: object(), 6: object()}
    w.results = type("R", (), {"recv_bytes": lambda self: raw})()
    events = pool._read(w)
    assert [e[:2] for e in events] == [("fail", Path("/x/a.png")), ("fail", Path("/x/b.png"))]
    assert "could not be read back from shared memory" in events[0][4]
    assert w.assigned == {} and pool.paths == {}
