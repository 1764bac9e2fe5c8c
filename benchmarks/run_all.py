"""Run the CPU benchmarks of this machine and write benchmarks/RESULTS.json (+ a table on stdout).

    python benchmarks/run_all.py [--quick]

Each part runs in its own process (clean RSS, no warm caches from the previous part). Ratios
measured side by side are the result; absolute rates depend on the (shared, noisy) machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Inputs per modality for the B/16 pipeline-efficiency runs (sized to ~30-60 s each on 2 cores).
SIZES = {"image": 200, "infrared": 48, "xray": 48, "video": 6, "audio": 12, "point_cloud": 48,
         "hyperspectral": 120, "tabular": 1024, "graph": 80, "time_series": 200, "imu": 40, "text": 2000}


def run(script: str, *args: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, str(HERE / script), *args, "--json-out", f.name]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        return json.loads(Path(f.name).read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a quarter of the inputs")
    ap.add_argument("--modalities", default="", help="comma-separated subset for the pipeline part")
    ap.add_argument("--only", default="", help="comma-separated parts: encoder,pipeline,tokens,host,scale,memory")
    a = ap.parse_args()
    parts = set(a.only.split(",")) if a.only else {"encoder", "pipeline", "tokens", "host", "memory", "scale"}
    out_path = HERE / "RESULTS.json"
    res = json.loads(out_path.read_text()) if out_path.exists() else {}
    if "encoder" in parts:
        res["encoder"] = run("encoder_efficiency.py", "--batch", "32", "--compile")
    if "pipeline" in parts:
        res.setdefault("pipeline", {})
        for name, n in SIZES.items():
            if a.modalities and name not in a.modalities.split(","):
                continue
            n = max(4, n // 4) if a.quick else n
            extra = ["--naive", "16"] if name == "image" else []
            res["pipeline"][name] = run("pipeline_efficiency.py", "--modality", name, "--n", str(n), *extra)
            out_path.write_text(json.dumps(res, indent=1))
    if "tokens" in parts:  # short rows: the token budget vs the bare encoder's best batch
        res["tokens"] = {m: run("token_budget.py", "--model", m, *(["--rows", "2048"] if a.quick else []))
                         for m in ("tiny", "meta-b16")}
        out_path.write_text(json.dumps(res, indent=1))
    if "host" in parts:
        res["host"] = run("host_overhead.py", "--n", "750" if a.quick else "3000")
    if "scale" in parts:
        res["scale"] = run("scale.py", "--n", "48", "--model", "meta-b16")
    if "memory" in parts:
        res["memory"] = run("memory.py", "--sizes", "1000", "10000")
    out_path.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
