"""Process model and output lifecycle (issues 16 and 17): the lock file, flock-less file systems,
weights verification stamps, early output checks, --overwrite that replaces only a complete
output, progress lines for unattended runs, ``mtx info``/``status`` on unfinished outputs."""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded", "-q"]


def _imgs(d: Path, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"i{i:04d}.png")
    return d


def _ids(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        return set(f["id"].asstr()[()])


def _store(out: Path):
    from mtx.store import Store

    return Store(out, {"geometry": {"dim": 8}, "k": 1})


# -- the lock file (16.19) --------------------------------------------------------------------


def test_lock_file_is_kept_so_every_run_locks_one_inode(tmp_path):
    out = tmp_path / "o.h5"
    s1 = _store(out).open()
    inode = (tmp_path / "o.h5.lock").stat().st_ino
    s1.close()
    assert (tmp_path / "o.h5.lock").exists()  # unlinking it would let two runs lock two inodes
    s2 = _store(out).open()
    try:
        assert (tmp_path / "o.h5.lock").stat().st_ino == inode
    finally:
        s2.close()


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP])
def test_file_system_without_flock_is_one_clear_line(tmp_path, monkeypatch, capsys, code):
    import mtx.store

    def no_flock(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(mtx.store.fcntl, "flock", no_flock)
    d = _imgs(tmp_path / "in", 1)
    assert main(["embed", str(d), "-o", str(tmp_path / "o.h5"), *TINY, "-j", "0"]) == 1
    err = capsys.readouterr().err
    assert "does not support file locks" in err and "MTX_LOCK=off" in err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("MTX_LOCK", "off")  # the way out the message names
    assert main(["embed", str(d), "-o", str(tmp_path / "o.h5"), *TINY, "-j", "0"]) == 0


def test_verified_weights_stamp_lives_in_mtx_cache_not_in_the_snapshot(tmp_path, monkeypatch):
    import mtx.weights as w

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    snap = tmp_path / "hub" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    p = snap / "w.bin"
    p.write_bytes(b"published weights")
    src = w.WeightSource("blocks", "r", "w.bin", hashlib.sha256(b"published weights").hexdigest())
    assert w.verify_sha256(p, src) == src.sha256
    assert sorted(x.name for x in snap.iterdir()) == ["w.bin"]  # nothing written beside the file
    assert list((tmp_path / "cache" / "mtx").rglob("*"))  # remembered under mtx's own cache

    def no_rehash(path):
        raise AssertionError("verified file hashed again")

    monkeypatch.setattr(w, "sha256_file", no_rehash)
    assert w.verify_sha256(p, src) == src.sha256
    p.write_bytes(b"changed weights!!")  # size changes: verified again, and refused
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(w.WeightsError, match="sha256 mismatch"):
        w.verify_sha256(p, src)


# -- the output is checked before the model loads (17.15) -----------------------------------


def _no_model(monkeypatch):
    import mtx.encoder

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(mtx.encoder, "load_model", boom)


def test_unwritable_output_folder_is_a_usage_error_before_the_model(tmp_path, monkeypatch, capsys):
    d = _imgs(tmp_path / "in", 1)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def refusing_open(path, flags, *a, **k):  # a read-only folder, even for root
        if Path(os.fsdecode(path)).parent == ro and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refusing_open)
    _no_model(monkeypatch)
    assert main(["embed", str(d), "-o", str(ro / "o.h5"), *TINY, "-j", "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Permission denied" in err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1
    assert list(ro.iterdir()) == []


def test_directory_as_output_is_one_line(tmp_path, monkeypatch, capsys):
    d = _imgs(tmp_path / "in", 1)
    (tmp_path / "outdir").mkdir()
    _no_model(monkeypatch)
    assert main(["embed", str(d), "-o", str(tmp_path / "outdir"), *TINY, "-j", "0"]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "outdir.lock").exists()


# -- one input keeps the timeout and the isolation; decoding streams (17.2, 16.18) -----------


def test_a_single_input_is_decoded_in_a_decoder_process_under_timeout(tmp_path):
    # One slow file alone: it used to be decoded in the main process, with no --timeout at all.
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (3000, 3000, 3), dtype=np.uint8)).save(d / "slow.png", compress_level=1)
    out = tmp_path / "o.h5"
    assert main(["embed", str(d / "slow.png"), "-o", str(out), *TINY, "--timeout", "0.05"]) == 3
    with h5py.File(out, "r") as f:
        assert "no progress for 0.05 s (--timeout)" in f["failures/message"].asstr()[0]


def test_few_files_start_few_decoder_processes():
    from mtx.pipeline.workers import FILES_PER_DECODER, decoders_for

    assert decoders_for(0, None, False) == 0
    assert decoders_for(1, None, False) == 1  # one input: still its own process
    assert decoders_for(7, None, True) == 1
    assert decoders_for(FILES_PER_DECODER + 1, None, True) == min(2, decoders_for(10**6, None, True))
    assert decoders_for(7, 0, False) == 0  # --workers 0: in-process
    assert decoders_for(7, 4, False) == 4 and decoders_for(3, 4, False) == 3  # explicit -j: as asked


