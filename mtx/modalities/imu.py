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
from ..settings import setting
from . import _budget
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
    sniffed_or_read,
)
from ._registry import register_modality

RATE = 200
WINDOW = 2000
PATCH = 8
GAP_SECONDS = 1.0  # a step longer than this and than GAP_STEPS median steps splits the recording
GAP_STEPS = 10
MIN_SEGMENT_ROWS = 2  # shorter pieces between gaps (isolated outlier timestamps) are dropped
VALUE_BYTES = 48  # held per value (channel x sample) while resampling: float64 grid + copies
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
    rate: float = setting(200.0, above=0)  # assumed input rate when there is no time column (Hz)
    max_windows: int = setting(256, lo=0)  # whole-file sample: more 10 s windows -> this many, uniformly spaced; 0 = all
    window: float = setting(0.0, lo=0, flag="--window")  # seconds; > 0: one sample per window (#t=START seconds), 0 = whole file (--window)
    stride: float = setting(0.0, lo=0, flag="--stride")  # seconds between window starts; 0 = window (--stride)


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


def _windows(segs: list[np.ndarray], offsets: list[int], max_windows: int, meta: dict) -> dict[str, np.ndarray]:
    """Segments [6, T] (starting ``offsets`` samples after the recording's start) -> {"imu": [S, 6,
    2000], "valid": [S]}: 2000-sample windows inside each segment (never across a gap), the last of
    a segment aligned to its end (or zero-padded when it is shorter than 2000), at most
    ``max_windows`` spaced uniformly over all of them (0 = all)."""
    starts: list[tuple[int, int]] = []  # (segment, start sample in it)
    for i, z in enumerate(segs):
        steps = z.shape[1]
        mine = _starts(steps, WINDOW, WINDOW)
        if mine[-1] + WINDOW < steps:
            mine.append(steps - WINDOW)
            meta["last_window_overlap_samples"] = mine[-2] + WINDOW - mine[-1]
        starts += [(i, s) for s in mine]
    if 0 < max_windows < len(starts):
        pick = np.unique(np.round(np.linspace(0, len(starts) - 1, max_windows)).astype(int))
        meta["windows_subsampled"] = f"{len(starts)} windows -> {len(pick)} spaced uniformly"
        starts = [starts[i] for i in pick]
    wins, valid = [], []
    for i, s in starts:
        w = segs[i][:, s:s + WINDOW]
        valid.append(w.shape[1])
        if w.shape[1] < WINDOW:
            meta["padded"] = f"{w.shape[1]} samples zero-padded to {WINDOW} (padding tokens masked)"
            w = np.pad(w, ((0, 0), (0, WINDOW - w.shape[1])))
        wins.append(w)
    meta["window_starts_s"] = [(offsets[i] + s) / RATE for i, s in starts]
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


