"""Per-modality augmentations for ``mtx fit --objective contrastive`` (two views per sample).

One function per modality, keyed by the modality name in :data:`AUGMENTERS`, with its
documentation in :data:`DESCRIPTIONS` (recorded in the tokenizer file). Each takes decoded
samples (numpy, as the loaders emit them) and a seeded ``numpy.random.Generator`` and returns
new samples; the cached originals are never modified. Shapes are kept wherever the batch key
depends on them, so a view batches with the other views of its batch. They act on the
preprocessed arrays (after resampling, z-scoring, farthest-point sampling...), which is what
the tokenizer sees.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..modalities._base import Sample

Rng = np.random.Generator


def _new(s: Sample, **arrays: np.ndarray) -> Sample:
    return Sample(s.key, {**s.arrays, **arrays}, s.meta)


# -- pictures ------------------------------------------------------------------------------


def _crop_resize(x: np.ndarray, rng: Rng) -> np.ndarray:
    """Random resized crop (area 40-100 %, aspect 3/4-4/3) back to the same size, then a
    horizontal flip half of the time; ``x`` [..., H, W], the same crop for every leading index."""
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    area = rng.uniform(0.4, 1.0) * h * w
    ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, max(8, round(np.sqrt(area / ar)))))
    cw = int(min(w, max(8, round(np.sqrt(area * ar)))))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = x[..., y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[..., ::-1]
    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
    shape = t.shape
    t = F.interpolate(t.reshape(-1, 1, ch, cw), size=(h, w), mode="bilinear", align_corners=False)
    out = t.reshape(*shape[:-2], h, w).numpy()
    gain = rng.uniform(0.8, 1.2)  # brightness
    out = out * gain
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


def pictures(samples: list[Sample], rng: Rng) -> list[Sample]:
    """image, infrared, xray, video: random resized crop (40-100 % of the area, aspect 3/4-4/3),
    horizontal flip (p = 0.5), brightness x0.8-1.2; video frames share one crop."""
    return [_new(s, pixels=_crop_resize(s.arrays["pixels"], rng)) for s in samples]


# -- signals -------------------------------------------------------------------------------


def _signal(x: np.ndarray, valid: np.ndarray | None, rng: Rng, noise: float, gain_db: float,
            log_domain: float | None = None) -> np.ndarray:
    """Circular time shift within the valid part, gain, Gaussian noise; ``x`` [S, C, T]."""
    out = np.array(x, dtype=np.float32, copy=True)
    for r in range(out.shape[0]):
        n = int(valid[r]) if valid is not None else out.shape[-1]
        n = max(1, min(n, out.shape[-1]))
        seg = out[r, :, :n]
        seg = np.roll(seg, int(rng.integers(0, n)), axis=-1)
        if log_domain is not None:
            seg = seg + rng.uniform(-gain_db, gain_db) * log_domain  # a gain is an offset of a log spectrum
        else:
            seg = seg * 10 ** (rng.uniform(-gain_db, gain_db, size=(seg.shape[0], 1)) / 20)
        seg = seg + rng.normal(0, noise, seg.shape).astype(np.float32)
        out[r, :, :n] = seg
    return out


# log-mel units per dB after AST's normalisation: ln(10)/10 per dB, divided by 2 x 4.5689974
_AUDIO_DB = np.log(10) / 10 / (2 * 4.5689974)


def audio(samples: list[Sample], rng: Rng) -> list[Sample]:
    """audio (log-mel fbank): circular time shift within the clip, gain +-6 dB, a pitch shift
    of up to +-8 mel bins (the spectrum moved along the mel axis), Gaussian noise (sigma 0.05 in
    normalised log-mel units), one frequency mask of up to 16 mel bins."""
    out = []
    for s in samples:
        fb = _signal(s.arrays["fbank"], s.arrays["frames"], rng, 0.05, 6.0, log_domain=_AUDIO_DB)
        shift = int(rng.integers(-8, 9))
        if shift:
            edge = fb[:, :1] if shift > 0 else fb[:, -1:]
            fb = np.concatenate([np.repeat(edge, shift, 1), fb[:, :-shift]], 1) if shift > 0 else \
                np.concatenate([fb[:, -shift:], np.repeat(edge, -shift, 1)], 1)
        w = int(rng.integers(0, 17))
        f0 = int(rng.integers(0, fb.shape[1] - w + 1))
        fb[:, f0:f0 + w] = fb.mean()
        out.append(_new(s, fbank=fb))
    return out


def _drift(x: np.ndarray, rng: Rng, scale: float) -> np.ndarray:
    """Add a random smooth drift per channel (a random walk through 4 knots, linearly
    interpolated; its size ``scale`` x the channel's standard deviation)."""
    s, c, t = x.shape
    knots = np.cumsum(rng.normal(0, 1, (s, c, 5)), axis=-1)
    knots -= knots.mean(-1, keepdims=True)
    grid = np.linspace(0, 4, t)
    lo = np.minimum(grid.astype(int), 3)
    w = (grid - lo).astype(np.float32)
    curve = knots[..., lo] * (1 - w) + knots[..., lo + 1] * w
    return (x + scale * x.std(-1, keepdims=True) * curve).astype(np.float32)


def time_series(samples: list[Sample], rng: Rng) -> list[Sample]:
    """time_series (z-scored channels): circular time shift, per-channel gain x0.7-1.4 (+-3 dB),
    a random smooth drift (a 4-knot random walk, 0.5 x the channel's deviation), Gaussian noise
    (sigma 0.1)."""
    return [_new(s, series=_signal(_drift(s.arrays["series"], rng, 0.5), None, rng, 0.1, 3.0)) for s in samples]


def imu(samples: list[Sample], rng: Rng) -> list[Sample]:
    """imu (z-scored acc/gyro): circular time shift within the valid samples, per-channel gain
    +-3 dB, Gaussian noise (sigma 0.1)."""
    return [_new(s, imu=_signal(s.arrays["imu"], s.arrays.get("valid"), rng, 0.1, 3.0)) for s in samples]


# -- geometry ------------------------------------------------------------------------------


def _rotation(rng: Rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]], np.float32)


