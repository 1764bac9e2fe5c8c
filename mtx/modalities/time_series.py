"""time_series: CSV/TSV/Parquet with a time column, NPY/NPZ with a hint -> PatchTST tokens.

Preprocessing (MODALITIES.md "time_series"): rows sorted by time (stable), missing values
linearly interpolated along the time axis (edges take the nearest value), each channel z-scored
(mean/std recorded). Tokens: every channel is cut into patches of 16 steps with stride 8 (as
PatchTST, channel independent) -> one shared Linear(16 -> D) + a channel embedding + a
sinusoidal position of the patch index, + CLS: ``1 + C * floor((T - 16) / 8 + 1)`` tokens
(96 steps x 7 channels -> 78). A series shorter than 16 steps is zero-padded (after the z-score)
to 16. A series whose tokens would exceed ``max_tokens`` is resampled by block means (area
resampling) to the longest length that fits — recorded in meta, never silently truncated.

``window > 0`` yields one sample per window of ``window`` steps every ``stride`` steps (default:
``window``), keyed ``t=START`` where START is the step index (after sorting) of the window's
first step; a last window that would run past the end is aligned to end at the last step.
The sniffing ladder for CSV-like files is documented in :mod:`mtx.modalities._columns`.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DecodeError
from ..settings import setting
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

HINTS = ("time_series", "timeseries", "series", "ts", "signal", "signals", "sensor", "sensors",
         "forecast", "forecasting")
VALUE_BYTES = 40  # held per value (step x channel): float64 read, sorted/filled copy, z-score, float32
MAX_CHANNELS = 2047  # a channel-embedding row each; more channels cannot fit the token cap anyway


def n_tokens(steps: int, channels: int, patch: int = 16, stride: int = 8) -> int:
    return 1 + channels * ((max(steps, patch) - patch) // stride + 1)


@dataclass
class TimeSeriesConfig(ModalityConfig):
    window: int = setting(0, lo=0, flag="--window")  # steps per sample (#t=START); 0 = the whole series is one sample (--window)
    stride: int = setting(0, lo=0, flag="--stride")  # steps between window starts; 0 = window (--stride)
    patch: int = setting(16, lo=1)  # steps per patch token
    patch_stride: int = setting(8, lo=1)  # steps between patch starts
    max_tokens: int = setting(2048, lo=2)  # longer series are resampled along time to fit (recorded)
    time_column: str = setting("")  # force the time column (CSV/Parquet); "" = detect


def _sort_and_fill(values: np.ndarray, t: np.ndarray | None, meta: dict
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Sort rows by time, drop rows without a time, interpolate missing values per channel."""
    if t is not None:
        keep = np.isfinite(t)
        if not keep.all():
            meta["rows_without_time_dropped"] = int((~keep).sum())
            values, t = values[keep], t[keep]
        step = np.diff(t)
        if t.size > 1 and np.all(step <= 0) and np.any(step < 0):
            values, t = np.ascontiguousarray(values[::-1]), np.ascontiguousarray(t[::-1])
            meta["time_reversed"] = "rows run newest first in the file: reversed to oldest first"
        elif t.size > 1 and np.any(step < 0):
            order = np.argsort(t, kind="stable")
            meta["sorted_by_time"] = f"{int(np.sum(step < 0))} out-of-order steps"
            values, t = values[order], t[order]
    x = np.arange(values.shape[0], dtype=np.float64) if t is None else t
    filled = 0
    for c in range(values.shape[1]):
        col = values[:, c]
        bad = ~np.isfinite(col)
        if bad.any() and not bad.all():
            col[bad] = np.interp(x[bad], x[~bad], col[~bad])
            filled += int(bad.sum())
    if filled:
        meta["interpolated_values"] = filled
    return values, t


