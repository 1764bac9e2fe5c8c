"""One-shot CUDA check: correctness vs CPU and bf16 throughput (run on an H100/H200).

    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR [--n 4000]

1. For every modality whose decoder is installed: vectors on CUDA (fp32, bf16) vs CPU fp32,
   same seeded B/16 weights, cosine per sample (must be >= 0.999).
2. Ceiling: a dense bf16 matmul's TFLOP/s; the B/16 encoder's images/s and achieved TFLOP/s.
3. End to end: `mtx embed` (workers decoding JPEGs on the CPU cores, bf16) on N synthetic 256 px
   images vs the bare tokenizer+encoder on the same decoded batches.
Writes DIR/gpu_check.json and prints a summary.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtx._synth import GENERATORS  # noqa: E402
from mtx.encoder import load_model  # noqa: E402
from mtx.modalities import get_modality  # noqa: E402
from mtx.modalities._base import Tokens  # noqa: E402
from mtx.pipeline import Embedder, EmbedOptions, discover, run_embed  # noqa: E402

NEEDS = {"video": "av", "audio": "soxr", "text": "open_clip", "xray": "PIL"}


def encoder_flops(n_tokens: int, dim: int, depth: int) -> float:
    """Multiply-adds x2 of one B/16 forward: 24 N D^2 + 4 N^2 D per block."""
    return depth * (24 * n_tokens * dim * dim + 4 * n_tokens * n_tokens * dim)


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def cuda_time(fn, iters: int) -> float:
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1000 / iters


def correctness(dev: str) -> dict:
    out = {}
    cpu = load_model("meta-b16", "seeded", "cpu", "float32")
    g32 = load_model("meta-b16", "seeded", dev, "float32")
    g16 = load_model("meta-b16", "seeded", dev, "bfloat16")
    with tempfile.TemporaryDirectory() as t:
        for name, gen in GENERATORS.items():
            mod_name = NEEDS.get(name)
            if mod_name and importlib.util.find_spec(mod_name) is None:
                out[name] = {"skipped": f"{mod_name} not installed"}
                continue
            d = Path(t) / name
            d.mkdir()
            try:
                files = gen(d, 3)
                mod = get_modality(name)
                samples = [s for f in files for s in mod.load(f, mod.config())][:3]
                res = {}
                vc = Embedder(cpu, EmbedOptions()).embed(name, samples)[0]
                for tag, m in (("fp32", g32), ("bf16", g16)):
                    vg = Embedder(m, EmbedOptions()).embed(name, samples)[0]
                    cos = (vc * vg).sum(1) / np.linalg.norm(vc, axis=1) / np.linalg.norm(vg, axis=1)
                    res[f"min_cosine_{tag}"] = float(cos.min())
                res["ok"] = res["min_cosine_fp32"] >= 0.999 and res["min_cosine_bf16"] >= 0.99
                out[name] = res
            except Exception as e:  # noqa: BLE001 - report and go on
                out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            print(name, out[name], flush=True)
    return out


def throughput(dev: str) -> dict:
    res = {}
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    t = cuda_time(lambda: a @ a, 10)
    res["matmul_bf16_tflops"] = 2 * 8192 ** 3 / t / 1e12
    for dtype in ("bfloat16", "float32"):
        m = load_model("meta-b16", "seeded", dev, dtype)
        for bs in (64, 256, 512):
            x = torch.randn(bs, 197, 768, device=dev)
            tok = Tokens(x)
            t = cuda_time(lambda: m.encode_tokens(tok), 10)
            res[f"encoder_{dtype}_bs{bs}_img_per_s"] = bs / t
            res[f"encoder_{dtype}_bs{bs}_tflops"] = bs * encoder_flops(197, 768, 12) / t / 1e12
        del m
    res["encoder_mfu_bf16"] = res["encoder_bfloat16_bs512_tflops"] / res["matmul_bf16_tflops"]
    print(res, flush=True)
    return res


def _gen_chunk(args):
    d, start, n = args
    from PIL import Image

    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(base).resize((256, 256), Image.BILINEAR).save(Path(d) / f"img{i:06d}.jpg", quality=90)


def end_to_end(dev: str, n: int, batch: int) -> dict:
    from mtx.pipeline import default_workers, start_workers

    res = {}
    with tempfile.TemporaryDirectory() as t:
        d = Path(t) / "in"
        d.mkdir()
        cpus = os.cpu_count() or 1
        with ProcessPoolExecutor(cpus) as ex:
            list(ex.map(_gen_chunk, [(str(d), i, min(250, n - i)) for i in range(0, n, 250)]))
        items, _ = discover([str(d)])
        workers = default_workers(gpu=True)  # what `mtx embed` picks on a GPU machine
        opts = EmbedOptions(model="meta-b16", batch_size=batch, workers=workers, dtype="bfloat16",
                            part_rows=8192)
        t0 = time.perf_counter()
        pool = start_workers(opts, len(items))  # as the CLI does: decoders start while the model loads
        m = load_model("meta-b16", "seeded", dev, "bfloat16")
        marks = {}

        def progress(ev):
            if ev.get("event") == "tick":
                for frac in (0.2, 1.0):
                    if frac not in marks and ev["samples"] >= frac * n:
                        marks[frac] = (time.perf_counter(), ev["samples"], resource.getrusage(resource.RUSAGE_THREAD))

        s = run_embed(items, Path(t) / "o.h5", opts, m, progress=progress, pool=pool)
        el = time.perf_counter() - t0
        steady = None
        if 0.2 in marks and 1.0 in marks and marks[1.0][0] > marks[0.2][0]:
            k = marks[1.0][1] - marks[0.2][1]
            steady = k / (marks[1.0][0] - marks[0.2][0])
            a, b = marks[0.2][2], marks[1.0][2]
            # The main thread's CPU per sample in the steady state: what one process can feed.
            res["main_thread_us_per_sample"] = ((b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)) / k * 1e6
        res.update(n=n, workers=workers, batch=batch, e2e_img_per_s=s["n_samples"] / el, e2e_elapsed_s=el,
                   steady_img_per_s=steady, failed=s["n_failed"])
        # Bare tokenizer+encoder on the same decoded batches (decoded up front, not timed).
        mod = get_modality("image")
        cfg = mod.config()
        files = sorted(d.iterdir())[: min(n, 8 * batch)]
        samples = [next(mod.load(f, cfg)) for f in files]
        emb = Embedder(m, opts)
        emb.embed("image", samples[:batch])
        _sync(dev)
        t0 = time.perf_counter()
        for i in range(0, len(samples), batch):
            emb.embed("image", samples[i:i + batch])
        _sync(dev)
        res["bare_img_per_s"] = len(samples) / (time.perf_counter() - t0)
        res["efficiency"] = res["e2e_img_per_s"] / res["bare_img_per_s"]
        if steady:
            res["steady_efficiency"] = steady / res["bare_img_per_s"]
        # Decode ceiling: one core decoding + resizing these JPEGs, times the workers.
        t0 = time.perf_counter()
        for f in files[:200]:
            next(mod.load(f, cfg))
        res["decode_img_per_s_one_core"] = 200 / (time.perf_counter() - t0)
    print(res, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--skip", default="")
    a = ap.parse_args()
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
              "cpus": os.cpu_count()}
    print(report, flush=True)
    for part, fn in (("correctness", lambda: correctness(a.device)), ("throughput", lambda: throughput(a.device)),
                     ("end_to_end", lambda: end_to_end(a.device, a.n, a.batch))):
        if part in a.skip.split(","):
            continue
        t = time.perf_counter()
        try:
            report[part] = fn()
        except Exception as e:  # noqa: BLE001
            report[part] = {"error": f"{type(e).__name__}: {e}"[:500]}
        report[f"{part}_s"] = time.perf_counter() - t
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
