"""time_series: sniffing against tabular/imu, formats, PatchTST token counts, repairs, windows, cap."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_modality

from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.sniff import sniff
from mtx.weights import get_preset

CHANNELS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


def ett_csv(path: Path, steps: int = 96, fmt: str = "%Y-%m-%d %H:%M:%S", sep: str = ",",
            seed: int = 0, t0: dt.datetime = dt.datetime(2016, 7, 1)) -> Path:
    """An ETTh1-like file: a datetime column and 7 numeric channels, hourly."""
    rng = np.random.default_rng(seed)
    lines = [sep.join(["date", *CHANNELS])]
    for i in range(steps):
        vals = np.sin(i / 7 + np.arange(7)) + 0.1 * rng.standard_normal(7)
        lines.append(sep.join([(t0 + dt.timedelta(hours=i)).strftime(fmt), *(f"{v:.4f}" for v in vals)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def ts(path: Path) -> str:
    ev = get_modality("time_series").sniff(path.read_bytes()[:8192], path)
    return ev.reason if ev else ""


def test_sniff_ladder(tmp_path):
    assert sniff(ett_csv(tmp_path / "ett.csv")).modality == "time_series"
    assert "time column 'date'" in sniff(tmp_path / "ett.csv").reason
    assert "TSV" in ts(ett_csv(tmp_path / "ett.tsv", sep="\t"))
    # Day-first dates are recognised once a day exceeds 12 (ambiguous heads read month-first).
    eu = ett_csv(tmp_path / "eu.csv", fmt="%d/%m/%Y %H:%M", t0=dt.datetime(2016, 7, 20))
    assert "datetime %d/%m/%Y %H:%M" in ts(eu)
    num = tmp_path / "num.csv"
    num.write_text("t,a,b\n" + "".join(f"{i * 0.5},{i},{i * i}\n" for i in range(20)))
    assert "monotonic numbers" in ts(num)
    # No time-like column: a table, not a series.
    table = tmp_path / "people.csv"
    table.write_text("name,age,height\n" + "".join(f"p{i},{20 + i},{170 + i}\n" for i in range(10)))
    assert ts(table) == ""
    # A 'time' column that goes backwards in the head is not a series by structure alone.
    back = tmp_path / "back.csv"
    back.write_text("time,a\n" + "".join(f"{(7 * i) % 10},{i}\n" for i in range(10)))
    assert ts(back) == ""
    # Accelerometer columns: imu wins over the time-series rule.
    acc = tmp_path / "acc.csv"
    acc.write_text("time,acc_x,acc_y,acc_z\n" + "".join(f"{i / 100},{i},{i},{i}\n" for i in range(30)))
    assert ts(acc) and sniff(acc).modality == "imu"


def test_sniff_arrays_need_a_hint(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "ecg_series.npy", rng.standard_normal((500, 2)))
    np.save(tmp_path / "plain.npy", rng.standard_normal((500, 2)))
    np.savez(tmp_path / "sensor_log.npz", x=rng.standard_normal(300))
    assert "path hint 'series'" in ts(tmp_path / "ecg_series.npy")
    assert ts(tmp_path / "plain.npy") == ""
    assert "hint 'sensor'" in ts(tmp_path / "sensor_log.npz")


def test_token_count_96x7_is_78_at_b16(tmp_path, b16_model):
    dec, samples, tokens, hidden = run_modality(b16_model, ett_csv(tmp_path / "ett.csv"))
    assert samples[0].arrays["series"].shape == (1, 7, 96)
    assert tokens.x.shape == (1, 78, 768) and hidden.shape == (1, 78, 768)
    assert get_modality("time_series").cost(samples[0], b16_model.spec, get_modality("time_series").config()) == 78
    assert torch.isfinite(hidden).all()


def test_parquet_npy_npz(tmp_path, tiny_model):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    stamps = pa.array(np.arange(64) * 60_000_000, pa.timestamp("us"))
    pq.write_table(pa.table({"timestamp": stamps, "v": rng.standard_normal(64), "label": ["a"] * 64}),
                   tmp_path / "x.parquet")
    dec, samples, tokens, _ = run_modality(tiny_model, tmp_path / "x.parquet")
    assert dec.modality == "time_series" and samples[0].arrays["series"].shape == (1, 1, 64)
    assert tokens.x.shape[1] == 1 + 7
    np.save(tmp_path / "signals.npy", rng.standard_normal((3, 200)))  # channels first
    _, samples, tokens, _ = run_modality(tiny_model, tmp_path / "signals.npy")
    assert samples[0].arrays["series"].shape == (1, 3, 200) and "transposed" in samples[0].meta
    np.savez(tmp_path / "sensor.npz", a=rng.standard_normal(40))
    _, samples, _, _ = run_modality(tiny_model, tmp_path / "sensor.npz")
    assert samples[0].arrays["series"].shape == (1, 1, 40)


def test_sort_interpolate_zscore(tmp_path):
    mod = get_modality("time_series")
    t = np.arange(40, dtype=float)
    a, b = np.sin(t / 3) * 5 + 2, t * 0.1
    order = np.random.default_rng(3).permutation(40)
    lines = ["time,a,b"]
    for i in order:
        av = "" if i == 17 else repr(float(a[i]))
        lines.append(f"{float(t[i])!r},{av},{float(b[i])!r}")
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    (s,) = mod.load(tmp_path / "s.csv", mod.config())
    assert "sorted_by_time" in s.meta and s.meta["interpolated_values"] == 1
    expect_a = a.copy()
    expect_a[17] = (a[16] + a[18]) / 2
    za = (expect_a - expect_a.mean()) / expect_a.std()
    np.testing.assert_allclose(s.arrays["series"][0, 0], za, atol=1e-5)
    np.testing.assert_allclose(s.meta["zscore"]["mean"][1], b.mean(), rtol=1e-9)
    assert s.meta["channels"] == ["a", "b"]


def test_windows_and_keys(tmp_path, tiny_model):
    mod = get_modality("time_series")
    path = ett_csv(tmp_path / "ett.csv", steps=100)
    samples = list(mod.load(path, mod.config(window=48.0, stride=24.0)))  # CLI floats
    assert [s.key for s in samples] == ["t=0", "t=24", "t=48", "t=52"]
    assert all(s.arrays["series"].shape == (1, 7, 48) for s in samples)
    assert samples[-1].meta["window"] == [52, 100] and "t_start" in samples[0].meta
    assert {mod.batch_key(s) for s in samples} == {mod.batch_key(samples[0])}


def test_token_cap_resamples(tmp_path):
    mod = get_modality("time_series")
    np.save(tmp_path / "long_series.npy", np.random.default_rng(0).standard_normal((20000, 3)))
    (s,) = mod.load(tmp_path / "long_series.npy", mod.config())
    n = mod.cost(s, get_preset("meta-b16"), mod.config())
    assert n <= 2048 and n > 2000 and "resampled" in s.meta


def test_short_series_is_padded(tmp_path, tiny_model):
    p = tmp_path / "short.csv"
    p.write_text("t,v\n" + "".join(f"{i},{i * i}\n" for i in range(5)))
    _, samples, tokens, _ = run_modality(tiny_model, p)
    assert samples[0].arrays["series"].shape == (1, 1, 16) and "padded" in samples[0].meta
    assert tokens.x.shape[1] == 2


def test_bad_inputs_fail_clearly(tmp_path):
    mod = get_modality("time_series")
    p = tmp_path / "words.csv"
    p.write_text("date,label\n2020-01-01,a\n2020-01-02,b\n")
    assert ts(p) == ""
    with pytest.raises(DecodeError, match="no numeric column"):
        list(mod.load(p, mod.config()))
    binary = tmp_path / "blob.csv"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DecodeError, match="not a delimited table"):
        list(mod.load(binary, mod.config()))
    with pytest.raises(DecodeError, match="no column named"):
        list(mod.load(ett_csv(tmp_path / "e.csv"), mod.config(time_column="nope")))
