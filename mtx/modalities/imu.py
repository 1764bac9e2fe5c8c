"""imu: accelerometer (+ gyroscope) recordings -> 6-channel 200 Hz windows -> 251 tokens each.

Columns are recognised by name in the layouts devices and phone loggers write: x-io / NGIMU
(``Accelerometer X (g)``, ``Gyroscope X (deg/s)``), short names (``ax ay az gx gy gz``),
``acc_x``/``accel_x``/``AccX``, SensorLog style (``accelerometerAccelerationX(G)``,
``gyroRotationX(rad/s)``). Magnetometer columns are recognised but not used (the tokenizer
takes [acc xyz, gyro xyz], as ImageBind/Ego4D). Units do not matter: every channel is z-scored.

Preprocessing: the sample rate comes from the time column (units from the column name — ``(s)``,
``_ms``, ``us``, ``ns``... — or, when the name says nothing, from the median step: the first of
s/ms/us/ns that gives 1 Hz..20 kHz); without a time column it is ``rate`` (200 Hz). Timestamps
that go backwards are repaired: rows are sorted (stable) and repeated timestamps dropped (first
kept), both counted in ``meta["repairs"]``. The samples are linearly interpolated onto a uniform
grid at the measured rate (absorbing jitter and gaps, the largest gap recorded), resampled to
200 Hz with soxr (band-limited), and z-scored per channel (statistics recorded). A missing
gyroscope gives zero channels (recorded).

Windows of 2000 samples (10 s) are segments pooled into one vector; a recording longer than one
window ends with a window aligned to its end (overlapping its neighbour, nothing dropped); a
recording shorter than one window is zero-padded to 2000 samples and the tokens made only of
padding are masked. More than ``max_windows`` windows are reduced to that many, spaced
uniformly (recorded). ``window=W`` (seconds, ``--window``) yields one sample per W seconds
every ``stride`` seconds (default W; the last aligned to the end), keyed ``t=START`` (seconds),
each made of its own 10 s windows as above. The CSV sniffing ladder is documented in :mod:`mtx.modalities._columns`.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import DecodeError
from . import _columns as cols
from ._base import (
    REFINED,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    seeded,
    sinusoidal,
)
from ._registry import register_modality

RATE = 200
WINDOW = 2000
PATCH = 8
HINTS = ("imu", "imus", "accelerometer", "accel", "acc", "gyro", "gyroscope", "inertial")

_SHORT = {"ax": ("acc", "x"), "ay": ("acc", "y"), "az": ("acc", "z"),
          "gx": ("gyro", "x"), "gy": ("gyro", "y"), "gz": ("gyro", "z"),
          "wx": ("gyro", "x"), "wy": ("gyro", "y"), "wz": ("gyro", "z"),
          "mx": ("mag", "x"), "my": ("mag", "y"), "mz": ("mag", "z")}
_SENSOR_PREFIX = re.compile(r"^(acc|accel|accelerometer|acceleration|gyr|gyro|gyroscope|mag|magnetometer)([xyz])$")


def _tokens(name: str) -> list[str]:
    """Split a column name on separators and camelCase: 'accelerometerAccelerationX(G)' ->
    ['accelerometer', 'acceleration', 'x', 'g']."""
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def _sensor_of(tok: str) -> str | None:
    if tok.startswith("acc"):
        return "acc"
    if tok.startswith("gyr") or tok in ("rotationrate", "angularvelocity"):
        return "gyro"
    if tok.startswith("mag"):
        return "mag"
    return None


def classify(name: str) -> tuple[str, str] | None:
    """(sensor, axis) of an IMU column name — sensor acc/gyro/mag, axis x/y/z — or None."""
    norm = cols.norm_name(name)
    if norm in _SHORT:
        return _SHORT[norm]
    toks = _tokens(name)
    if not toks or "gravity" in toks:
        return None
    m = _SENSOR_PREFIX.match(toks[0]) if len(toks) <= 2 else None
    if m:  # 'accx', 'gyroz', 'AccX (g)'
        return _sensor_of(m.group(1)) or "acc", m.group(2)
    sensor = next((s for s in map(_sensor_of, toks) if s), None)
    if sensor is None and "rotation" in toks:
        sensor = "gyro"  # gyroRotationX, rotationRateX
    axes = [t for t in toks if t in ("x", "y", "z")]
    if sensor and axes:
        return sensor, axes[-1]
    return None


def find_imu_columns(names: list[str]) -> dict[str, dict[str, int]]:
    """Column index per sensor and axis; the first complete-looking set wins for each sensor."""
    out: dict[str, dict[str, int]] = {}
    for i, n in enumerate(names):
        c = classify(n)
        if c:
            out.setdefault(c[0], {}).setdefault(c[1], i)
    return out


def infer_unit(dt: float) -> str | None:
    for unit, scale in cols.UNIT_SECONDS.items():
        if 1.0 <= 1.0 / (dt * scale) <= 20000.0:
            return unit
    return None


@dataclass
class ImuConfig(ModalityConfig):
    rate: float = 200.0  # assumed input rate when there is no time column (Hz)
    max_windows: int = 256  # whole-file sample: more 10 s windows -> this many, uniformly spaced; 0 = all
    window: float = 0.0  # seconds; > 0: one sample per window (#t=START seconds), 0 = whole file
    stride: float = 0.0  # seconds between window starts; 0 = window


class ImuTokenizer(Tokenizer):
    """Conv1d(6, D, 8, stride 8, no bias) + sinusoidal positions + CLS + LayerNorm (ImageBind).

    Inputs: ``imu`` [R, 6, 2000] z-scored, ``valid`` [R] real samples per row.
    """

    def __init__(self, spec, seed: int):
        super().__init__()
        d = spec.dim
        with seeded(seed):
            self.proj = nn.Conv1d(6, d, PATCH, PATCH, bias=False)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.init, self.seed = "seeded", seed

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        x = self.proj(inputs["imu"].to(self.proj.weight.dtype)).transpose(1, 2)  # [R, N, D]
        r, n, d = x.shape
        x = x + sinusoidal(torch.arange(n, device=x.device), d).to(x.dtype)
        x = self.norm_pre(torch.cat([self.cls.expand(r, 1, d), x], dim=1))
        valid = inputs["valid"].to(x.device).long()
        pad = torch.arange(n, device=x.device)[None] * PATCH >= valid[:, None]
        if not bool(pad.any()):
            return Tokens(x, None, True)
        return Tokens(x, torch.cat([torch.zeros(r, 1, dtype=torch.bool, device=x.device), pad], 1), True)


def _to_seconds(t: np.ndarray, unit: str | None, meta: dict) -> np.ndarray:
    d = np.diff(t)
    d = d[np.isfinite(d) & (d > 0)]
    if unit is None:
        unit = infer_unit(float(np.median(d))) if d.size else "s"
        meta["time_unit"] = f"{unit or 's'} (inferred from the median step)"
        unit = unit or "s"
    else:
        meta["time_unit"] = f"{unit} (from the column name)"
    return (t - t[np.isfinite(t)].min()) * cols.UNIT_SECONDS[unit]


def _starts(steps: int, span: int, hop: int) -> list[int]:
    return list(range(0, max(steps - span, 0) + 1, hop))


def _windows(z: np.ndarray, max_windows: int, meta: dict) -> dict[str, np.ndarray]:
    """[6, T] -> {"imu": [S, 6, 2000], "valid": [S]}: 2000-sample windows, the last aligned to the
    end (or zero-padded when T < 2000), at most ``max_windows`` spaced uniformly (0 = all)."""
    steps = z.shape[1]
    starts = _starts(steps, WINDOW, WINDOW)
    if starts[-1] + WINDOW < steps:
        starts.append(steps - WINDOW)
        meta["last_window_overlap_samples"] = starts[-2] + WINDOW - starts[-1]
    if 0 < max_windows < len(starts):
        pick = np.unique(np.round(np.linspace(0, len(starts) - 1, max_windows)).astype(int))
        meta["windows_subsampled"] = f"{len(starts)} windows -> {len(pick)} spaced uniformly"
        starts = [starts[i] for i in pick]
    wins, valid = [], []
    for s in starts:
        w = z[:, s:s + WINDOW]
        valid.append(w.shape[1])
        if w.shape[1] < WINDOW:
            meta["padded"] = f"{w.shape[1]} samples zero-padded to {WINDOW} (padding tokens masked)"
            w = np.pad(w, ((0, 0), (0, WINDOW - w.shape[1])))
        wins.append(w)
    meta["window_starts_s"] = [s / RATE for s in starts]
    return {"imu": np.stack(wins), "valid": np.array(valid, np.int32)}


def repair_time(t: np.ndarray, x: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Drop rows without a time, sort (stable), drop repeated timestamps; record what was done."""
    repairs = []
    ok = np.isfinite(t)
    if not ok.all():
        repairs.append(f"dropped {int((~ok).sum())} rows without a timestamp")
        t, x = t[ok], x[ok]
    back = int(np.sum(np.diff(t) < 0))
    if back:
        order = np.argsort(t, kind="stable")
        t, x = t[order], x[order]
        repairs.append(f"sorted: timestamps went backwards {back} times")
    dup = np.concatenate([[False], np.diff(t) == 0])
    if dup.any():
        t, x = t[~dup], x[~dup]
        repairs.append(f"dropped {int(dup.sum())} rows with a repeated timestamp (first kept)")
    if repairs:
        meta["repairs"] = repairs
    if t.size < 2:
        raise DecodeError("fewer than 2 samples with distinct timestamps; cannot find a sample rate")
    return t, x


