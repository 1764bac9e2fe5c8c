"""Regenerate the small example files in examples/ (deterministic; committed outputs).

Usage: python scripts/make_examples.py
"""
from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parents[1] / "examples"


def image() -> None:
    y, x = np.mgrid[0:256, 0:320]
    rgb = np.stack([(x * 0.8) % 256, (y * 0.9) % 256, ((x + y) * 0.4) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(HERE / "gradient.png")
    rng = np.random.default_rng(7)
    disc = np.zeros((240, 240, 3), np.uint8)
    cy, cx = np.mgrid[0:240, 0:240]
    disc[(cy - 120) ** 2 + (cx - 120) ** 2 < 80 ** 2] = (220, 60, 40)
    disc += rng.integers(0, 20, disc.shape, dtype=np.uint8)
    Image.fromarray(disc).save(HERE / "disc.jpg", quality=90)


def text() -> None:
    (HERE / "note.txt").write_text(
        "Meta-Transformer encodes twelve modalities with one frozen encoder.\n"
        "mtx turns folders of files into embeddings with full provenance.\n")


def audio() -> None:
    sr = 16000
    t = np.arange(int(sr * 1.5)) / sr
    sig = 0.3 * np.sin(2 * math.pi * 440 * t) * np.exp(-t) + 0.1 * np.sin(2 * math.pi * 880 * t)
    pcm = (sig * 32767).astype("<i2").tobytes()
    with wave.open(str(HERE / "tone.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm)


def table() -> None:
    rows = ["age,income,city,owns_car"]
    rng = np.random.default_rng(1)
    cities = ["Berlin", "Lagos", "Lima", "Osaka"]
    for i in range(5):
        rows.append(f"{20 + 7 * i},{int(rng.integers(20, 90)) * 1000},{cities[i % 4]},{'yes' if i % 2 else 'no'}")
    (HERE / "people.csv").write_text("\n".join(rows) + "\n")


def points() -> None:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(2048, 3)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n").encode()
    (HERE / "sphere.ply").write_bytes(header + v.astype("<f4").tobytes())


def graph() -> None:
    edges = [(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 5), (5, 3)]
    lines = ["graph [", "  directed 0"] + [f"  node [ id {i} ]" for i in range(6)]
    lines += [f"  edge [ source {a} target {b} ]" for a, b in edges] + ["]"]
    (HERE / "triangles.gml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    for fn in (image, text, audio, table, points, graph):
        fn()
    print("\n".join(sorted(p.name for p in HERE.iterdir() )))
