"""Peak RSS of video loading vs clip length: memory must not grow with the video's duration.

Generates synthetic H.264 MP4s (a moving pattern, libx264 ultrafast, default GOP of 250 frames)
of a short and a long duration, then runs ``video.load`` on each in a fresh subprocess and
reports the process's peak RSS (``ru_maxrss``) before and after loading, the load time, and how
many frames were decoded and how many seeks were made.

Usage: python benchmarks/video_memory.py [--minutes 60] [--fps 25] [--width 320 --height 240]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from mtx.modalities import get_modality
mod = get_modality("video")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
s = next(mod.load(Path(sys.argv[1]), mod.config()))
dt = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_before_mb": before / 1024, "rss_peak_mb": after / 1024, "load_s": dt,
                  "frames_decoded": s.meta["frames_decoded"], "seeks": s.meta["seeks"],
                  "duration_s": s.meta["duration_s"], "shape": list(s.arrays["pixels"].shape)}))
"""


def make_video(path: Path, seconds: float, fps: int, width: int, height: int) -> float:
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) % 256)], -1).astype(np.uint8)
    n = int(seconds * fps)
    t = time.perf_counter()
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(n):
            frame = np.roll(base, (i * 3) % width, axis=1)
            frame[: height // 8, : width // 8] = (i // fps) % 256  # a per-second marker
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return time.perf_counter() - t


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--short-seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the videos (default: a temp dir)")
    args = ap.parse_args()
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="mtx_video_mem_"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, secs in (("short", args.short_seconds), ("long", args.minutes * 60)):
        p = tmp / f"{label}_{int(secs)}s_{args.width}x{args.height}_{args.fps}fps.mp4"
        gen = make_video(p, secs, args.fps, args.width, args.height) if not p.exists() else 0.0
        r = measure(p)
        r.update(video=p.name, size_mb=p.stat().st_size / 2**20, frames=int(secs * args.fps), generate_s=gen)
        rows.append(r)
        print(json.dumps(r), flush=True)
    short, long_ = rows
    print(f"peak RSS: short {short['rss_peak_mb']:.0f} MB, long {long_['rss_peak_mb']:.0f} MB "
          f"(ratio {long_['rss_peak_mb'] / short['rss_peak_mb']:.2f}); "
          f"load {short['load_s']:.2f} s vs {long_['load_s']:.2f} s; "
          f"decoded {short['frames_decoded']} of {short['frames']} vs {long_['frames_decoded']} of {long_['frames']}")


if __name__ == "__main__":
    main()
