"""Peak memory and time of consolidation (writing the final file from the parts).

Writes N rows of parts through the real Store API (fake vectors of a tiny dimension, parts of
``--part-rows`` rows), then runs ``Store.consolidate`` in a fresh process and prints that
process's peak RSS (VmHWM), its peak before consolidating (the store open), the time, and
bytes per row of the peak above that. Two layouts: ``table`` (one file record with N rows, like a big
Parquet/CSV) and ``files`` (N / ``--rows-per-file`` files). Usage::

    python benchmarks/consolidate_memory.py [--rows 250000 1000000] [--layout table files]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG = {"geometry": {"dim": 8}, "benchmark": "consolidate_memory"}

# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child would report its parent's peak.
CHILD = r"""
import json, sys, time
from mtx.store import Store
def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
cfg = json.loads(sys.argv[2])
with Store(sys.argv[1], cfg) as st:  # opening it loads the settings code (and torch, as a run has)
    base = hwm()
    t0 = time.perf_counter()
    info = st.consolidate({}, {})
    secs = time.perf_counter() - t0
import mtx.store
print(json.dumps({"mtx": mtx.store.__file__, "n_rows": info["n_rows"], "n_files": info["n_files"], "seconds": secs,
                  "rss_before_mb": base / 1024, "peak_rss_mb": hwm() / 1024}))
"""


def write_parts(output: Path, rows: int, layout: str, part_rows: int, rows_per_file: int) -> None:
    """N rows committed as parts, as a run would leave them before consolidation."""
    from mtx.store import FileRecord, PartBuffer, Rows, Store

    dim = CONFIG["geometry"]["dim"]
    rng = np.random.default_rng(0)
    with Store(output, CONFIG) as st:
        for start in range(0, rows, part_rows):
            n = min(part_rows, rows - start)
            idx = range(start, start + n)
            if layout == "table":
                paths = ["/data/tables/big.parquet"] * n
                ids = [f"big.parquet#row={i}" for i in idx]
            else:
                paths = [f"/data/files/dir{i // rows_per_file // 1000:04d}/file{i // rows_per_file:08d}.csv"
                         for i in idx]
                ids = [f"dir{i // rows_per_file // 1000:04d}/file{i // rows_per_file:08d}.csv#row={i % rows_per_file}"
                       for i in idx]
            buf = PartBuffer(rows=[Rows(ids=ids, paths=paths, modalities=["tabular"] * n,
                                        vectors=rng.standard_normal((n, dim), dtype=np.float32),
                                        n_tokens=np.full(n, 4, np.int32))])
            done = {p for p in paths if layout == "table" and start + n == rows} | (
                set() if layout == "table" else {p for i, p in zip(idx, paths, strict=True) if (i + 1) % rows_per_file == 0
                                                  or i + 1 == rows})
            buf.files = [FileRecord(p, p.rsplit("/", 1)[-1], "tabular", 1, 0, "0" * 16,
                                    rows if layout == "table" else rows_per_file, "ok") for p in sorted(done)]
            st.commit(buf)


def measure(rows: int, layout: str, part_rows: int, rows_per_file: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mtx-consolidate-") as d:
        out = Path(d) / "out.h5"
        t0 = time.perf_counter()
        write_parts(out, rows, layout, part_rows, rows_per_file)
        write_s = time.perf_counter() - t0
        import mtx  # the child runs the same mtx as this process (not one in its working directory)

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(mtx.__file__).resolve().parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(out), json.dumps(CONFIG)],
                              capture_output=True, text=True, check=True, cwd=d, env=env)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        assert res["n_rows"] == rows, res
        res.update(rows=rows, layout=layout, write_parts_s=write_s,
                   bytes_per_row=(res["peak_rss_mb"] - res["rss_before_mb"]) * 2**20 / rows)
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--layout", nargs="+", default=["table", "files"], choices=["table", "files"])
    ap.add_argument("--part-rows", type=int, default=1024)
    ap.add_argument("--rows-per-file", type=int, default=10)
    args = ap.parse_args()
    for layout in args.layout:
        for rows in args.rows:
            r = measure(rows, layout, args.part_rows, args.rows_per_file)
            print(json.dumps(r), flush=True)
            print(f"{layout:5s} {rows:>9,d} rows: peak {r['peak_rss_mb']:7.1f} MB "
                  f"(before {r['rss_before_mb']:.1f} MB), {r['bytes_per_row']:6.1f} B/row, "
                  f"consolidate {r['seconds']:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
