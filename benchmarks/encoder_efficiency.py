"""Encoder efficiency and precision on this machine, measured side by side in one process.

    python benchmarks/encoder_efficiency.py [--model meta-b16] [--batch 16] [--json-out F]

- ceiling: dense matmul FLOP/s at the same dtype and thread count (a [B*N, D] x [D, 4D] product,
  the encoder's dominant shape, as a plain matmul and through F.linear, and a square 2048^3
  product; the highest is the ceiling);
- encoder: the B/16 block stack on [B, 197, D] tokens, FLOP/s from the analytic count
  (24 N D^2 + 4 N^2 D per block and sample);
- precision: bfloat16 vs float32 images/s and the cosine of the pooled vectors.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def flops_per_sample(n: int, d: int, depth: int) -> float:
    return depth * (24 * n * d * d + 4 * n * n * d)


def bench(fn, min_time: float = 3.0) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el > min_time and n >= 3:
            return el / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-b16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=197)
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd encoder (mtx embed --compile)")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    from mtx.encoder import cpu_has_fast_bf16, load_model, pool
    from mtx.modalities._base import Tokens

    res = {"threads": torch.get_num_threads(), "fast_bf16_cpu": cpu_has_fast_bf16(), "model": a.model,
           "batch": a.batch, "tokens": a.tokens}
    x = torch.randn(a.batch, a.tokens, 768 if "b16" in a.model else 1024)
    vecs = {}
    for dtype, tdt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        m = load_model(a.model, "seeded", "cpu", dtype)
        d, depth = m.spec.dim, m.spec.depth
        xx = x[..., :d]
        tok = Tokens(xx)
        with torch.inference_mode():
            lhs = torch.randn(a.batch * a.tokens, d, dtype=tdt)
            rhs = torch.randn(d, 4 * d, dtype=tdt)
            w = torch.randn(4 * d, d, dtype=tdt)
            sq = torch.randn(2048, 2048, dtype=tdt)
            t_mm = bench(lambda: lhs @ rhs)
            # nn.Linear's kernel path (oneDNN for bf16 on CPU), which the encoder itself uses.
            t_lin = bench(lambda: torch.nn.functional.linear(lhs, w))
            t_sq = bench(lambda: sq @ sq)
            ceiling = max(2 * lhs.shape[0] * d * 4 * d / min(t_mm, t_lin), 2 * 2048 ** 3 / t_sq)
            t_enc = bench(lambda: m.encode_tokens(tok))
        achieved = a.batch * flops_per_sample(a.tokens, d, depth) / t_enc
        res[dtype] = {"matmul_gflops": ceiling / 1e9, "encoder_gflops": achieved / 1e9,
                      "efficiency": achieved / ceiling, "samples_per_s": a.batch / t_enc}
        vecs[dtype] = pool(m.encode_tokens(tok), tok, "mean")
        if a.compile:
            eager = m.encode_tokens(tok)
            m.compile()
            t = time.perf_counter()
            compiled = m.encode_tokens(tok)  # the first call compiles
            res[dtype]["compile_s"] = time.perf_counter() - t
            with torch.inference_mode():
                t_comp = bench(lambda: m.encode_tokens(tok))
            res[dtype]["compiled_samples_per_s"] = a.batch / t_comp
            res[dtype]["compiled_speedup"] = t_enc / t_comp
            res[dtype]["compiled_max_abs_diff"] = float((compiled - eager).abs().max())
        print(dtype, res[dtype], flush=True)
    res["bf16_speedup"] = res["bfloat16"]["samples_per_s"] / res["float32"]["samples_per_s"]
    res["bf16_min_cosine"] = float(torch.nn.functional.cosine_similarity(vecs["float32"], vecs["bfloat16"]).min())
    print(json.dumps(res, indent=1))
    if a.json_out:
        open(a.json_out, "w").write(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
