"""The Ray Data engine (needs the ``ray`` extra; skipped without it)."""
from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from mtx.cli import main  # noqa: E402


def _inputs(d, n):
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(d / f"f{i:03d}.png")
    return d


def _rows(path):
    with h5py.File(path, "r") as f:
        return dict(zip(f["id"].asstr()[()], f["embeddings"][()], strict=True))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_engine_equals_local_and_survives_a_killed_actor(local_ray, tmp_path):
    import psutil

    d = _inputs(tmp_path / "in", 24)
    ref_out = tmp_path / "local.h5"
    assert main(["embed", str(d), "-o", str(ref_out), "-m", "tiny", "-w", "seeded", "-j", "0", "-q"]) == 0
    ref = _rows(ref_out)
    out = tmp_path / "ray.h5"
    killed = []

    def killer():
        # Kill one actor process once the first shard has committed work.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list((tmp_path / "ray.h5.parts").glob("shard-*.json")):
                for p in psutil.process_iter(["cmdline"]):
                    if any("ShardEmbedder" in c for c in (p.info["cmdline"] or [])):
                        p.kill()
                        killed.append(p.pid)
                        break
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    rc = main(["embed", str(d), "-o", str(out), "-m", "tiny", "-w", "seeded", "-q", "--engine", "ray",
               "--workers", "2"])
    t.join(1)
    assert rc == 0
    rows = _rows(out)
    assert rows.keys() == ref.keys()  # every input exactly once
    with h5py.File(out, "r") as f:
        assert len(f["id"]) == len(set(f["id"].asstr()[()])) == 24
    for k in ref:
        np.testing.assert_allclose(rows[k], ref[k], atol=1e-5)
    assert killed, "no actor was killed: the test did not exercise recovery"
