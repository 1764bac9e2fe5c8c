"""What one main process can feed a fast GPU: its CPU per sample with the encoder stubbed out.

    python benchmarks/host_overhead.py [--modality image] [--n 3000] [--workers 1]

On a GPU machine the encoder is fast, so the ceiling of `mtx embed` is set by the decoder
processes and by the one main process that receives their chunks, batches and collates, keeps
the books and hands rows to the writer. This runs the real pipeline (spawned decoders, ring
transport, collate, HDF5 writer) with `Embedder.embed` replaced by a stub returning zeros, and
measures the main thread's CPU time per sample in the steady state (from 20 % to 80 % of the
samples, getrusage(RUSAGE_THREAD) at progress ticks). ``ceiling`` = 1e6 / that; compare it with
the bare encoder's rate on the GPU. The decoders' CPU per sample says how many cores keep up.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _gen import GENERATORS  # noqa: E402


def measure(files_dir: Path, n_expected: int, workers: int, batch_size: int, out: Path) -> dict:
    from mtx import pipeline as P
    from mtx.encoder import load_model

    def stub(self, modality, samples, inputs=None):  # noqa: ARG001 - the encoder, instantly
        n = len(samples)
        return np.zeros((n, self.model.spec.dim), np.float32), np.zeros(n, np.int32), None

    P.Embedder.embed = stub
    items, _ = P.discover([str(files_dir)])
    opts = P.EmbedOptions(model="tiny", batch_size=batch_size, workers=workers, dtype="float32",
                          part_rows=8192, overwrite=True)
    pool = P.start_workers(opts, len(items))
    model = load_model("tiny", "seeded", "cpu", "float32")
    if pool is not None:
        pool.wait_ready()
    marks: dict[float, tuple] = {}

    def progress(ev):
        if ev.get("event") != "tick":
            return
        for frac in (0.2, 0.8):
            if frac not in marks and ev["samples"] >= frac * n_expected:
                marks[frac] = (ev["samples"], resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter())

    t = time.perf_counter()
    s = P.run_embed(items, out, opts, model, progress=progress, pool=pool)
    el = time.perf_counter() - t
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    (s0, a, ta), (s1, b, tb) = marks[0.2], marks[0.8]
    k = s1 - s0
    user = (b.ru_utime - a.ru_utime) / k * 1e6
    sys_ = (b.ru_stime - a.ru_stime) / k * 1e6
    decode = (kids.ru_utime + kids.ru_stime) / s["n_samples"] * 1e6
    return {"n_samples": s["n_samples"], "failed": s["n_failed"], "workers": workers, "batch_size": batch_size,
            "e2e_samples_per_s": s["n_samples"] / el, "steady_samples_per_s": k / (tb - ta),
            "main_user_us_per_sample": user, "main_sys_us_per_sample": sys_,
            "main_us_per_sample": user + sys_, "main_ceiling_samples_per_s": 1e6 / max(user + sys_, 1e-9),
            "decoder_us_per_sample": decode, "decoder_samples_per_s_per_core": 1e6 / max(decode, 1e-9)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", default="image")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "in"
        d.mkdir()
        files = GENERATORS[a.modality](d, a.n)
        from mtx.modalities import get_modality

        mod = get_modality(a.modality)
        cfg = mod.config()
        n_samples = sum(1 for f in files[:50] for _ in mod.load(f, cfg)) * len(files) // min(50, len(files))
        res = {"modality": a.modality, "n_files": len(files), "cpus": os.cpu_count(),
               **measure(d, n_samples, a.workers, a.batch_size, Path(tmp) / "o.h5")}
    for k, v in res.items():
        print(f"{k:>32}  {v:.1f}" if isinstance(v, float) else f"{k:>32}  {v}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
