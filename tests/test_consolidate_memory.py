"""Consolidation (writing the final file) holds no Python objects per row: its memory is
O(files + chunk). Issue 17: 1M rows of one table took 1.76 GiB in the main process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"geometry": {"dim": 4}, "test": "consolidate_memory"}
ROWS = 200_000

CHILD = r"""
import json, sys
from mtx.store import Store
def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
with Store(sys.argv[1], json.loads(sys.argv[2])) as st:
    base = hwm()
    info = st.consolidate({}, {})
print(json.dumps({"n_rows": info["n_rows"], "grew": hwm() - base}))
"""


def _parts(output: Path, rows: int, per_part: int = 50_000) -> None:
    """``rows`` rows of one big table committed as a few parts (as a run leaves them)."""
    from mtx.store import FileRecord, PartBuffer, Rows, Store

    rng = np.random.default_rng(0)
    with Store(output, CONFIG) as st:
        for a in range(0, rows, per_part):
            n = min(per_part, rows - a)
            buf = PartBuffer(rows=[Rows(ids=[f"tables/big.parquet#row={i}" for i in range(a, a + n)],
                                        paths=["/data/tables/big.parquet"] * n, modalities=["tabular"] * n,
                                        vectors=rng.standard_normal((n, 4), dtype=np.float32),
                                        n_tokens=np.full(n, 3, np.int32))])
            if a + n == rows:
                buf.files = [FileRecord("/data/tables/big.parquet", "tables/big.parquet", "tabular", 1, 0, "h",
                                        rows, "ok")]
            st.commit(buf)


def test_consolidation_memory_does_not_grow_with_rows(tmp_path):
    out = tmp_path / "o.h5"
    _parts(out, ROWS)
    # The child runs this checkout's mtx, from a neutral working directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), json.dumps(CONFIG)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["n_rows"] == ROWS
    # ~40 MB (numpy arrays of ~100 B/row and fixed buffers); Python objects per row took
    # ~750 B/row (150 MB here).
    print(f"grew {res['grew'] / 2**20:.1f} MB")
    assert res["grew"] < 90 * 2**20, f"consolidating {ROWS} rows grew the process by {res['grew'] / 2**20:.0f} MB"
    import h5py

    with h5py.File(out, "r") as f:
        assert f["id"][0].decode() == "tables/big.parquet#row=0"
        assert f["id"][ROWS - 1].decode() == f"tables/big.parquet#row={ROWS - 1}"
        assert len(f["path"]) == ROWS and f.attrs["n_rows"] == ROWS
