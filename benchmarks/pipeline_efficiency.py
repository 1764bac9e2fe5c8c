"""End-to-end `mtx embed` throughput vs the bare encoder (and a naive loop) on the same inputs.

    python benchmarks/pipeline_efficiency.py --modality image --n 200 [--model meta-b16]

Measured side by side in one process: (1) the bare tokenizer+encoder on pre-decoded, pre-collated
batches, (2) `mtx embed` end to end (discover, sniff, decode in workers, batch, encode, write
HDF5), (3) the naive per-file loop a user writes from the paper's demo (decode, tokenize, encode
a batch of 1). Prints a table and writes JSON (--json-out). Ratios, not absolute times, are the
result: the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gen import GENERATORS  # noqa: E402


def bare_encoder(model, modality: str, samples, batch_size: int) -> float:
    """Seconds for tokenize + encode + pool of pre-decoded samples, batch by batch."""
    import torch

    from mtx.modalities import get_modality
    from mtx.pipeline import Embedder, EmbedOptions

    emb = Embedder(model, EmbedOptions(batch_size=batch_size))
    mod = get_modality(modality)
    groups: dict = {}
    for s in samples:
        groups.setdefault(mod.batch_key(s), []).append(s)
    batches = [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    emb.embed(modality, batches[0][:2])  # warm-up: build the tokenizer, first-call overheads
    t = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            emb.embed(modality, b)
    return time.perf_counter() - t


def naive_loop(model, modality: str, files) -> float:
    import torch

    from mtx.encoder import pool
    from mtx.modalities import get_modality

    mod = get_modality(modality)
    cfg = mod.config()
    tok = model.tokenizer(modality, cfg)
    t = time.perf_counter()
    with torch.inference_mode():
        for f in files:
            for s in mod.load(f, cfg):
                tokens = tok(mod.collate([s]))
                pool(model.encode_tokens(tokens), tokens, "mean")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", default="image")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--model", default="meta-b16")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--naive", type=int, default=0, help="files for the naive loop (0 = skip)")
    ap.add_argument("--naive-dtype", default="float32",
                    help="dtype of the naive loop (the paper's demo runs float32)")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()

    import torch

    from mtx.encoder import load_model
    from mtx.modalities import get_modality
    from mtx.pipeline import EmbedOptions, discover, run_embed, start_workers

    model = load_model(a.model, "seeded", "cpu", a.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "in"
        d.mkdir()
        files = GENERATORS[a.modality](d, a.n)
        mod = get_modality(a.modality)
        cfg = mod.config()
        items, _ = discover([str(d)])
        opts = EmbedOptions(model=a.model, batch_size=a.batch_size, workers=a.workers, dtype=a.dtype)
        # As `mtx embed` does, the decoder processes start before the model work (the CLI
        # overlaps their start-up with loading the weights); they are not timed twice.
        pool = start_workers(opts, len(items))
        if pool is not None:
            pool.wait_ready()  # steady state: decoder start-up is overlapped with model loading in the CLI
        samples = [s for f in files for s in mod.load(f, cfg)]
        n_samples = len(samples)
        t_bare = bare_encoder(model, a.modality, samples, a.batch_size)
        del samples
        t = time.perf_counter()
        summary = run_embed(items, Path(tmp) / "o.h5", opts, model, pool=pool)
        t_e2e = time.perf_counter() - t
        assert summary["n_failed"] == 0, summary["failures"][:3]
        res = {"modality": a.modality, "model": a.model, "dtype": a.dtype, "n_files": len(files),
               "n_samples": n_samples, "batch_size": a.batch_size, "threads": torch.get_num_threads(),
               "workers": opts.workers, "cpus": os.cpu_count(),
               "bare_samples_per_s": n_samples / t_bare, "e2e_samples_per_s": n_samples / t_e2e,
               "efficiency": t_bare / t_e2e}
        if a.naive:
            naive_model = model if a.naive_dtype == a.dtype else load_model(a.model, "seeded", "cpu", a.naive_dtype)
            t_naive = naive_loop(naive_model, a.modality, files[: a.naive])
            res["naive_dtype"] = a.naive_dtype
            res["naive_samples_per_s"] = a.naive / t_naive
            res["speedup_vs_naive"] = res["e2e_samples_per_s"] / res["naive_samples_per_s"]
    for k, v in res.items():
        print(f"{k:>22}  {v:.3f}" if isinstance(v, float) else f"{k:>22}  {v}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