def point_cloud(samples: list[Sample], rng: Rng) -> list[Sample]:
    """point_cloud (centred, unit sphere, FPS-sampled): uniform random 3-D rotation, per-axis
    scale x0.85-1.15, jitter (sigma 0.01, clipped at 0.03), resampling (a random 70-100 % of
    the points, refilled by repetition to the same count)."""
    out = []
    for s in samples:
        pts = np.array(s.arrays["points"], np.float32, copy=True)  # [S, N, 3]
        for r in range(pts.shape[0]):
            n = pts.shape[1]
            keep = rng.permutation(n)[: max(1, int(n * rng.uniform(0.7, 1.0)))]
            idx = np.concatenate([keep, rng.choice(keep, n - len(keep))])
            p = pts[r, idx] @ _rotation(rng).T
            p = p * rng.uniform(0.85, 1.15, size=3).astype(np.float32)
            p = p + np.clip(rng.normal(0, 0.01, p.shape), -0.03, 0.03).astype(np.float32)
            pts[r] = p
        out.append(_new(s, points=pts))
    return out


def graph(samples: list[Sample], rng: Rng) -> list[Sample]:
    """graph (TokenGT tokens): node dropping (10 % of the nodes with their edges) and edge
    dropping (20 % of the remaining edges); node identifiers are not recomputed."""
    out = []
    for s in samples:
        ids, typ, attr = s.arrays["ids"][0], s.arrays["type"][0], s.arrays["attr"][0]
        k = ids.shape[1] // 2
        node = typ == 0
        keep = np.ones(len(typ), bool)
        nodes = np.flatnonzero(node)
        n_drop = int(len(nodes) * 0.1)
        if n_drop and len(nodes) - n_drop >= 1:
            gone = ids[rng.choice(nodes, n_drop, replace=False), :k]
            ends = np.concatenate([ids[:, :k], ids[:, k:]])
            hit = (ends[:, None, :] == gone[None]).all(-1).any(-1)
            keep &= ~(hit[: len(typ)] | hit[len(typ):])
        edges = np.flatnonzero(~node & keep)
        if len(edges):
            keep[edges[rng.random(len(edges)) < 0.2]] = False
        if not keep[node].any():
            keep[nodes[0]] = True
        out.append(_new(s, ids=ids[keep][None], type=typ[keep][None], attr=attr[keep][None]))
    return out