def test_inline_decoding_streams_samples_one_at_a_time(tmp_path, monkeypatch):
    from mtx.modalities import get_modality
    from mtx.pipeline import Input
    from mtx.pipeline.decode import iter_inline
    from mtx.pipeline.events import Sampled

    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(500)))
    mod = get_modality("tabular")
    made = []
    real = type(mod).load

    def counting(self, *a, **k):
        for s in real(self, *a, **k):
            made.append(1)
            yield s

    monkeypatch.setattr(type(mod), "load", counting)
    events = iter_inline([Input(csv, "t.csv")], None, [], {})
    first = next(events)
    assert isinstance(first, Sampled) and len(made) == 1  # not the whole file first
    rest = list(events)
    assert len(made) == 500 and rest[-1].kind == "done" and rest[-1].n == 500


# -- --overwrite replaces the output only once the new one is complete (17.11) ---------------


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path, monkeypatch):
    from mtx.errors import Interrupted
    from mtx.pipeline.run import Run

    a, b = _imgs(tmp_path / "a", 2), _imgs(tmp_path / "b", 3)
    out = tmp_path / "o.h5"
    assert main(["embed", str(a), "-o", str(out), *TINY, "-j", "0"]) == 0
    old = out.read_bytes()

    def interrupted(self):
        raise Interrupted(2)  # Ctrl-C after the new parts are committed, before they replace it

    with monkeypatch.context() as m:
        m.setattr(Run, "_consolidate", interrupted)
        assert main(["embed", str(b), "-o", str(out), *TINY, "-j", "0", "--pool", "max", "--overwrite"]) == 130
    assert out.read_bytes() == old  # the old output is whole
    assert _ids(out) == {"i0000.png", "i0001.png"}
    # The rerun finishes the replacement (with or without --overwrite); none of the old rows stay.
    assert main(["embed", str(b), "-o", str(out), *TINY, "-j", "0", "--pool", "max"]) == 0
    assert _ids(out) == {"i0000.png", "i0001.png", "i0002.png"}
    with h5py.File(out, "r") as f:
        assert {p.rpartition("/")[0] for p in f["path"].asstr()[()]} == {str(b)}
    assert not (tmp_path / "o.h5.parts").exists()


def test_overwrite_of_a_file_that_is_also_an_input_reads_it_first(tmp_path, capsys):
    t = tmp_path / "t.txt"
    t.write_text("a note that is both an input and the output path\n")
    u = tmp_path / "u.txt"
    u.write_text("another note\n")
    code = main(["embed", str(t), str(u), "-o", str(t), *TINY, "-j", "0", "--overwrite"])
    err = capsys.readouterr().err
    assert "disappeared" not in err  # it was not deleted before it was read
    assert code in (0, 2), err
    if code == 0:
        assert {Path(i).name for i in _ids(t)} >= {"u.txt"}


# -- unattended runs: progress lines, info and status on unfinished outputs (16.15) ----------


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    import time

    from mtx._console import Progress

    monkeypatch.setenv("MTX_PROGRESS_INTERVAL", "0.05")
    p = Progress(True)
    with p:
        p.update({"event": "tick", "files_done": 3, "files_total": 12, "skipped": 0, "samples": 30,
                  "failed": 1, "by_modality": {"image": 2}, "elapsed": 1.0, "final": False})
        time.sleep(0.4)
    err = capsys.readouterr().err
    line = err.strip().splitlines()[0]
    assert line.startswith("mtx: progress: 3/12 files, 1 failed, 30 samples,") and "samples/s" in line
    assert "eta " in line and "eta ?" not in line
    monkeypatch.setenv("MTX_PROGRESS_INTERVAL", "0")  # documented: 0 turns them off
    with Progress(True) as p:
        p.update({"event": "tick", "files_done": 1, "files_total": 2, "samples": 1, "elapsed": 1.0})
        time.sleep(0.2)
    assert "progress" not in capsys.readouterr().err
    # A real run, logged to a file: the lines are there.
    monkeypatch.setenv("MTX_PROGRESS_INTERVAL", "0.01")
    d = _imgs(tmp_path / "in", 3)
    assert main(["embed", str(d), "-o", str(tmp_path / "o.h5"), "-m", "tiny", "-w", "seeded", "-j", "0"]) == 0
    assert "mtx: progress: " in capsys.readouterr().err


def _interrupted_run(tmp_path, monkeypatch) -> Path:
    from mtx.errors import Interrupted
    from mtx.pipeline.run import Run

    d = _imgs(tmp_path / "in", 3)
    out = tmp_path / "o.h5"

    def interrupted(self):
        raise Interrupted(15)

    with monkeypatch.context() as m:
        m.setattr(Run, "_consolidate", interrupted)
        assert main(["embed", str(d), "-o", str(out), *TINY, "-j", "0"]) == 143
    return out


def test_info_and_status_on_an_interrupted_and_a_running_output(tmp_path, monkeypatch, capsys):
    import fcntl
    import json

    out = _interrupted_run(tmp_path, monkeypatch)
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    assert "interrupted: 1 part(s) committed, 3 rows from 3 file(s), 0 failed; rerun the same command " \
           "to resume" in cap.err
    assert json.loads(cap.out)["state"] == "interrupted"
    assert main(["status", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["state"] == "interrupted" and s["run"]["rows_committed"] == 3 and not s["planned"]
    fd = os.open(tmp_path / "o.h5.lock", os.O_RDWR)  # a run holds the lock: in progress
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert main(["status", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "in progress"
    finally:
        os.close(fd)
    assert main(["embed", str(tmp_path / "in"), "-o", str(out), *TINY, "-j", "0"]) == 0  # resumes
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["state"] == "complete" and s["final_rows"] == 3 and s["run"] is None


def test_status_of_a_missing_output_is_an_error(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing.h5")]) == 1
    err = capsys.readouterr().err
    assert "no such output" in err and len(err.strip().splitlines()) == 1
