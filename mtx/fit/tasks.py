"""Labelled synthetic sets whose classes need the data's structure, not its mean or scale.

Used by the tests and ``benchmarks/fit_quality.py`` to show that a fitted tokenizer is better
than the seeded one. ``TASKS[modality](root, per_class, seed)`` writes ``root/<class>/...``
files (``--labels folders``), except ``tabular``, which writes one CSV whose column ``y`` is
the label (``--target y``). Every class has the same mean and scale; nuisances (phase, gain,
noise, rotation, size) vary within a class.

- time_series: 4 classes by dominant period (6, 9, 14, 22 steps) in noise and a random walk.
- audio: 4 spectral shapes (a tone, a fifth, a harmonic series, a noise band) at a random
  base frequency (300-1500 Hz) and gain.
- point_cloud: 4 solids (sphere, cube, cylinder, cone surfaces), randomly rotated and jittered.
- graph: 4 topologies of ~24 nodes and about the same mean degree (ring lattice, two
  communities, a random graph, a preferential-attachment graph).
- text: 4 word-order templates over one shared vocabulary (the same bag of words per class).
- tabular: y = sign(x0 * x1) (an interaction: each feature alone carries nothing) + 4 noise columns.
"""
from __future__ import annotations

import math
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _dirs(root: Path, classes: list[str]) -> list[Path]:
    out = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        out.append(root / c)
    return out


def time_series(root: Path, per_class: int, seed: int = 0, steps: int = 128) -> list[Path]:
    rng = np.random.default_rng(seed)
    periods = {"p06": 6, "p09": 9, "p14": 14, "p22": 22}
    out = []
    for d, (name, per) in zip(_dirs(root, list(periods)), periods.items(), strict=True):
        for i in range(per_class):
            t = np.arange(steps)
            x = np.sin(2 * math.pi * t / (per * rng.uniform(0.92, 1.08)) + rng.uniform(0, 2 * math.pi))
            x = x + 0.8 * rng.standard_normal(steps) + 0.3 * np.cumsum(rng.standard_normal(steps))
            x = x * rng.uniform(0.5, 5) + rng.uniform(-10, 10)
            p = d / f"{name}_{i:03d}.csv"
            p.write_text("t,value\n" + "".join(f"{k},{v:.5f}\n" for k, v in zip(t, x, strict=True)))
            out.append(p)
    return out


