"""Export speed (rows/s) and ``similar`` latency on a large synthetic store (default 1M x 768).

Writes the store directly with h5py in the final-file schema (format version 1: /embeddings
chunked along rows, /id, /path, /modality enum, /n_tokens, /files, /failures, /modalities/<name>,
root attributes), in blocks, never holding it. Then, each in a fresh process so its peak RSS
is its own, it runs ``mtx.export`` to every format and ``mtx.similar`` by id (1 and 16 queries,
all rows and one modality), and prints rows/s, seconds and peak RSS. The store's vectors alone
are ``rows x dim x 4`` bytes; a peak RSS far below that shows the chunked reads.

Usage::

    python benchmarks/export_similar.py [--rows 1000000] [--dim 768] [--store-dtype float32]
                                        [--formats parquet,npy,safetensors,jsonl] [--jsonl-rows 100000]
                                        [--dir DIR] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODALITIES = ("audio", "image", "text")

CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import numpy, h5py, pyarrow, pyarrow.parquet  # noqa: F401 - imports are not the measured work
from mtx.export import export
from mtx.similar import similar
after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if args["op"] == "export":
    res = export(args["store"], args["out"], args["format"], modality=args.get("modality"),
                            overwrite=True)
else:
    res = similar(args["store"], args["queries"], k=args["k"], modality=args.get("modality"))
    res = {"n_queries": len(res), "top": [(q["results"][0]["id"], q["results"][0]["score"]) for q in res[:2]]}
el = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"seconds": el, "peak_rss_mb": peak / 1024, "imports_rss_mb": after_imports / 1024,
                             "res": res}))
"""


def write_store(path: Path, rows: int, dim: int, store_dtype: str, block: int = 65536) -> None:
    """A final-format mtx file with random unit-ish vectors and three modalities."""
    import h5py

    rng = np.random.default_rng(0)
    dt = np.float16 if store_dtype == "float16" else np.float32
    s = h5py.string_dtype("utf-8")
    enum = h5py.enum_dtype({m: i for i, m in enumerate(MODALITIES)}, basetype="u1")
    chunk_rows = max(1, (1 << 20) // (dim * 4))  # what store.consolidate uses
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        emb = f.create_dataset("embeddings", shape=(rows, dim), dtype=dt, chunks=(min(rows, chunk_rows), dim))
        ids = f.create_dataset("id", shape=(rows,), dtype=s)
        paths = f.create_dataset("path", shape=(rows,), dtype=s)
        mods = f.create_dataset("modality", shape=(rows,), dtype=enum)
        f.create_dataset("n_tokens", data=np.full(rows, 197, np.int32))
        for start in range(0, rows, block):
            n = min(block, rows - start)
            emb[start:start + n] = rng.standard_normal((n, dim), dtype=np.float32).astype(dt)
            names = [f"synthetic/{i // 1000:04d}/{i:08d}.dat" for i in range(start, start + n)]
            ids[start:start + n] = names
            paths[start:start + n] = ["/data/" + x for x in names]
            mods[start:start + n] = (np.arange(start, start + n) % len(MODALITIES)).astype(np.uint8)
        g = f.create_group("files")
        for k in ("path", "id", "modality", "content_hash", "status"):
            g.create_dataset(k, shape=(0,), dtype=s)
        for k in ("size", "mtime_ns", "n_samples"):
            g.create_dataset(k, shape=(0,), dtype=np.int64)
        fg = f.create_group("failures")
        for k in ("path", "modality", "stage", "message"):
            fg.create_dataset(k, shape=(0,), dtype=s)
        mg = f.create_group("modalities")
        for m in MODALITIES:
            a = mg.create_group(m).attrs
            a.update({"tokenizer": "Synthetic", "init": "seeded", "seed": 0, "sha256": "0" * 64, "pool": "mean",
                      "config_json": "{}"})
        f.attrs.update({"format": "mtx-embeddings", "format_version": 1, "mtx_version": "bench",
                        "preset": "meta-b16", "weights_source": "synthetic", "weights_sha256": "synthetic",
                        "compute_dtype": "float32", "device_kind": "cpu", "config_json": "{}",
                        "modality_configs_json": "{}", "config_sha256": "synthetic",
                        "created": "1970-01-01T00:00:00+00:00", "n_rows": rows, "n_failures": 0})
    os.replace(tmp, path)


def child(args: dict) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child failed: {out.stderr[-2000:]}")
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("RESULT ")][0][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--store-dtype", default="float32", choices=("float32", "float16"))
    ap.add_argument("--formats", default="parquet,npy,safetensors,jsonl")
    ap.add_argument("--jsonl-rows", type=int, default=100_000, help="jsonl is slow: export a store this big")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the store and exports")
    a = ap.parse_args()
    work = a.dir or Path(tempfile.mkdtemp(prefix="mtx-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"synthetic-{a.rows}x{a.dim}-{a.store_dtype}.h5"
    try:
        if not store.exists():
            t = time.perf_counter()
            write_store(store, a.rows, a.dim, a.store_dtype)
            print(f"wrote {store} ({store.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.1f} s")
        vec_mb = a.rows * a.dim * 4 / 2**20
        print(f"store: {a.rows:,} rows x {a.dim} {a.store_dtype}; vectors as float32 = {vec_mb:,.0f} MiB; "
              f"{os.cpu_count()} CPUs")
        print(f"{'operation':<40} {'seconds':>8} {'rows/s':>12} {'peak RSS MiB':>13} {'after imports':>14}")

        def row(name: str, r: dict, n: int | None) -> None:
            rate = f"{n / r['seconds']:,.0f}" if n else "-"
            print(f"{name:<40} {r['seconds']:>8.2f} {rate:>12} {r['peak_rss_mb']:>13.0f} {r['imports_rss_mb']:>14.0f}",
                  flush=True)

        for fmt in [x for x in a.formats.split(",") if x]:
            src, n = store, a.rows
            if fmt == "jsonl" and a.jsonl_rows < a.rows:
                src = work / f"synthetic-{a.jsonl_rows}x{a.dim}.h5"
                if not src.exists():
                    write_store(src, a.jsonl_rows, a.dim, a.store_dtype)
                n = a.jsonl_rows
            out = work / ("export-npy" if fmt == "npy" else f"export.{fmt}")
            r = child({"op": "export", "store": str(src), "out": str(out), "format": fmt})
            size = sum(p.stat().st_size for p in out.rglob("*")) if out.is_dir() else out.stat().st_size
            row(f"export {fmt} ({n:,} rows, {size / 2**30:.2f} GiB)", r, n)
            if not a.keep:
                shutil.rmtree(out) if out.is_dir() else out.unlink()
        ids = [f"synthetic/{i // 1000:04d}/{i:08d}.dat" for i in (7, a.rows // 2, a.rows - 1)]
        for name, args in (
            ("similar 1 id query, k=10", {"queries": ids[:1], "k": 10}),
            ("similar 1 id query, k=10, one modality", {"queries": ids[:1], "k": 10, "modality": "image"}),
            ("similar 16 id queries, k=10", {"queries": (ids * 6)[:16], "k": 10}),
            ("similar 1 id query, k=1000", {"queries": ids[:1], "k": 1000}),
        ):
            r = child({"op": "similar", "store": str(store), **args})
            assert r["res"]["top"][0][0] == args["queries"][0] and abs(r["res"]["top"][0][1] - 1) < 1e-3, r
            row(name, r, a.rows)
    finally:
        if not a.keep and a.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
