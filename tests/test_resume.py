"""Resume and merge edge cases: ids, changed files, copies, retries, shards + plain runs."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded", "-j", "0", "-q"]


def _rows(path):
    with h5py.File(path, "r") as f:
        return dict(zip(f["id"].asstr()[()], f["embeddings"][()], strict=True))


def _text(p, s):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(s)
    return p


def test_same_relative_name_in_two_roots_keeps_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _text(tmp_path / "A" / "x.txt", "the first file")
    _text(tmp_path / "B" / "x.txt", "a different second file")
    assert main(["embed", "A", "B", "-o", "o.h5", *TINY]) == 0
    rows = _rows(tmp_path / "o.h5")
    assert sorted(rows) == ["A/x.txt", "B/x.txt"]
    assert not np.allclose(*rows.values())


def test_changed_file_with_fewer_samples_drops_its_old_rows(tmp_path):
    csv = _text(tmp_path / "in" / "t.csv", "a,b,c\n" + "".join(f"{i},{i * 2},x{i}\n" for i in range(4)))
    out = tmp_path / "o.h5"
    assert main(["embed", str(csv.parent), "-o", str(out), *TINY]) == 0
    assert len(_rows(out)) == 4
    _text(csv, "a,b,c\n1,2,x\n3,4,y\n")
    assert main(["embed", str(csv.parent), "-o", str(out), *TINY]) == 0
    assert sorted(_rows(out)) == ["t.csv#row=0", "t.csv#row=1"]


def test_copy_by_content_hash_uses_the_old_content(tmp_path):
    d = tmp_path / "in"
    a = _text(d / "a.txt", "original words of the first file")
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY]) == 0
    before = _rows(out)["a.txt"]
    shutil.copy(a, d / "z.txt")  # identical to a.txt's embedded content...
    _text(a, "entirely new words replace the old ones")  # ...while a.txt itself changes
    for i in range(6):
        _text(d / f"f{i}.txt", f"filler {i}")
    assert main(["embed", str(d), "-o", str(out), *TINY, "-b", "1", "--commit-every", "1"]) == 0
    rows = _rows(out)
    np.testing.assert_allclose(rows["z.txt"], before, atol=1e-6)
    assert not np.allclose(rows["a.txt"], before)


def test_failed_inputs_are_retried(tmp_path, capsys):
    d = tmp_path / "in"
    _text(d / "a.txt", "one")
    _text(d / "b.txt", "two")
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-j", "1", "-q",
                 "--timeout", "0.05"]) == 3
    assert main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-j", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_embedded"] == 2 and s["n_failed"] == 0
    with h5py.File(out, "r") as f:
        assert len(f["failures/path"]) == 0 and sorted(f["id"].asstr()[()]) == ["a.txt", "b.txt"]


def test_devices_rerun_keeps_earlier_rows(tmp_path):
    d = tmp_path / "in"
    for i in range(3):
        _text(d / f"t{i}.txt", f"text number {i}")
    out = tmp_path / "o.h5"
    args = ["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-q", "--devices", "cpu,cpu"]
    assert main(args) == 0
    _text(d / "new.txt", "one more")
    assert main(args) == 0
    assert sorted(_rows(out)) == ["new.txt", "t0.txt", "t1.txt", "t2.txt"]


def test_plain_run_refused_while_shards_are_planned(tmp_path, capsys):
    d = tmp_path / "in"
    for i in range(4):
        _text(d / f"t{i}.txt", f"text {i}")
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY, "--shard", "0/2"]) == 0
    assert main(["embed", str(d), "-o", str(out), *TINY]) == 1
    assert "being written in shards" in capsys.readouterr().err
    assert main(["embed", str(d), "-o", str(out), *TINY, "--shard", "1/2"]) == 0
    assert main(["merge", str(out)]) == 0
    assert len(_rows(out)) == 4


def test_missing_weights_file_is_a_clear_error(tmp_path, capsys):
    _text(tmp_path / "a.txt", "x")
    assert main(["embed", str(tmp_path / "a.txt"), "-o", str(tmp_path / "o.h5"), "-w",
                 str(tmp_path / "nope.pth")]) == 2  # a usage error, answered before anything starts
    err = capsys.readouterr().err
    assert "no such weights file" in err and "internal error" not in err
    assert not (tmp_path / "o.h5").exists()


def test_config_refusal_names_what_differs(tmp_path, capsys):
    _text(tmp_path / "in" / "a.txt", "x")
    out = tmp_path / "o.h5"
    assert main(["embed", str(tmp_path / "in"), "-o", str(out), *TINY]) == 0
    assert main(["embed", str(tmp_path / "in"), "-o", str(out), *TINY, "--pool", "max"]) == 1
    assert 'pool: unset -> "max"' in capsys.readouterr().err