def audio(root: Path, per_class: int, seed: int = 0, seconds: float = 1.0, sr: int = 16000) -> list[Path]:
    rng = np.random.default_rng(seed)
    kinds = ["chord", "harmonic", "noise", "tone"]
    out = []
    n = int(seconds * sr)
    t = np.arange(n) / sr
    for d, kind in zip(_dirs(root, kinds), kinds, strict=True):
        for i in range(per_class):
            f0 = rng.uniform(300, 1500)
            ph = rng.uniform(0, 6.3, 3)
            if kind == "tone":
                sig = np.sin(2 * math.pi * f0 * t + ph[0])
            elif kind == "chord":  # a fifth: f0 and 1.5 f0
                sig = np.sin(2 * math.pi * f0 * t + ph[0]) + np.sin(2 * math.pi * 1.5 * f0 * t + ph[1])
            elif kind == "harmonic":  # f0, 2 f0, 3 f0
                sig = sum(np.sin(2 * math.pi * k * f0 * t + ph[k - 1]) / k for k in (1, 2, 3))
            else:  # a noise band one third of an octave wide around f0
                spec = np.fft.rfft(rng.standard_normal(n))
                f = np.fft.rfftfreq(n, 1 / sr)
                spec[(f < f0 / 1.12) | (f > f0 * 1.12)] = 0
                sig = np.fft.irfft(spec, n)
            sig = sig / np.abs(sig).max() + 0.05 * rng.standard_normal(n)
            sig = sig / np.abs(sig).max() * rng.uniform(0.1, 0.9)
            p = d / f"{kind}_{i:03d}.wav"
            with wave.open(str(p), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(sr)
                w.writeframes((sig * 32767).astype("<i2").tobytes())
            out.append(p)
    return out


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def point_cloud(root: Path, per_class: int, seed: int = 0, points: int = 1024) -> list[Path]:
    rng = np.random.default_rng(seed)

    def sphere(n):
        v = rng.standard_normal((n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def cube(n):
        v = rng.uniform(-1, 1, (n, 3))
        ax = rng.integers(0, 3, n)
        v[np.arange(n), ax] = rng.choice([-1.0, 1.0], n)
        return v

    def cylinder(n):
        a = rng.uniform(0, 2 * math.pi, n)
        z = rng.uniform(-1, 1, n)
        v = np.stack([np.cos(a), np.sin(a), z], 1)
        cap = rng.random(n) < 0.25
        r = np.sqrt(rng.random(cap.sum()))
        v[cap] = np.stack([r * np.cos(a[cap]), r * np.sin(a[cap]), rng.choice([-1.0, 1.0], cap.sum())], 1)
        return v

    def cone(n):
        a = rng.uniform(0, 2 * math.pi, n)
        h = 1 - np.sqrt(rng.random(n))
        return np.stack([h * np.cos(a), h * np.sin(a), 1 - 2 * h], 1)

    shapes = {"cone": cone, "cube": cube, "cylinder": cylinder, "sphere": sphere}
    out = []
    for d, (name, fn) in zip(_dirs(root, list(shapes)), shapes.items(), strict=True):
        for i in range(per_class):
            v = fn(points) * rng.uniform(0.8, 1.2, 3) @ _rotation(rng).T
            v = v + 0.02 * rng.standard_normal(v.shape) + rng.uniform(-3, 3, 3)
            p = d / f"{name}_{i:03d}.xyz"
            p.write_text("".join(f"{a:.5f} {b:.5f} {c:.5f}\n" for a, b, c in v))
            out.append(p)
    return out


def graph(root: Path, per_class: int, seed: int = 0) -> list[Path]:
    import networkx as nx

    rng = np.random.default_rng(seed)

    def gen(kind: str, n: int, s: int):
        if kind == "lattice":
            return nx.watts_strogatz_graph(n, 4, 0.05, seed=s)
        if kind == "communities":
            half = n // 2
            return nx.stochastic_block_model([half, n - half], [[0.3, 0.02], [0.02, 0.3]], seed=s)
        if kind == "random":
            return nx.gnm_random_graph(n, 2 * n, seed=s)
        return nx.barabasi_albert_graph(n, 2, seed=s)

    out = []
    kinds = ["communities", "lattice", "preferential", "random"]
    for d, kind in zip(_dirs(root, kinds), kinds, strict=True):
        for i in range(per_class):
            g = gen(kind, int(rng.integers(18, 30)), int(rng.integers(0, 2**31)))
            perm = rng.permutation(g.number_of_nodes())
            p = d / f"{kind}_{i:03d}.edgelist"
            p.write_text("".join(f"{perm[a]} {perm[b]}\n" for a, b in g.edges()))
            out.append(p)
    return out


_WORDS = ("red blue green small large old new fast slow dog cat bird fish horse runs eats sees jumps "
          "sleeps quickly slowly often rarely the a near under").split()
_ADJ, _NOUN, _VERB, _ADV = _WORDS[:9], _WORDS[9:14], _WORDS[14:19], _WORDS[19:23]


def text(root: Path, per_class: int, seed: int = 0, sentences: int = 3) -> list[Path]:
    rng = np.random.default_rng(seed)
    orders = {"anva": "ANVD", "davn": "DAVN", "nvda": "NVDA", "vdna": "VDNA"}
    pick = {"A": _ADJ, "N": _NOUN, "V": _VERB, "D": _ADV}
    out = []
    for d, (name, order) in zip(_dirs(root, list(orders)), orders.items(), strict=True):
        for i in range(per_class):
            lines = []
            for _ in range(sentences):
                lines.append(" ".join(pick[c][int(rng.integers(len(pick[c])))] for c in order))
            p = d / f"{name}_{i:03d}.txt"
            p.write_text(". ".join(lines) + ".\n")
            out.append(p)
    return out


def tabular(root: Path, rows: int, seed: int = 0, name: str = "table.csv") -> list[Path]:
    """One CSV of ``rows`` rows: x0..x5 standard normal, y = 'pos' when x0 * x1 > 0 else 'neg'."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    x = rng.standard_normal((rows, 6))
    y = np.where(x[:, 0] * x[:, 1] > 0, "pos", "neg")
    p = root / name
    p.write_text("x0,x1,x2,x3,x4,x5,y\n" + "".join(
        ",".join(f"{v:.4f}" for v in r) + f",{c}\n" for r, c in zip(x, y, strict=True)))
    return [p]


TASKS: dict[str, Callable[..., list[Path]]] = {
    "time_series": time_series, "audio": audio, "point_cloud": point_cloud, "graph": graph,
    "text": text, "tabular": tabular,
}