# -- tables and text -----------------------------------------------------------------------


def tabular(samples: list[Sample], rng: Rng) -> list[Sample]:
    """tabular rows: feature corruption as SCARF (each cell, p = 0.3, takes that column's value
    from another row of the batch with the same columns) and Gaussian noise (sigma 0.1) on
    numeric cells."""
    groups: dict[bytes, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.arrays["col"].tobytes(), []).append(i)
    out: list[Sample] = list(samples)
    for rows in groups.values():
        num = np.concatenate([samples[i].arrays["num"] for i in rows])
        cat = np.concatenate([samples[i].arrays["cat"] for i in rows])
        for j, i in enumerate(rows):
            n, c = num[j].copy(), cat[j].copy()
            swap = rng.random(n.shape) < 0.3
            donor = rng.integers(0, len(rows), size=n.shape)
            cols = np.arange(n.shape[0])
            n[swap], c[swap] = num[donor, cols][swap], cat[donor, cols][swap]
            n = n + rng.normal(0, 0.1, n.shape).astype(np.float32) * (c < 0)
            out[i] = _new(samples[i], num=n[None].astype(np.float32), cat=c[None])
    return out


def text(samples: list[Sample], rng: Rng) -> list[Sample]:
    """text (CLIP BPE windows): span crop (a random contiguous 60-100 % of each window's tokens)
    then token dropout (p = 0.1, at least one token kept); <start>/<end> stay."""
    out = []
    for s in samples:
        ids = np.zeros_like(s.arrays["ids"])
        n = np.array(s.arrays["n"], copy=True)
        for r in range(ids.shape[0]):
            row = s.arrays["ids"][r]
            body = row[1:int(s.arrays["n"][r]) - 1]
            if len(body) > 1:
                span = max(1, int(round(len(body) * rng.uniform(0.6, 1.0))))
                start = int(rng.integers(0, len(body) - span + 1))
                body = body[start:start + span]
                kept = body[rng.random(len(body)) >= 0.1]
                body = kept if len(kept) else body[:1]
            new = np.concatenate([row[:1], body, row[int(s.arrays["n"][r]) - 1:int(s.arrays["n"][r])]])
            ids[r, :len(new)] = new
            n[r] = len(new)
        out.append(_new(s, ids=ids, n=n))
    return out


def hyperspectral(samples: list[Sample], rng: Rng) -> list[Sample]:
    """hyperspectral (per-band 16x16 maps): band noise (per-band gain x0.9-1.1, Gaussian noise
    sigma 0.03), spatial flips and 90-degree rotations shared by all bands."""
    out = []
    for s in samples:
        b = np.array(s.arrays["bands"], np.float32, copy=True)  # [S, B, 16, 16]
        b = np.rot90(b, int(rng.integers(0, 4)), axes=(-2, -1))
        if rng.random() < 0.5:
            b = b[..., ::-1]
        b = b * rng.uniform(0.9, 1.1, size=(*b.shape[:2], 1, 1)).astype(np.float32)
        b = b + rng.normal(0, 0.03, b.shape).astype(np.float32)
        out.append(_new(s, bands=np.ascontiguousarray(b, np.float32)))
    return out


AUGMENTERS: dict[str, Callable[[list[Sample], Rng], list[Sample]]] = {
    "image": pictures, "infrared": pictures, "xray": pictures, "video": pictures,
    "audio": audio, "time_series": time_series, "imu": imu,
    "point_cloud": point_cloud, "graph": graph, "tabular": tabular, "text": text,
    "hyperspectral": hyperspectral,
}
DESCRIPTIONS = {name: " ".join((fn.__doc__ or "").split()) for name, fn in AUGMENTERS.items()}


def augment(modality: str, samples: list[Sample], rng: Rng) -> list[Sample]:
    """One augmented view of each sample (see :data:`DESCRIPTIONS`)."""
    try:
        fn = AUGMENTERS[modality]
    except KeyError:
        from ..errors import UsageError

        raise UsageError(f"--objective contrastive: no augmentations are defined for {modality}") from None
    return fn(samples, rng)
