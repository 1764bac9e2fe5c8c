"""Synthetic inputs for ``mtx bench`` and benchmarks/: ``GENERATORS[modality](dir, n) -> files``.

Each generator writes ``n`` small, valid files of one modality in its most common format, with
the path hints the modality's sniffer expects (``thermal/``, ``xray/``), deterministically.
"""
from __future__ import annotations

import math
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def image(d: Path, n: int, size: int = 256) -> list[Path]:
    from PIL import Image

    rng, out = _rng(), []
    for i in range(n):
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        p = d / f"img{i:05d}.jpg"
        Image.fromarray(base).resize((size, size), Image.BILINEAR).save(p, quality=90)
        out.append(p)
    return out


def infrared(d: Path, n: int, size: int = 256) -> list[Path]:
    from PIL import Image

    d = d / "thermal"
    d.mkdir(exist_ok=True)
    rng, out = _rng(1), []
    for i in range(n):
        a = (rng.random((size // 8, size // 8)) * 2000 + 13000).astype(np.uint16)
        p = d / f"ir{i:05d}.png"
        Image.fromarray(np.kron(a, np.ones((8, 8), np.uint16))).save(p)
        out.append(p)
    return out


def xray(d: Path, n: int, size: int = 256) -> list[Path]:
    from PIL import Image

    d = d / "xray"
    d.mkdir(exist_ok=True)
    rng, out = _rng(2), []
    for i in range(n):
        a = rng.integers(0, 256, (size // 8, size // 8), dtype=np.uint8)
        p = d / f"cxr{i:05d}.png"
        Image.fromarray(a).resize((size, size), Image.BILINEAR).save(p)
        out.append(p)
    return out


def video(d: Path, n: int, seconds: float = 2.0, fps: int = 8, size: int = 96) -> list[Path]:
    import av

    rng, out = _rng(3), []
    for i in range(n):
        p = d / f"clip{i:05d}.mp4"
        with av.open(str(p), "w") as c:
            s = c.add_stream("mpeg4", rate=fps)
            s.width = s.height = size
            s.pix_fmt = "yuv420p"
            base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for t in range(int(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * t, axis=1), format="rgb24")
                for pkt in s.encode(frame):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        out.append(p)
    return out


def audio(d: Path, n: int, seconds: float = 5.0, sr: int = 16000) -> list[Path]:
    rng, out = _rng(4), []
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        f0 = 200 + 40 * i % 600
        sig = 0.3 * np.sin(2 * math.pi * f0 * t) + 0.05 * rng.standard_normal(len(t))
        p = d / f"sound{i:05d}.wav"
        with wave.open(str(p), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes((np.clip(sig, -1, 1) * 32767).astype("<i2").tobytes())
        out.append(p)
    return out


def point_cloud(d: Path, n: int, points: int = 2048) -> list[Path]:
    rng, out = _rng(5), []
    for i in range(n):
        v = rng.normal(size=(points, 3)).astype("<f4") * np.array([1, 0.5 + i % 3, 0.3], "<f4")
        header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {points}\nproperty float x\n"
                  "property float y\nproperty float z\nend_header\n").encode()
        p = d / f"cloud{i:05d}.ply"
        p.write_bytes(header + v.tobytes())
        out.append(p)
    return out


def hyperspectral(d: Path, n: int, hw: int = 32, bands: int = 100) -> list[Path]:
    from scipy.io import savemat

    rng, out = _rng(6), []
    for i in range(n):
        p = d / f"cube{i:05d}.mat"
        savemat(p, {"cube": rng.random((hw, hw, bands)).astype(np.float32)})
        out.append(p)
    return out


def tabular(d: Path, n: int, files: int = 1) -> list[Path]:
    """``n`` rows (the samples) spread over ``files`` CSV files of 5 columns."""
    rng, out = _rng(7), []
    cities = ["Berlin", "Lagos", "Lima", "Osaka", "Quito"]
    per = max(1, n // files)
    for f in range(files):
        p = d / f"table{f:03d}.csv"
        with open(p, "w") as fh:
            fh.write("age,income,city,score,member\n")
            for r in range(per):
                fh.write(f"{rng.integers(18, 90)},{rng.integers(10, 200) * 1000},{cities[r % 5]},"
                         f"{rng.random():.4f},{'yes' if r % 3 else 'no'}\n")
        out.append(p)
    return out


def graph(d: Path, n: int, nodes: int = 34, edges: int = 78) -> list[Path]:
    rng, out = _rng(8), []
    for i in range(n):
        pairs = set()
        while len(pairs) < edges:
            a, b = sorted(rng.integers(0, nodes, 2).tolist())
            if a != b:
                pairs.add((a, b))
        lines = ["graph [", "  directed 0", *[f"  node [ id {k} ]" for k in range(nodes)],
                 *[f"  edge [ source {a} target {b} ]" for a, b in sorted(pairs)], "]"]
        p = d / f"graph{i:05d}.gml"
        p.write_text("\n".join(lines) + "\n")
        out.append(p)
    return out


def time_series(d: Path, n: int, steps: int = 96, channels: int = 7) -> list[Path]:
    rng, out = _rng(9), []
    for i in range(n):
        p = d / f"series{i:05d}.csv"
        x = np.cumsum(rng.standard_normal((steps, channels)), axis=0)
        with open(p, "w") as fh:
            fh.write("date," + ",".join(f"ch{c}" for c in range(channels)) + "\n")
            for t in range(steps):
                fh.write(f"2024-01-{1 + t // 24:02d} {t % 24:02d}:00:00," + ",".join(f"{v:.4f}" for v in x[t]) + "\n")
        out.append(p)
    return out


def imu(d: Path, n: int, seconds: float = 10.0, rate: int = 200) -> list[Path]:
    rng, out = _rng(10), []
    k = int(seconds * rate)
    for i in range(n):
        p = d / f"imu{i:05d}.csv"
        t = np.arange(k) / rate
        a = rng.standard_normal((k, 6)) * 0.1 + np.array([0, 0, 1, 0, 0, 0])
        with open(p, "w") as fh:
            fh.write("time,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n")
            for j in range(k):
                fh.write(f"{t[j]:.4f}," + ",".join(f"{v:.4f}" for v in a[j]) + "\n")
        out.append(p)
    return out


def text(d: Path, n: int, words: int = 12) -> list[Path]:
    rng, out = _rng(11), []
    vocab = ("encoder modality token frozen shared vector image sound graph table point cloud series "
             "signal light heat wave").split()
    for i in range(n):
        p = d / f"note{i:05d}.txt"
        p.write_text(" ".join(vocab[j] for j in rng.integers(0, len(vocab), words)) + ".\n")
        out.append(p)
    return out


GENERATORS: dict[str, Callable[..., list[Path]]] = {
    "image": image, "infrared": infrared, "xray": xray, "video": video, "audio": audio,
    "point_cloud": point_cloud, "hyperspectral": hyperspectral, "tabular": tabular, "graph": graph,
    "time_series": time_series, "imu": imu, "text": text,
}
