"""point_cloud at scale: clouds/s at B/16, FPS time, and a large LAS tile's time + peak RSS.

Usage:
    python benchmarks/point_cloud_scale.py [--las-points 10000000] [--batch 8] [--device cpu]

1. Throughput: 2,048-point clouds (PLY) -> load (CPU preprocessing) -> tokenizer -> seeded
   B/16 encoder, batch 8; loader, tokenizer and encoder timed separately, median of 3 batches.
2. FPS on 10^5 points -> 1024: the loader's numpy FPS and the batched torch FPS.
3. A LAS tile of --las-points points written with laspy in chunks, then embedded-side loaded
   (chunked reading + seeded subsample + FPS) in a fresh process: wall time and peak RSS
   (ru_maxrss) of that process, next to the RSS of a process that only imports the same code.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
from pathlib import Path
from mtx.modalities.point_cloud import point_cloud
import torch  # noqa: F401  (same imports as a worker)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
mod = point_cloud()
rss0 = status("VmRSS:")
t = time.perf_counter()
samples = list(mod.load(Path(sys.argv[1]), mod.config()))
dt = time.perf_counter() - t
meta = samples[0].meta
print(json.dumps({"seconds": dt, "rss_before_mb": rss0, "peak_rss_mb": status("VmHWM:"),
                  "points_in_file": meta.get("points_in_file"), "subsample": meta.get("subsample"),
                  "shape": list(samples[0].arrays["points"].shape)}))
"""


def write_ply(path: Path, xyz: np.ndarray) -> None:
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(xyz)}\n"
            "property float x\nproperty float y\nproperty float z\nend_header\n").encode()
    path.write_bytes(head + xyz.astype("<f4").tobytes())


def bench_throughput(batch: int, device: str, reps: int = 3) -> dict:
    import torch

    from mtx.encoder import load_model, pool
    from mtx.modalities.point_cloud import point_cloud

    mod = point_cloud()
    cfg = mod.config()
    model = load_model("meta-b16", weights="seeded", device=device)
    tok = mod.tokenizer(model.spec, None, cfg).requires_grad_(False).eval().to(model.device)
    rng = np.random.default_rng(0)
    t_load, t_tok, t_enc = [], [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(reps + 1):  # the first round warms up
            files = []
            for i in range(batch):
                u = rng.normal(size=(2048, 3))
                u /= np.linalg.norm(u, axis=1, keepdims=True)
                p = Path(d) / f"c{r}_{i}.ply"
                write_ply(p, u * (1 + 0.2 * np.sin(4 * u[:, :1])) + rng.normal(size=3))
                files.append(p)
            t0 = time.perf_counter()
            samples = [s for p in files for s in mod.load(p, cfg)]
            t1 = time.perf_counter()
            with torch.inference_mode():
                inputs = {k: v.to(model.device) for k, v in mod.collate(samples).items()}
                tokens = tok(inputs)
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                t2 = time.perf_counter()
                vec = pool(model.encode_tokens(tokens), tokens, "mean")
                if model.device.type == "cuda":
                    torch.cuda.synchronize()
                t3 = time.perf_counter()
            assert tokens.x.shape == (batch, 257, model.spec.dim) and vec.shape == (batch, model.spec.dim)
            if r:
                t_load.append(t1 - t0)
                t_tok.append(t2 - t1)
                t_enc.append(t3 - t2)
    load, tk, enc = (statistics.median(t) for t in (t_load, t_tok, t_enc))
    return {"device": device, "batch": batch, "points_per_cloud": 2048, "torch_threads": torch.get_num_threads(),
            "load_s_per_batch": round(load, 4), "tokenize_s_per_batch": round(tk, 4),
            "encode_s_per_batch": round(enc, 4),
            "clouds_per_s_tokenize_encode": round(batch / (tk + enc), 2),
            "clouds_per_s_load_1_process": round(batch / load, 1),
            "tokenizer_share_of_device_time": round(tk / (tk + enc), 3)}


def bench_fps(device: str, n: int = 100_000, k: int = 1024) -> dict:
    import torch

    from mtx.modalities import _points as P

    def timed(fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, round(time.perf_counter() - t, 3)

    x = np.random.default_rng(0).normal(size=(n, 3))
    a, t_np = timed(lambda: P.fps_numpy(x, k))
    xt = torch.from_numpy(x)[None].float().to(device)
    xb = xt.expand(8, -1, -1).contiguous()
    _, t_first = timed(lambda: P.farthest_point_sample(xt, k))  # on CUDA: includes the graph capture
    _, t_b1 = timed(lambda: P.farthest_point_sample(xt, k))
    P.farthest_point_sample(xb, k)
    b, t_b8 = timed(lambda: P.farthest_point_sample(xb, k))
    res = {"points": n, "samples": k, "device": device, "numpy_loader_s": t_np, "torch_b1_first_call_s": t_first,
           "torch_b1_s": t_b1, "torch_b8_s": t_b8, "torch_threads": torch.get_num_threads()}
    if device == "cpu":
        torch.set_num_threads(1)
        _, res["torch_b1_1thread_s"] = timed(lambda: P.farthest_point_sample(xt, k))
        torch.set_num_threads(res["torch_threads"])
    x64 = torch.from_numpy(x)[None].to(device)
    res["numpy_equals_torch_float64"] = bool(np.array_equal(a, P.farthest_point_sample(x64, k)[0].cpu().numpy()))
    assert bool((b[0] == b[7]).all())
    return res


def bench_parity(device: str) -> dict:
    """Tokens of the same clouds on CPU and on ``device`` (FPS/kNN/MLP on the device)."""
    import torch

    from mtx.modalities.point_cloud import point_cloud
    from mtx.weights import get_preset

    mod = point_cloud()
    tok = mod.tokenizer(get_preset("meta-b16"), None, mod.config()).eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(16, 1024, 3)).astype(np.float32))
    with torch.inference_mode():
        a = tok({"points": x})
        from mtx.modalities import _points as P

        ia = P.farthest_point_sample(x, 256)
        tok.to(device)
        b = tok({"points": x.to(device)})
        ib = P.farthest_point_sample(x.to(device), 256).cpu()
    cos = torch.nn.functional.cosine_similarity(a.x.flatten(1), b.x.cpu().flatten(1)).min().item()
    return {"device": device, "fps_indices_equal": bool(torch.equal(ia, ib)),
            "max_abs_token_diff": float((a.x - b.x.cpu()).abs().max()), "min_cosine": round(cos, 6)}