def preprocess(values: np.ndarray, t: np.ndarray | None, names: list[str], meta: dict
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """[T, C] raw channels (+ time) -> [C, T] z-scored float32 (+ sorted time)."""
    values = np.array(values, dtype=np.float64, copy=True)
    values, t = _sort_and_fill(values, t, meta)
    empty = [i for i in range(values.shape[1]) if not np.isfinite(values[:, i]).any()]
    if empty:
        meta["empty_channels_dropped"] = [names[i] for i in empty]
        keep = [i for i in range(values.shape[1]) if i not in empty]
        values, names = values[:, keep], [names[i] for i in keep]
    if values.shape[1] == 0 or values.shape[0] == 0:
        raise DecodeError("no numeric values to embed (every channel is empty)")
    if values.shape[1] > MAX_CHANNELS:
        raise DecodeError(f"{values.shape[1]} channels exceed {MAX_CHANNELS}; "
                          "embed it as a table with --modality tabular")
    mean, std = values.mean(axis=0), values.std(axis=0)
    if not (std > 0).any():
        raise DecodeError(f"every channel is constant over its {values.shape[0]:,} steps: nothing is left after "
                          "the per-channel z-score")
    std_safe = np.where(std > 0, std, 1.0)
    meta["channels"] = names
    meta["zscore"] = {"mean": mean.tolist(), "std": std.tolist()}
    return ((values - mean) / std_safe).T.astype(np.float32), t


def fit_tokens(x: np.ndarray, cfg: TimeSeriesConfig, meta: dict) -> np.ndarray:
    """Pad [C, T] to >= ``patch`` steps; resample (block means) to fit ``max_tokens``."""
    c, steps = x.shape
    if steps < cfg.patch:
        meta["padded"] = f"{steps} steps zero-padded to {cfg.patch} (after the z-score)"
        return np.pad(x, ((0, 0), (0, cfg.patch - steps)))
    per = (cfg.max_tokens - 1) // c  # patches per channel that fit
    if per < 1:
        raise DecodeError(f"{c} channels do not fit {cfg.max_tokens} tokens; raise max_tokens")
    if n_tokens(steps, c, cfg.patch, cfg.patch_stride) <= cfg.max_tokens:
        return x
    target = cfg.patch + cfg.patch_stride * (per - 1)
    y = F.adaptive_avg_pool1d(torch.from_numpy(x)[None], target)[0].numpy()
    meta["resampled"] = (f"{steps} -> {target} steps by block means to fit max_tokens={cfg.max_tokens} "
                         f"({c} channels)")
    return np.ascontiguousarray(y, dtype=np.float32)


def _npz_shapes(path: Path) -> list[tuple[int, ...]]:
    """Shapes of the arrays in an .npz, from each member's npy header (bounded reads)."""
    out = []
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist()[:64]:
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        h = cols.read_npy_header(f.read(256))
                    if h:
                        out.append(h[0])
    except (zipfile.BadZipFile, OSError, EOFError):
        return []
    return out


def _series_shape(shape: tuple[int, ...]) -> bool:
    return (len(shape) == 1 and shape[0] >= 2) or (len(shape) == 2 and max(shape) >= 2 and min(shape) >= 1)


class PatchTSTTokenizer(Tokenizer):
    """Channel-independent patches (PatchTST): Linear(patch -> D) shared by all channels
    + channel embedding + sinusoidal patch position, + CLS, + LayerNorm. Input ``series`` [R, C, T]."""

    def __init__(self, spec, seed: int, patch: int, stride: int):
        super().__init__()
        d = spec.dim
        self.patch, self.stride = patch, stride
        with seeded(seed):
            self.proj = nn.Linear(patch, d)
            self.channel = nn.Embedding(MAX_CHANNELS, d)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.init, self.seed = "seeded", seed

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        x = inputs["series"].to(self.proj.weight.dtype)  # [R, C, T]
        r, c, _ = x.shape
        p = x.unfold(-1, self.patch, self.stride)  # [R, C, P, patch]
        n = p.shape[2]
        tok = self.proj(p) + self.channel.weight[:c][None, :, None]
        tok = tok + sinusoidal(torch.arange(n, device=x.device), tok.shape[-1]).to(tok.dtype)
        tok = tok.reshape(r, c * n, -1)
        tok = torch.cat([self.cls.expand(r, 1, -1), tok], dim=1)
        return Tokens(self.norm_pre(tok), None, True)


@register_modality
class time_series(Modality):  # noqa: N801 - class name == registry key == module name
    """A multivariate series becomes **PatchTST** tokens: every channel is cut into patches of 16 steps
    with stride 8 — `1 + C × ⌊(T − 16)/8 + 1⌋` tokens (96 steps × 7 channels → 78), capped at 2048.

    ## Which files

    - CSV/TSV/Parquet with a **time column** — datetime strings in any layout dateutil reads
      (`2003-09-19`, `19-Sep-03`, `Sep 19 2003`, `19 September 2003`, `19.09.2003 14:30`,
      `9/19/2003 2:30 PM`; the format is inferred once from a few cells, then the column is parsed
      vectorised), or a numeric column named like `t`, `time`, `timestamp`, `date`, `year` that rises
      or falls monotonically — and at least one other numeric column (decimal commas are read
      when the delimiter is not `,`) (`refined` evidence: beats [tabular](tabular.md), loses to [imu](imu.md)'s
      accelerometer columns).
    - NPY/NPZ of shape (T,) or (T, C) with a path hint (`time_series`, `timeseries`, `signal`,
      `sensor`, ...).

    ## From file to channels

    1. Rows sorted by time (stable); a file that lists the newest rows first is reversed (recorded as
       `time_reversed`); rows without a time dropped.
    2. Missing values linearly interpolated along time (edges take the nearest value) — gaps should
       not become zeros.
    3. Each channel **z-scored** (mean/std recorded): channels in different units share one scale, and
       the encoder sees shape, not magnitude (the PatchTST/RevIN practice).
    4. Shorter than 16 steps: zero-padded (after the z-score) to one patch. More tokens than 2048:
       the series is resampled by block means (area resampling) to the longest length that fits —
       recorded, never silently truncated.
    5. `--window W [--stride S]` (steps) gives one sample per window, ids `FILE#t=START`; the last
       window is aligned to end at the last step, so nothing is dropped.

    ## Tokens

    `PatchTSTTokenizer` (channel independent, as PatchTST): one Linear(16 → D) shared by all
    channels + a channel embedding + a sinusoidal position of the patch index, + CLS, + LayerNorm.
    Sharing the patch projection across channels lets any number of channels work with one set of
    weights.

    ## Weights and pooling

    `init=seeded`; **mean** pooling.

    ## Try it

    ```
    mtx tokenize sensors/weather.csv -O time_series.window=96
    ```
    """

    name = "time_series"
    extensions = (".csv", ".tsv", ".parquet", ".npy", ".npz")
    summary = "CSV/TSV/Parquet with a time column, NPY/NPZ with a hint -> PatchTST patch tokens"
    tokens = "1 + C x floor((T-16)/8 + 1) (96 steps x 7 channels -> 78), capped at 2048"
    clip_init = False
    Config = TimeSeriesConfig

    # -- sniffing ------------------------------------------------------------------------------
    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        fmt = series_format(head, path)  # what read_series will read it as
        if head[:4] == b"PAR1":
            return self._sniff_parquet(path, fmt)
        if head.startswith(b"\x93NUMPY") or head[:4] == b"PK\x03\x04":
            hint = cols.path_has_hint(path, HINTS)
            if not hint:
                return None
            if head.startswith(b"\x93NUMPY"):
                h = cols.read_npy_header(head)
                shapes = [h[0]] if h and h[1].kind in "biuf" else []
            elif path.suffix.lower() == ".npz":
                shapes = _npz_shapes(path)
            else:
                return None
            good = [s for s in shapes if _series_shape(s)]
            if good:
                return Evidence(self.name, REFINED, f"array of shape {good[0]} with path hint {hint!r}", fmt)
            return None
        t = cols.sniff_table(head)
        if t is None:
            return None
        tc = cols.find_time_column(t)
        if tc is None:
            return None
        channels = [i for i in t.numeric_columns if i != tc.index]
        if not channels:
            return None
        how = f"datetime {tc.format}" if tc.kind == "datetime" else "monotonic numbers"
        return Evidence(self.name, REFINED, f"{_kind(t)} with time column {tc.name!r} ({how}) and "
                        f"{len(channels)} numeric channel{'s' * (len(channels) > 1)}", fmt)

    def _sniff_parquet(self, path: Path, fmt: str) -> Evidence | None:
        try:
            fields = cols.parquet_columns(path)
        except DecodeError:
            return None
        tcol = _parquet_time(fields, "")
        if tcol is None:
            return None
        channels = [n for n, k in fields if k == "number" and n != tcol]
        if not channels:
            return None
        return Evidence(self.name, REFINED, f"Parquet with time column {tcol!r} and "
                        f"{len(channels)} numeric channel{'s' * (len(channels) > 1)}", fmt)

    # -- loading -------------------------------------------------------------------------------
    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, steps: int = 96, channels: int = 7) -> list[Path]:
        """``n`` CSV random walks: a datetime column and ``channels`` value columns."""
        rng, out = np.random.default_rng(9), []
        for i in range(n):
            p = d / f"series{i:05d}.csv"
            x = np.cumsum(rng.standard_normal((steps, channels)), axis=0)
            with open(p, "w") as fh:
                fh.write("date," + ",".join(f"ch{c}" for c in range(channels)) + "\n")
                for t in range(steps):
                    fh.write(f"2024-01-{1 + t // 24:02d} {t % 24:02d}:00:00," + ",".join(f"{v:.4f}" for v in x[t]) + "\n")
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """Series under ``ts/``: every value NaN; every channel constant."""
        (d / "ts").mkdir(exist_ok=True)
        nan, flat = d / "ts" / "nan_series.npy", d / "ts" / "flat_series.npy"
        np.save(nan, np.full((96, 3), np.nan))
        np.save(flat, np.ones((96, 3)))
        return [nan, flat]

    def load(self, path: Path, cfg: TimeSeriesConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        if cfg.patch < 1 or cfg.patch_stride < 1:
            raise DecodeError("patch and patch_stride must be >= 1")
        values, t, names, meta = read_series(path, cfg.time_column, sniffed)
        x, t = preprocess(values, t, names, meta)
        steps = x.shape[1]
        meta["steps"] = steps
        window, stride = int(cfg.window), int(cfg.stride)  # the CLI passes numbers as floats
        if window <= 0 or window >= steps:
            y = fit_tokens(x, cfg, meta)
            yield Sample("", {"series": y[None]}, meta)
            return
        stride = stride if stride > 0 else window
        starts = list(range(0, steps - window + 1, stride))
        if starts[-1] + window < steps:
            starts.append(steps - window)
            meta["last_window_aligned_to_end"] = True
        for s in starts:
            m = dict(meta, window=[s, s + window])
            if t is not None:
                m["t_start"] = float(t[s])
            yield Sample(f"t={s}", {"series": fit_tokens(x[:, s:s + window], cfg, m)[None]}, m)

    def cost(self, sample: Sample, spec, cfg: TimeSeriesConfig) -> int:
        _, c, steps = sample.arrays["series"].shape
        return n_tokens(steps, c, cfg.patch, cfg.patch_stride)

    def tokenizer(self, spec, front, cfg):
        return PatchTSTTokenizer(spec, self.seed(spec, cfg), cfg.patch, cfg.patch_stride)


def _kind(t: cols.TableHead) -> str:
    return {"\t": "TSV", ",": "CSV", ";": "CSV (;)", "|": "CSV (|)"}.get(t.delimiter, "CSV")


def _parquet_time(fields: list[tuple[str, str]], forced: str) -> str | None:
    if forced:
        return forced if any(n == forced for n, _ in fields) else None
    for n, k in fields:
        if k == "datetime":
            return n
    for n, k in fields:
        if k == "number" and cols.is_time_name(n):
            return n
    return None


def series_format(head: bytes, path: Path) -> str:
    """npy | npz | parquet | csv (any delimited text): how ``read_series`` reads the file."""
    if head.startswith(b"\x93NUMPY") or path.suffix.lower() in (".npy", ".npz"):
        return "npz" if path.suffix.lower() == ".npz" else "npy"
    return "parquet" if head[:4] == b"PAR1" else "csv"


def read_series(path: Path, time_column: str = "", sniffed: Sniffed | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, list[str], dict]:
    """Any supported file -> ([T, C] float64 values, time [T] or None, channel names, meta)."""
    known = sniffed_or_read(path, sniffed)
    head = known.head[:cols.HEAD_LIMIT]
    fmt = known.format or series_format(head, path)
    if fmt in ("npy", "npz"):
        a = cols.load_array(path, VALUE_BYTES)
        meta: dict = {"format": "npz" if path.suffix.lower() == ".npz" else "npy",
                      "shape": list(a.shape), "dtype": str(a.dtype)}
        if a.ndim == 1:
            a = a[:, None]
        elif a.ndim == 2 and a.shape[0] < a.shape[1] and a.shape[0] <= 64:
            a = a.T  # (C, T) with few channels -> (T, C)
            meta["transposed"] = "channels-first array read as (T, C)"
        elif a.ndim != 2:
            raise DecodeError(f"array of shape {a.shape}: a series must be (T,) or (T, C)")
        return a.astype(np.float64), None, [f"ch{i}" for i in range(a.shape[1])], meta
    if fmt == "parquet":
        fields = cols.parquet_columns(path)
        tcol = _parquet_time(fields, time_column)
        if time_column and tcol is None:
            raise DecodeError(f"no column named {time_column!r}")
        names = [n for n, k in fields if k == "number" and n != tcol]
        if not names:
            raise DecodeError("no numeric column to use as a channel "
                              f"(columns: {', '.join(n for n, _ in fields)[:200]})")
        data = cols.read_parquet_columns(path, names + ([tcol] if tcol else []), VALUE_BYTES)
        meta = {"format": "parquet", "time_column": tcol}
        t = data.pop(tcol) if tcol else None
        if t is None:
            meta["time"] = "row order (no time column)"
        return np.stack([data[n] for n in names], axis=1), t, names, meta
    table = cols.sniff_table(head)
    if table is None:
        raise DecodeError("not a delimited table (no consistent , tab ; or | separated columns)")
    if time_column:
        if time_column not in table.names:
            raise DecodeError(f"no column named {time_column!r}; columns: {', '.join(table.names)[:200]}")
        i = table.names.index(time_column)
        fmt = None if table.numeric[i] else cols.datetime_format(table.column(i))
        tc = cols.TimeColumn(i, time_column, "numeric" if table.numeric[i] else "datetime",
                             cols.time_unit(time_column), fmt)
    else:
        tc = cols.find_time_column(table, require_monotonic=False)
    names = [table.names[i] for i in table.numeric_columns if tc is None or i != tc.index]
    if not names:
        raise DecodeError("no numeric column to use as a channel "
                          f"(columns: {', '.join(table.names)[:200]})")
    data, t = cols.read_csv_columns(path, table, names, tc, VALUE_BYTES)
    meta = {"format": _kind(table), "delimiter": table.delimiter, "header": table.header,
            "time_column": tc.name if tc else None}
    if tc is None:
        meta["time"] = "row order (no time column)"
    elif tc.kind == "datetime":
        meta["time_format"] = tc.format
    if table.decimal == ",":
        meta["decimal"] = "comma (3,14; '.' and spaces between digit groups are thousands separators)"
    ignored = [n for i, n in enumerate(table.names) if not table.numeric[i] and (tc is None or i != tc.index)]
    if ignored:
        meta["non_numeric_columns_ignored"] = ignored
    values = np.stack([data[n] for n in names], axis=1)
    if values.shape[0] == 0:
        raise DecodeError("the table has a header but no data rows")
    return values, t, names, meta
