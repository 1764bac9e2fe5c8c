"""Shards as separate processes + merge == one run; merge verification; several devices."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded", "-j", "0", "-q"]


def _inputs(d, n=10):
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(d / f"f{i:02d}.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    return d


def _rows(path):
    with h5py.File(path, "r") as f:
        return dict(zip(f["id"].asstr()[()], f["embeddings"][()], strict=True)), len(f["failures/path"])


@pytest.fixture()
def single(tmp_path):
    d = _inputs(tmp_path / "in")
    out = tmp_path / "single.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY]) == 3
    return d, _rows(out)


def test_four_shard_processes_then_merge_equal_single_run(single, tmp_path):
    d, (ref, ref_fail) = single
    out = tmp_path / "sharded.h5"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "mtx", "embed", str(d), "-o", str(out), *TINY,
                               "--shard", f"{i}/4"], env=env, cwd=tmp_path) for i in range(4)]
    codes = [p.wait(timeout=300) for p in procs]
    assert sorted(codes) == [0, 0, 0, 3]  # the broken file fails in exactly one shard
    assert main(["status", str(out), "--json"]) == 0
    assert main(["merge", str(out)]) == 0
    rows, n_fail = _rows(out)
    assert rows.keys() == ref.keys() and n_fail == ref_fail == 1
    for k in ref:
        np.testing.assert_allclose(rows[k], ref[k], atol=1e-5)
    with h5py.File(out, "r") as f:
        assert f["embeddings"].is_virtual and f.attrs["merge_mode"] == "virtual"
    before = out.stat().st_mtime_ns
    assert main(["merge", str(out)]) == 0  # idempotent
    assert out.stat().st_mtime_ns == before
    assert main(["merge", str(out), "--copy"]) == 0
    rows2, _ = _rows(out)
    with h5py.File(out, "r") as f:
        assert not f["embeddings"].is_virtual
    for k in ref:
        np.testing.assert_array_equal(rows2[k], rows[k])
    assert not (tmp_path / "sharded.h5.parts").exists()


def test_merge_refuses_missing_or_corrupt_parts(tmp_path, capsys):
    d = _inputs(tmp_path / "in", 4)
    out = tmp_path / "o.h5"
    assert main(["embed", str(d), "-o", str(out), *TINY, "--shard", "0/2"]) == 3  # has broken.png
    assert main(["merge", str(out)]) == 1
    assert "shard(s) 1 of 2 have not finished" in capsys.readouterr().err
    assert main(["embed", str(d), "-o", str(out), *TINY, "--shard", "1/2"]) == 0
    part = sorted((tmp_path / "o.h5.parts").glob("part-*.h5"))[0]
    with h5py.File(part, "r+") as f:
        f["embeddings"][0, 0] += 1.0
    assert main(["merge", str(out)]) == 1
    assert "sha256" in capsys.readouterr().err
    assert not out.exists()


def test_slurm_variables_pick_the_shard(tmp_path, monkeypatch, capsys):
    d = _inputs(tmp_path / "in", 4)
    out = tmp_path / "o.h5"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    main(["embed", str(d), "-o", str(out), *TINY])
    assert (tmp_path / "o.h5.parts" / "shard-0001-of-0002.json").exists()
    plan = json.loads((tmp_path / "o.h5.parts" / "plan.json").read_text())
    assert plan["n_shards"] == 2 and len(plan["items"]) == 5


def test_devices_cpu_cpu_equals_single(single, tmp_path):
    d, (ref, _) = single
    out = tmp_path / "dev.h5"
    assert main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-q", "--devices", "cpu,cpu"]) == 3
    rows, n_fail = _rows(out)
    assert rows.keys() == ref.keys() and n_fail == 1
    for k in ref:
        np.testing.assert_allclose(rows[k], ref[k], atol=1e-5)