def write_las(path: Path, n: int, chunk: int = 2_000_000) -> float:
    import laspy

    hdr = laspy.LasHeader(point_format=0, version="1.2")
    hdr.scales = np.array([0.01, 0.01, 0.01])
    hdr.offsets = np.array([500000.0, 4100000.0, 0.0])
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    with laspy.open(str(path), mode="w", header=hdr) as w:
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            rec = laspy.ScaleAwarePointRecord.zeros(m, header=hdr)
            x = rng.uniform(0, 1000, m)
            y = rng.uniform(0, 1000, m)
            rec.x = 500000.0 + x
            rec.y = 4100000.0 + y
            rec.z = 20 * np.sin(x / 50) * np.cos(y / 70) + rng.normal(0, 0.2, m)
            w.write_points(rec)
    return time.perf_counter() - t


def bench_las(n: int, keep: bool) -> dict:
    d = Path(tempfile.mkdtemp(prefix="mtx_las_"))
    path = d / "tile.las"
    try:
        t_write = write_las(path, n)
        size = path.stat().st_size
        r = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                           cwd=ROOT, check=True)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        return {"points": n, "file_mb": round(size / 2**20, 1), "write_s": round(t_write, 1),
                "load_s": round(out["seconds"], 2), "points_per_s": round(n / out["seconds"]),
                "rss_before_load_mb": round(out["rss_before_mb"], 1),
                "peak_rss_mb": round(out["peak_rss_mb"], 1),
                "peak_minus_before_mb": round(out["peak_rss_mb"] - out["rss_before_mb"], 1),
                "subsample": out["subsample"], "output_shape": out["shape"]}
    finally:
        if not keep:
            path.unlink(missing_ok=True)
            d.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--las-points", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "fps", "las", "parity"])
    ap.add_argument("--keep", action="store_true", help="keep the generated LAS file")
    a = ap.parse_args()
    res = {}
    if "parity" not in a.skip and a.device != "cpu":
        res["parity"] = bench_parity(a.device)
        print("parity", json.dumps(res["parity"]), flush=True)
    if "fps" not in a.skip:
        res["fps"] = bench_fps(a.device)
        print("fps", json.dumps(res["fps"]), flush=True)
    if "throughput" not in a.skip:
        res["throughput"] = bench_throughput(a.batch, a.device)
        print("throughput", json.dumps(res["throughput"]), flush=True)
    if "las" not in a.skip:
        res["las"] = bench_las(a.las_points, a.keep)
        print("las", json.dumps(res["las"]), flush=True)


if __name__ == "__main__":
    main()
