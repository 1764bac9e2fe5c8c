"""Wall time of the same job as 1, 2 and 4 shard processes (+ merge), and Ray vs the local engine.

    python benchmarks/scale.py [--n 48] [--model tiny] [--json-out F]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mtx(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "mtx", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode


def main() -> None:
    from mtx._synth import GENERATORS

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    common = ["-m", a.model, "-w", "seeded", "-q"]
    res = {"n": a.n, "model": a.model, "shards": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "in"
        d.mkdir()
        GENERATORS["image"](d, a.n)
        for k in (1, 2, 4):
            out = Path(tmp) / f"s{k}.h5"
            t = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, "-m", "mtx", "embed", str(d), "-o", str(out), *common,
                                       "-j", "0", "--shard", f"{i}/{k}"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for i in range(k)]
            codes = [p.wait() for p in procs]
            merge_rc = mtx("merge", str(out))
            res["shards"][k] = {"wall_s": time.perf_counter() - t, "rc": codes, "merge_rc": merge_rc}
            print(k, res["shards"][k], flush=True)
        t = time.perf_counter()
        rc = mtx("embed", str(d), "-o", str(Path(tmp) / "local.h5"), *common)
        res["local_s"] = time.perf_counter() - t
        if importlib.util.find_spec("ray") is not None:
            t = time.perf_counter()
            rc = mtx("embed", str(d), "-o", str(Path(tmp) / "ray.h5"), *common, "--engine", "ray", "--workers", "2")
            res["ray_s"] = time.perf_counter() - t
            res["ray_rc"] = rc
            res["ray_overhead"] = res["ray_s"] / res["local_s"]
    print(json.dumps(res, indent=1))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