def split_at_gaps(t: np.ndarray, meta: dict) -> tuple[list[tuple[int, int]], float]:
    """Cut sorted timestamps where a step exceeds the gap bound: ``([(first row, end row)], rate)``.

    The bound is ``max(GAP_SECONDS, GAP_STEPS x the median step)``: a window never spans a longer
    gap, and memory follows the rows, not the time span. Pieces of fewer than MIN_SEGMENT_ROWS
    rows (an isolated timestamp written as 0, or a day off) are dropped. All recorded in meta.
    """
    dt = np.diff(t)
    med = float(np.median(dt))
    bound = max(GAP_SECONDS, GAP_STEPS * med)
    cuts = np.flatnonzero(dt > bound) + 1
    edges = [0, *cuts.tolist(), len(t)]
    pieces = [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    kept = [(a, b) for a, b in pieces if b - a >= MIN_SEGMENT_ROWS]
    dropped = sum(b - a for a, b in pieces if b - a < MIN_SEGMENT_ROWS)
    if len(cuts):
        big = np.sort(dt[cuts - 1])[::-1]
        meta["gaps"] = {"bound_s": round(bound, 6), "count": int(len(cuts)),
                        "largest_s": [round(float(g), 6) for g in big[:5]]}
    if dropped:
        meta["isolated_rows_dropped"] = (f"{dropped} row(s) more than {bound:.6g} s from any other "
                                         "(outlier timestamps)")
    if not kept:
        raise DecodeError(f"no two timestamps lie within {bound:.6g} s of each other: no stretch of "
                          "recording to resample")
    inner = np.concatenate([np.diff(t[a:b]) for a, b in kept])
    rate = 1.0 / float(np.median(inner))
    meta["measured_rate_hz"] = round(rate, 4)
    largest = float(inner.max())
    if largest > 5 / rate:
        meta["largest_gap_s"] = round(largest, 6)  # interpolated over (below the bound)
    return kept, rate


def to_200hz(x: np.ndarray, t: np.ndarray | None, rate: float, meta: dict) -> list[tuple[float, np.ndarray]]:
    """[T, C] samples (+ seconds) -> segments ``(start s, [T', C])`` on uniform 200 Hz grids
    (band-limited, soxr); start = seconds after the first kept timestamp.

    With timestamps the recording is first cut at gaps (:func:`split_at_gaps`); each piece is
    interpolated onto a uniform grid at the measured rate and resampled on its own, so memory
    follows the data, never the span between the first and the last timestamp."""
    if t is None:
        meta["assumed_rate_hz"] = rate
        _budget.check(x.shape[0] * max(1.0, RATE / rate), f"samples x {x.shape[1]} channels at {RATE} Hz",
                      VALUE_BYTES * x.shape[1])
        pieces, starts = [x], [0.0]
    else:
        spans, rate = split_at_gaps(t, meta)
        grids = [int(np.floor((t[b - 1] - t[a]) * rate + 1e-9)) + 1 for a, b in spans]
        total = sum(grids) * max(1.0, RATE / rate)
        _budget.check(total, f"samples x {x.shape[1]} channels once resampled (the recording's stretches "
                      f"between gaps, at {max(rate, RATE):.6g} Hz)", VALUE_BYTES * x.shape[1])
        pieces = []
        for (a, b), n in zip(spans, grids, strict=True):
            grid = t[a] + np.arange(n) / rate
            pieces.append(np.stack([np.interp(grid, t[a:b], x[a:b, c]) for c in range(x.shape[1])], axis=1))
        starts = [float(t[a] - t[spans[0][0]]) for a, _ in spans]
        if len(pieces) > 1:
            meta["segments"] = len(pieces)
            meta["segment_starts_s"] = [round(v, 6) for v in starts[:16]]
    if abs(rate - RATE) > 1e-3 * RATE:
        import soxr

        pieces = [soxr.resample(np.ascontiguousarray(p, dtype=np.float64), rate, RATE, quality="HQ")
                  for p in pieces]
        meta["resampled"] = f"soxr HQ {rate:.4g} Hz -> {RATE} Hz"
    kept = [(s0, np.asarray(p, dtype=np.float64)) for s0, p in zip(starts, pieces, strict=True) if p.shape[0]]
    if not kept:
        raise DecodeError(f"the recording holds no sample at {RATE} Hz: its {x.shape[0]:,} rows span "
                          f"{_seconds(x, t)} (a measured rate of {rate:.6g} Hz); nothing to embed")
    if len(kept) < len(pieces):
        meta["segments_without_a_200hz_sample"] = len(pieces) - len(kept)
    return kept


def _seconds(x: np.ndarray, t: np.ndarray | None) -> str:
    if t is None:
        return f"{x.shape[0]} samples"
    d = float(t[-1] - t[0])
    for unit, k in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if d >= k or unit == "ns":
            return f"{d / k:.4g} {unit}"
    return f"{d:g} s"


@register_modality
class imu(Modality):  # noqa: N801 - class name == registry key == module name
    """Accelerometer and gyroscope recordings become 6-channel, 200 Hz windows of 10 s — **251 tokens**
    per window (CLS + 250), the ImageBind / Ego4D IMU input; the windows of a recording are averaged
    into one vector.

    ## Which files

    - CSV with at least three **accelerometer-named** columns — x-io / NGIMU (`Accelerometer X (g)`,
      `Gyroscope X (deg/s)`), short names (`ax ay az gx gy gz`), `acc_x` / `accel_x` / `AccX`,
      SensorLog (`accelerometerAccelerationX(G)`, `gyroRotationX(rad/s)`). This is the strongest rung
      of the CSV ladder (it beats [time_series](time_series.md) and [tabular](tabular.md)); the
      reason names the columns.
    - NPY arrays with an IMU path hint (`imu`, `accelerometer`, `gyro`, `inertial`, ...).

    Magnetometer columns are recognised but not used: the tokenizer takes [acc xyz, gyro xyz], as
    ImageBind. A missing gyroscope gives zero channels (recorded). Units do not matter: every
    channel is z-scored.

    ## From file to windows

    1. **Sample rate** from the time column — units from its name (`(s)`, `_ms`, `us`, `ns`, ...) or,
       when the name says nothing, from the median step (the first of s/ms/us/ns giving 1 Hz–20 kHz);
       without a time column, 200 Hz (`-O imu.rate`).
    2. Timestamps that go backwards are repaired: rows sorted (stable), repeated timestamps dropped,
       both counted in `meta["repairs"]` — logger glitches are common and should not abort a run.
    3. **Gaps split the recording**: wherever a step exceeds max(1 s, 10 median steps) the recording
       is cut (`gaps` recorded), a stretch of a single row — an outlier timestamp written as 0, or a
       day off — is dropped (`isolated_rows_dropped`), and no window spans a cut. Memory follows the
       rows, never the time between the first and the last timestamp.
    4. Each stretch: linear interpolation onto a uniform grid at the measured rate (absorbing jitter
       and shorter gaps; the largest recorded), then **band-limited resampling to 200 Hz** with
       soxr; then a per-channel z-score (statistics recorded). A recording with nothing left at
       200 Hz (1,000 rows 1 ns apart), with every channel constant, or with a channel without a
       number is a failure, never zeros.
    5. **Windows** of 2000 samples (10 s); a longer stretch ends with a window aligned to its end
       (overlapping, nothing dropped); a shorter one is zero-padded and the tokens made only of
       padding are masked. More than 256 windows are reduced to 256 spaced uniformly (recorded).
    6. `--window W [--stride S]` (seconds) gives one sample per W seconds, ids `FILE#t=START`.

    ## Tokens

    `ImuTokenizer` (ImageBind): Conv1d(6, D, kernel 8, stride 8, no bias) → 250 tokens per window,
    + sinusoidal positions + CLS + LayerNorm.

    ## Weights and pooling

    `init=seeded`; **mean** pooling over the non-padding tokens, then over windows.

    ## Try it

    ```
    mtx tokenize ../shared/data/imu/xio_fusion_sensor_data.csv
    ```
    """

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
                return Evidence(self.name, REFINED + 2, f"array of shape {h[0]} with path hint {hint!r}",
                                imu_format(head, path))
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
        return Evidence(self.name, REFINED + 2, f"CSV with accelerometer columns {names}{extra}",
                        imu_format(head, path))

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, seconds: float = 10.0, rate: int = 200) -> list[Path]:
        """``n`` CSV recordings at ``rate`` Hz: time, accelerometer and gyroscope xyz."""
        rng, out = np.random.default_rng(10), []
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

    def degenerate(self, d: Path) -> list[Path]:
        """1,000 rows 1 ns apart (nothing left at 200 Hz); a recording whose every channel is
        constant; an accelerometer channel that is all NaN."""
        rows = 1000
        ns, flat, nan = d / "imu_ns.csv", d / "imu_flat.csv", d / "imu_nan.csv"
        head = "time,acc_x,acc_y,acc_z\n"
        ns.write_text(head + "".join(f"{i * 1e-9!r},0.1,{i % 7 * 0.1:.1f},1.0\n" for i in range(rows)))
        flat.write_text(head + "".join(f"{i / 100},0.0,0.0,1.0\n" for i in range(rows)))
        nan.write_text(head + "".join(f"{i / 100},nan,0.2,1.0\n" for i in range(rows)))
        return [ns, flat, nan]

    def load(self, path: Path, cfg: ImuConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        x, t, meta = read_imu(path, sniffed)
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
        if not (np.ptp(x, axis=0) > 0).any():
            raise DecodeError(f"every channel is constant ({', '.join(f'{v:.6g}' for v in x[0])}): nothing is "
                              "left after the per-channel z-score")
        kept = to_200hz(x, t, cfg.rate, meta)
        pieces = [p for _, p in kept]
        allx = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        mean, std = allx.mean(axis=0), allx.std(axis=0)
        meta["zscore"] = {"mean": mean.tolist(), "std": std.tolist()}
        del allx
        segs = []
        for p in pieces:
            z = ((p - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
            if z.shape[1] == 3:
                z = np.concatenate([z, np.zeros_like(z)], axis=1)
                meta["gyro"] = "missing: zero channels"
            segs.append(np.ascontiguousarray(z.T))  # [6, T]
        steps = sum(z.shape[1] for z in segs)
        meta["samples_200hz"] = steps
        meta["duration_s"] = round(steps / RATE, 4)
        offsets = [round(s0 * RATE) for s0, _ in kept]
        if cfg.window > 0:
            span = max(1, round(cfg.window * RATE))
            hop = max(1, round((cfg.stride or cfg.window) * RATE))
            for z, off in zip(segs, offsets, strict=True):
                n = z.shape[1]
                outer = _starts(n, span, hop)
                if outer[-1] + span < n:
                    outer.append(n - span)
                for o in outer:
                    m = dict(meta, window_s=[(off + o) / RATE, (off + min(o + span, n)) / RATE])
                    arrays = _windows([z[:, o:o + span]], [off + o], 0, m)
                    yield Sample(f"t={(off + o) / RATE:g}", arrays, m)
            return
        yield Sample("", _windows(segs, offsets, cfg.max_windows, meta), meta)

    def cost(self, sample: Sample, spec, cfg) -> int:
        return 1 + sample.arrays["imu"].shape[-1] // PATCH

    def content_reason(self, sample: Sample) -> str | None:
        if (sample.arrays["valid"] <= 0).any():
            return "a window holds no sample at 200 Hz (only padding)"
        return None

    def tokenizer(self, spec, front, cfg):
        return ImuTokenizer(spec, self.seed(spec, cfg))


def imu_format(head: bytes, path: Path) -> str:
    """npy | csv: how ``read_imu`` reads the file (an .npy/.npz name is read as an array)."""
    return "npy" if head.startswith(b"\x93NUMPY") or path.suffix.lower() in (".npy", ".npz") else "csv"


def read_imu(path: Path, sniffed: Sniffed | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """-> ([T, 3 or 6] acc(+gyro) values, raw time values or None, meta with ``_unit``)."""
    known = sniffed_or_read(path, sniffed)
    head = known.head[:cols.HEAD_LIMIT]
    fmt = known.format or imu_format(head, path)
    if fmt == "npy":
        a = cols.load_array(path, VALUE_BYTES)
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
    data, t = cols.read_csv_columns(path, table, names, tc, VALUE_BYTES)
    x = np.stack([data[n] for n in names], axis=1)
    if x.shape[0] < 2:
        raise DecodeError(f"only {x.shape[0]} data row(s); an IMU recording needs at least 2")
    meta = {"format": "CSV", "channels": names, "time_column": tc.name if tc else None,
            "_unit": (tc.unit if tc is not None and tc.kind == "numeric" else "s")}
    if "mag" in found:
        meta["magnetometer"] = "present, not used (the tokenizer takes acc + gyro)"
    return x, t, meta
