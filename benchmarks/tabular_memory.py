"""Rows/s and peak memory of the tabular loader on a large CSV (default: 1M rows, 8 columns).

Writes the CSV in blocks (never holding it), then runs ``tabular.load`` in a fresh process per
size and prints rows/s and that process's peak RSS next to its RSS after the imports. Two sizes
(``--rows`` and ``--rows x --scale``) show that peak memory does not grow with the file: the
loader streams chunks of ``chunk_rows`` rows. ``--collate B`` also collates every B rows as the
pipeline does (the batch tensors are then dropped). Usage::

    python benchmarks/tabular_memory.py [--rows 1000000] [--scale 4] [--collate 256] [--keep]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from mtx.modalities import get_modality
mod = get_modality("tabular")
cfg = mod.config()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
batch, rows, size = [], 0, int(sys.argv[2])
for s in mod.load(Path(sys.argv[1]), cfg):
    rows += 1
    if size:
        batch.append(s)
        if len(batch) == size:
            mod.collate(batch)
            batch = []
secs = time.perf_counter() - t0
print(json.dumps({"rows": rows, "seconds": secs, "rows_per_s": rows / secs,
                  "rss_after_imports_mb": base / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_csv(path: Path, rows: int) -> None:
    """5 numeric columns (one with 2 % missing), 2 categorical (one high-cardinality), 1 int."""
    import numpy as np

    rng = np.random.default_rng(0)
    colours = np.array(["red", "green", "blue", "cyan", "magenta", "yellow"])
    with open(path, "w", encoding="utf-8") as f:
        f.write("age,income,score,height,weight,colour,city,count\n")
        block = 100_000
        done = 0
        while done < rows:
            n = min(block, rows - done)
            a = rng.integers(18, 90, n)
            inc = np.round(rng.lognormal(10, 1, n), 2).astype(str)
            inc[rng.random(n) < 0.02] = ""
            sc = np.round(rng.standard_normal(n), 4)
            h = np.round(rng.normal(170, 10, n), 1)
            w = np.round(rng.normal(70, 12, n), 1)
            col = colours[rng.integers(0, len(colours), n)]
            city = np.char.add("city", rng.integers(0, 5000, n).astype(str))
            cnt = rng.poisson(3, n)
            lines = [f"{a[i]},{inc[i]},{sc[i]},{h[i]},{w[i]},{col[i]},{city[i]},{cnt[i]}" for i in range(n)]
            f.write("\n".join(lines) + "\n")
            done += n


def run(path: Path, collate: int, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(collate)], cwd=root, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--scale", type=int, default=4, help="also run a file this many times larger (1 = skip)")
    ap.add_argument("--collate", type=int, default=0, help="collate every N rows (0 = load only)")
    ap.add_argument("--keep", action="store_true", help="keep the generated CSVs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mtx-tabular-mem-"))
    root = Path(__file__).resolve().parents[1]
    sizes = [args.rows] + ([args.rows * args.scale] if args.scale > 1 else [])
    for rows in sizes:
        csv = tmp / f"rows{rows}.csv"
        t0 = time.perf_counter()
        write_csv(csv, rows)
        mb = csv.stat().st_size / 2**20
        print(f"wrote {csv} ({mb:.0f} MiB, {rows:,} rows x 8 columns) in {time.perf_counter() - t0:.0f} s")
        r = run(csv, args.collate, root)
        what = f"load + collate({args.collate})" if args.collate else "load"
        print(f"{rows:>11,} rows, {what}: {r['rows_per_s']:,.0f} rows/s ({r['seconds']:.1f} s); peak RSS "
              f"{r['peak_rss_mb']:.0f} MiB (after imports {r['rss_after_imports_mb']:.0f} MiB; file {mb:.0f} MiB)")
        if not args.keep:
            csv.unlink()
    if not args.keep:
        tmp.rmdir()


if __name__ == "__main__":
    main()
