"""Peak RSS of `mtx embed` (main process + decoder processes) as the job grows.

    python benchmarks/memory.py [--sizes 1000 10000] [--model tiny] [--json-out F]

Runs `mtx embed` in a subprocess on N synthetic images for each N and samples the RSS of the
whole process tree every 0.1 s. The pipeline's memory must not grow with the number of inputs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tree_rss(p: psutil.Process) -> int:
    total = 0
    for q in [p, *p.children(recursive=True)]:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def peak_rss(cmd: list[str]) -> tuple[int, float, int]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.1)
    return peak, time.perf_counter() - t, proc.returncode


def main() -> None:
    from mtx._synth import GENERATORS

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--modality", default="image")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    res = {"model": a.model, "modality": a.modality, "workers": a.workers, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "in"
        d.mkdir()
        made = 0
        for n in sorted(a.sizes):
            gen = GENERATORS[a.modality]
            sub = d / f"batch{made:07d}"
            sub.mkdir()
            gen(sub, n - made)
            made = n
            out = Path(tmp) / f"o{n}.h5"
            cmd = [sys.executable, "-m", "mtx", "embed", str(d), "-o", str(out), "-m", a.model, "-w", "seeded",
                   "-q", "-j", str(a.workers)]
            peak, el, rc = peak_rss(cmd)
            res["runs"].append({"inputs": n, "peak_rss_mb": peak / 2**20, "seconds": el, "rc": rc})
            print(res["runs"][-1], flush=True)
    r = res["runs"]
    res["growth"] = r[-1]["peak_rss_mb"] / r[0]["peak_rss_mb"] - 1
    print(json.dumps(res, indent=1))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
