"""Peak memory of the audio loader on a long WAV (default: 2 hours, 44.1 kHz stereo 16-bit).

Writes the WAV in chunks (never holding it), then runs ``audio.load`` in a fresh process per
mode and prints that process's peak RSS next to its RSS after the imports, and the size the
whole file would take decoded as float32 (what ``soundfile.read`` would hold before any
resampling). Usage::

    python benchmarks/audio_memory.py [--hours 2] [--rate 44100] [--channels 2] [--keep]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from mtx.modalities import get_modality
mod = get_modality("audio")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
cfg = mod.config(per_window=sys.argv[2] == "per_window")
segments = 0
held = 0
for s in mod.load(Path(sys.argv[1]), cfg):
    segments += s.n_segments
    held = max(held, sum(a.nbytes for a in s.arrays.values()))
print(json.dumps({"mode": sys.argv[2], "segments": segments, "seconds": time.perf_counter() - t0,
                  "rss_after_imports_mb": base / 1024,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "largest_sample_arrays_mb": held / 2**20}))
"""


def write_wav(path: Path, hours: float, rate: int, channels: int) -> int:
    import numpy as np
    import soundfile as sf

    frames = int(hours * 3600 * rate)
    rng = np.random.default_rng(0)
    block = rate * 60
    t = np.arange(block) / rate
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as f:
        done = 0
        while done < frames:
            n = min(block, frames - done)
            tone = 0.2 * np.sin(2 * np.pi * (220 + done // block % 20 * 30) * t[:n])
            x = tone[:, None] + 0.02 * rng.standard_normal((n, channels))
            f.write(x.astype(np.float32))
            done += n
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--rate", type=int, default=44100)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--modes", default="pooled,per_window")
    ap.add_argument("--keep", action="store_true", help="keep the generated WAV")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mtx-audio-mem-"))
    wav = tmp / "long.wav"
    t0 = time.perf_counter()
    frames = write_wav(wav, args.hours, args.rate, args.channels)
    size = wav.stat().st_size
    print(f"wrote {wav} ({size / 2**20:.0f} MiB, {args.hours} h, {args.rate} Hz x {args.channels}) "
          f"in {time.perf_counter() - t0:.0f} s")
    whole = frames * args.channels * 4 / 2**20
    print(f"decoded whole as float32 it would take {whole:.0f} MiB (+ {frames * 16000 / args.rate * 4 / 2**20:.0f}"
          " MiB at 16 kHz mono)")
    root = Path(__file__).resolve().parents[1]
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, "-c", CHILD, str(wav), mode], cwd=root, check=True,
                             capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:>10}: {r['segments']} segments in {r['seconds']:.0f} s; peak RSS "
              f"{r['peak_rss_mb']:.0f} MiB (after imports {r['rss_after_imports_mb']:.0f} MiB; "
              f"largest sample's arrays {r['largest_sample_arrays_mb']:.1f} MiB)")
    if not args.keep:
        wav.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
