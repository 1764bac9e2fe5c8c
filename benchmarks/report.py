"""Render benchmarks/RESULTS.json (+ results/*.json from the GPU check) as the tables of RESULTS.md.

    python benchmarks/report.py > benchmarks/RESULTS.tables.md
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    d = json.loads((HERE / "RESULTS.json").read_text())
    out = []
    if "pipeline" in d:
        out += ["| modality | inputs | samples | bare encoder samples/s | `mtx embed` samples/s | efficiency |",
                "|---|---|---|---|---|---|"]
        for k, v in d["pipeline"].items():
            out.append(f"| {k} | {v['n_files']} | {v['n_samples']} | {v['bare_samples_per_s']:.2f} | "
                       f"{v['e2e_samples_per_s']:.2f} | **{v['efficiency']:.2f}** |")
        out.append("")
    if "tokens" in d:
        out += ["| model | tokens/row | bare encoder rows/s (best batch) | `mtx embed` rows/s, rows only | "
                "`mtx embed` rows/s, token budget | budget / bare |", "|---|---|---|---|---|---|"]
        for k, v in d["tokens"].items():
            out.append(f"| {k} | {v['tokens_per_row']} | {v['bare_best_rows_per_s']:.0f} ({v['bare_best_batch']}) | "
                       f"{v['embed_rows_only_rows_per_s']:.0f} | {v['embed_rows_per_s']:.0f} | **{v['ratio']:.2f}** |")
        out.append("")
    if "encoder" in d:
        e = d["encoder"]
        out += ["| dtype | matmul ceiling GFLOP/s | encoder GFLOP/s | efficiency | images/s (batch "
                f"{e['batch']}) |", "|---|---|---|---|---|"]
        for dt in ("float32", "bfloat16"):
            v = e[dt]
            out.append(f"| {dt} | {v['matmul_gflops']:.0f} | {v['encoder_gflops']:.0f} | **{v['efficiency']:.2f}** | "
                       f"{v['samples_per_s']:.2f} |")
        out += ["", f"bfloat16 / float32 throughput: **{e['bf16_speedup']:.2f}x**, minimum cosine of the pooled "
                f"vectors {e['bf16_min_cosine']:.6f} (CPU with native bf16: {e['fast_bf16_cpu']}).", ""]
        if "compiled_speedup" in e["float32"]:
            out += ["`--compile` (torch.compile, inductor, dynamic shapes):", "",
                    "| dtype | compile s (first batch) | images/s compiled | vs eager | max abs diff |",
                    "|---|---|---|---|---|"]
            for dt in ("float32", "bfloat16"):
                v = e[dt]
                out.append(f"| {dt} | {v['compile_s']:.0f} | {v['compiled_samples_per_s']:.2f} | "
                           f"{v['compiled_speedup']:.2f}x | {v['compiled_max_abs_diff']:.1e} |")
            out.append("")
    if "memory" in d:
        m = d["memory"]
        out += ["| inputs | peak RSS (MB, main + decoders) | seconds |", "|---|---|---|"]
        for r in m["runs"]:
            out.append(f"| {r['inputs']:,} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |")
        out += ["", f"Growth from {m['runs'][0]['inputs']:,} to {m['runs'][-1]['inputs']:,} inputs: "
                f"**{100 * m['growth']:.1f} %**.", ""]
    if "scale" in d:
        s = d["scale"]
        out += [f"Same job ({s['n']} images, {s['model']}):", "", "| run | wall s |", "|---|---|",
                f"| one process (local engine) | {s['local_s']:.1f} |"]
        for k, v in s["shards"].items():
            out.append(f"| {k} shard process(es) + merge | {v['wall_s']:.1f} |")
        if "ray_s" in s:
            out.append(f"| Ray engine (local Ray, 2 actors) | {s['ray_s']:.1f} (x{s['ray_overhead']:.2f}) |")
        out.append("")
    if "host" in d:
        h = d["host"]
        out += ["| | per sample | what it allows |", "|---|---|---|",
                f"| main thread, steady state (user + sys) | {h['main_us_per_sample']:.0f} µs "
                f"({h['main_user_us_per_sample']:.0f} + {h['main_sys_us_per_sample']:.0f}) | "
                f"{h['main_ceiling_samples_per_s']:,.0f} samples/s from one main process |",
                f"| one decoder process | {h['decoder_us_per_sample']:.0f} µs | "
                f"{h['decoder_samples_per_s_per_core']:,.0f} samples/s per core |", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