def to_200hz(x: np.ndarray, t: np.ndarray | None, rate: float, meta: dict) -> np.ndarray:
    """[T, C] samples (+ seconds) -> [T', C] on a uniform 200 Hz grid (band-limited, soxr)."""
    if t is not None:
        dt = np.diff(t)
        rate = 1.0 / float(np.median(dt))
        meta["measured_rate_hz"] = round(rate, 4)
        gap = float(dt.max())
        if gap > 5 / rate:
            meta["largest_gap_s"] = round(gap, 6)
        n = int(np.floor((t[-1] - t[0]) * rate + 1e-9)) + 1
        grid = t[0] + np.arange(n) / rate
        x = np.stack([np.interp(grid, t, x[:, c]) for c in range(x.shape[1])], axis=1)
    else:
        meta["assumed_rate_hz"] = rate
    if abs(rate - RATE) > 1e-3 * RATE:
        import soxr

        x = soxr.resample(np.ascontiguousarray(x, dtype=np.float64), rate, RATE, quality="HQ")
        meta["resampled"] = f"soxr HQ {rate:.4g} Hz -> {RATE} Hz"
    return np.asarray(x, dtype=np.float64)


@register_modality
class imu(Modality):  # noqa: N801 - class name == registry key == module name
    name = "imu"
    extensions = (".csv", ".tsv", ".npy")
    summary = "accelerometer/gyroscope CSV (x-io, phone loggers), NPY with a hint -> 10 s windows"
    tokens = "1 + 250 per 10 s window at 200 Hz (251)"
    clip_init = False
    Config = ImuConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        if head.startswith(b"\x93NUMPY"):
            hint = cols.path_has_hint(path, HINTS)
            h = cols.read_npy_header(head)
            if hint and h and len(h[0]) == 2 and h[1].kind in "biuf" and (
                    h[0][1] in (3, 6, 9) or h[0][0] in (3, 6, 9)):
                return Evidence(self.name, REFINED + 2, f"array of shape {h[0]} with path hint {hint!r}")
            return None
        t = cols.sniff_table(head, min_columns=3)
        if t is None or not t.header:
            return None
        found = find_imu_columns(t.names)
        acc = found.get("acc", {})
        if len(acc) < 3:
            return None
        names = ", ".join(t.names[i] for i in acc.values())
        extra = " and gyroscope" if len(found.get("gyro", {})) == 3 else ""
        return Evidence(self.name, REFINED + 2, f"CSV with accelerometer columns {names}{extra}")

    def load(self, path: Path, cfg: ImuConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        x, t, meta = read_imu(path)
        if t is not None:
            t = _to_seconds(t, meta.pop("_unit"), meta)
            t, x = repair_time(t, x, meta)
        else:
            meta.pop("_unit", None)
        # Missing values: interpolate along time (edges take the nearest value).
        for c in range(x.shape[1]):
            bad = ~np.isfinite(x[:, c])
            if bad.all():
                raise DecodeError(f"channel {meta['channels'][c]} has no numeric values")
            if bad.any():
                idx = np.arange(x.shape[0])
                x[bad, c] = np.interp(idx[bad], idx[~bad], x[~bad, c])
                meta.setdefault("interpolated_values", 0)
                meta["interpolated_values"] += int(bad.sum())
        x = to_200hz(x, t, cfg.rate, meta)
        mean, std = x.mean(axis=0), x.std(axis=0)
        meta["zscore"] = {"mean": mean.tolist(), "std": std.tolist()}
        z = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
        if z.shape[1] == 3:
            z = np.concatenate([z, np.zeros_like(z)], axis=1)
            meta["gyro"] = "missing: zero channels"
        z = np.ascontiguousarray(z.T)  # [6, T]
        steps = z.shape[1]
        meta["samples_200hz"] = steps
        meta["duration_s"] = round(steps / RATE, 4)
        if cfg.window > 0:
            span = max(1, round(cfg.window * RATE))
            hop = max(1, round((cfg.stride or cfg.window) * RATE))
            outer = _starts(steps, span, hop)
            if outer[-1] + span < steps:
                outer.append(steps - span)
            for o in outer:
                m = dict(meta, window_s=[o / RATE, min(o + span, steps) / RATE])
                arrays = _windows(z[:, o:o + span], 0, m)
                yield Sample(f"t={o / RATE:g}", arrays, m)
            return
        yield Sample("", _windows(z, cfg.max_windows, meta), meta)

    def cost(self, sample: Sample, spec, cfg) -> int:
        return 1 + sample.arrays["imu"].shape[-1] // PATCH

    def tokenizer(self, spec, front, cfg):
        return ImuTokenizer(spec, self.seed(spec, cfg))


def read_imu(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """-> ([T, 3 or 6] acc(+gyro) values, raw time values or None, meta with ``_unit``)."""
    from ..sniff import read_head

    head = read_head(path, cols.HEAD_LIMIT)
    if head.startswith(b"\x93NUMPY") or path.suffix.lower() in (".npy", ".npz"):
        a = cols.load_array(path)
        meta: dict = {"format": "npy", "shape": list(a.shape), "dtype": str(a.dtype), "_unit": None}
        if a.ndim == 2 and a.shape[1] not in (3, 6, 9) and a.shape[0] in (3, 6, 9):
            a = a.T
            meta["transposed"] = "channels-first array read as (T, C)"
        if a.ndim != 2 or a.shape[1] not in (3, 6, 9):
            raise DecodeError(f"array of shape {a.shape}: IMU arrays must be (T, 3|6|9) "
                              "as [acc xyz, gyro xyz, mag xyz]")
        a = a[:, :6].astype(np.float64)
        meta["channels"] = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"][:a.shape[1]]
        return a, None, meta
    table = cols.sniff_table(head, min_columns=3)
    if table is None or not table.header:
        raise DecodeError("not a CSV with a header row (IMU columns are found by name)")
    found = find_imu_columns(table.names)
    acc, gyro = found.get("acc", {}), found.get("gyro", {})
    if len(acc) < 3:
        raise DecodeError(f"no accelerometer x/y/z columns among: {', '.join(table.names)[:200]}; "
                          "expected names like acc_x, ax, 'Accelerometer X (g)'")
    use = [acc[a] for a in "xyz"] + ([gyro[a] for a in "xyz"] if len(gyro) == 3 else [])
    names = [table.names[i] for i in use]
    taken = set(use) | {i for s in found.values() for i in s.values()}
    tc = cols.find_time_column(table, require_monotonic=False)
    if tc is not None and tc.index in taken:
        tc = None
    data, t = cols.read_csv_columns(path, table, names, tc)
    x = np.stack([data[n] for n in names], axis=1)
    if x.shape[0] < 2:
        raise DecodeError(f"only {x.shape[0]} data row(s); an IMU recording needs at least 2")
    meta = {"format": "CSV", "channels": names, "time_column": tc.name if tc else None,
            "_unit": (tc.unit if tc is not None and tc.kind == "numeric" else "s")}
    if "mag" in found:
        meta["magnetometer"] = "present, not used (the tokenizer takes acc + gyro)"
    return x, t, meta
