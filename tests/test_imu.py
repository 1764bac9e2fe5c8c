"""imu: column layouts, sample-rate units, repairs, windows, masking, the real x-io recording."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SOURCES, run_modality
from samplegen import SENSORLOG_HEADER, XIO_HEADER

from mtx.encoder import pool
from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.modalities.imu import classify
from mtx.sniff import sniff


def motion(n: int, rate: float, seed: int = 0) -> np.ndarray:
    """[n, 6] walking-like acc (g) + gyro (deg/s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    acc = np.stack([0.3 * np.sin(2 * np.pi * 1.8 * t), 0.2 * np.cos(2 * np.pi * 1.8 * t),
                    1 + 0.4 * np.sin(2 * np.pi * 3.6 * t)], 1)
    gyro = np.stack([30 * np.sin(2 * np.pi * 0.9 * t + k) for k in range(3)], 1)
    return np.concatenate([acc, gyro], 1) + 0.01 * rng.standard_normal((n, 6))


def write_csv(path: Path, names: list[str], seconds: float = 12.0, rate: float = 100.0,
              time: tuple[str, float] | None = ("time", 1.0), seed: int = 0) -> Path:
    n = int(seconds * rate)
    x = motion(n, rate, seed)[:, : len(names)]
    cols = ([time[0]] if time else []) + names
    lines = [",".join(cols)]
    for i in range(n):
        cells = ([repr(round(i / rate / time[1], 9))] if time else []) + [f"{v:.6f}" for v in x[i]]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


LAYOUTS = {
    "short": ["ax", "ay", "az", "gx", "gy", "gz"],
    "snake": ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"],
    "accel": ["accel_x", "accel_y", "accel_z", "gyr_x", "gyr_y", "gyr_z"],
    "camel": ["AccX", "AccY", "AccZ", "GyroX", "GyroY", "GyroZ"],
    "xio": ["Accelerometer X (g)", "Accelerometer Y (g)", "Accelerometer Z (g)",
            "Gyroscope X (deg/s)", "Gyroscope Y (deg/s)", "Gyroscope Z (deg/s)"],
    "sensorlog": ["accelerometerAccelerationX(G)", "accelerometerAccelerationY(G)",
                  "accelerometerAccelerationZ(G)", "gyroRotationX(rad/s)", "gyroRotationY(rad/s)",
                  "gyroRotationZ(rad/s)"],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_sniff_and_load(tmp_path, tiny_model, layout):
    names = LAYOUTS[layout]
    p = write_csv(tmp_path / f"{layout}.csv", names)
    dec, samples, tokens, hidden = run_modality(tiny_model, p)
    assert dec.modality == "imu" and dec.reason.startswith("refined: CSV with accelerometer columns")
    assert names[0] in dec.reason
    s = samples[0]
    assert s.meta["channels"] == names and "gyro" not in s.meta
    assert s.arrays["imu"].shape == (2, 6, 2000) and tokens.x.shape == (2, 251, 64)
    assert torch.isfinite(hidden).all()


def test_classify_rejects_non_imu_names():
    for n in ("Time (s)", "gravityX", "x", "temperature", "max", "accuracy"):
        assert classify(n) is None or n == "accuracy"
    assert classify("Magnetometer X (uT)") == ("mag", "x")
    assert classify("userAccelerationZ") == ("acc", "z")


@pytest.mark.parametrize("source", SOURCES)
def test_xio_recording(sample_files, tiny_model, source):
    """x-io Fusion's export: Time (s), then gyroscope before accelerometer, then magnetometer, at
    ~99.2 Hz (135 s in the real file: 14 windows; 12 s in the look-alike: 2)."""
    p = sample_files[source].path("imu/xio_fusion_sensor_data.csv")
    windows = 14 if source == "real" else sample_files[source].facts("imu/xio_fusion_sensor_data.csv")["windows"]
    dec, got, tokens, hidden = run_modality(tiny_model, p)
    assert dec.modality == "imu"
    assert "Accelerometer X (g), Accelerometer Y (g), Accelerometer Z (g) and gyroscope" in dec.reason
    assert any(c.modality == "time_series" for c in dec.candidates)  # beaten, not absent
    s = got[0]
    assert s.meta["channels"] == XIO_HEADER[4:7] + XIO_HEADER[1:4] and s.meta["time_column"] == "Time (s)"
    assert s.meta["time_unit"].startswith("s") and abs(s.meta["measured_rate_hz"] - 99.2) < 0.5
    assert s.arrays["imu"].shape == (windows, 6, 2000) and "magnetometer" in s.meta
    v = pool(hidden, tokens, "mean").mean(0)
    assert v.shape == (64,) and torch.isfinite(v).all()


def test_sensorlog_phone_export(generated_data, tiny_model):
    """An iOS SensorLog export (generated; no real phone recording is in the shared data): a text
    logging time that is no datetime format, per-sensor 'since reboot' stamps, G and rad/s units,
    magnetometer and label columns."""
    p = generated_data.path("imu/sensorlog_iphone.csv")
    want = generated_data.facts("imu/sensorlog_iphone.csv")
    dec, got, tokens, hidden = run_modality(tiny_model, p)
    assert dec.modality == "imu" and "accelerometerAccelerationX(G)" in dec.reason and "gyroscope" in dec.reason
    s = got[0]
    assert s.meta["channels"] == SENSORLOG_HEADER[4:7] + SENSORLOG_HEADER[8:11]
    assert s.meta["time_column"] == "accelerometerTimestamp_sinceReboot(s)"
    assert abs(s.meta["measured_rate_hz"] - want["rate"]) < 0.1 and "repairs" not in s.meta
    n = want["windows"]
    assert s.arrays["imu"].shape == (n, 6, 2000) and tokens.x.shape == (n, 251, 64)
    assert torch.isfinite(hidden).all()


def test_window_is_251_tokens_at_b16(tmp_path, b16_model):
    p = write_csv(tmp_path / "ten.csv", LAYOUTS["snake"], seconds=10.0, rate=200.0)
    _, samples, tokens, hidden = run_modality(b16_model, p)
    assert samples[0].arrays["imu"].shape == (1, 6, 2000) and "resampled" not in samples[0].meta
    assert tokens.x.shape == (1, 251, 768) and tokens.pad_mask is None
    assert hidden.shape == (1, 251, 768)


@pytest.mark.parametrize("name,scale,unit", [("time", 1.0, "s (inferred"), ("timestamp", 1e-3, "ms (inferred"),
                                             ("t_us", 1e-6, "us (from"), ("Time (ms)", 1e-3, "ms (from")])
def test_time_units(tmp_path, name, scale, unit):
    mod = get_modality("imu")
    p = write_csv(tmp_path / "u.csv", LAYOUTS["short"], seconds=4, rate=100.0, time=(name, scale))
    (s,) = mod.load(p, mod.config())
    assert s.meta["time_unit"].startswith(unit)
    assert abs(s.meta["measured_rate_hz"] - 100.0) < 0.01 and s.meta["samples_200hz"] == 800


def test_no_time_column_assumes_200hz_and_missing_gyro_is_zero(tmp_path):
    mod = get_modality("imu")
    p = write_csv(tmp_path / "acc_only.csv", ["acc_x", "acc_y", "acc_z"], seconds=3, rate=200.0, time=None)
    (s,) = mod.load(p, mod.config())
    assert s.meta["assumed_rate_hz"] == 200.0 and s.meta["gyro"].startswith("missing")
    assert np.all(s.arrays["imu"][0, 3:] == 0)


def test_non_monotonic_timestamps_are_repaired(tmp_path, tiny_model):
    good = write_csv(tmp_path / "good.csv", LAYOUTS["snake"], seconds=5)
    lines = good.read_text().splitlines()
    body = lines[1:]
    shuffled = body[:100] + body[150:200] + body[100:150] + body[200:] + body[10:13]  # swap + repeats
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], *shuffled]) + "\n")
    _, s_good, t_good, h_good = run_modality(tiny_model, good)
    _, s_bad, t_bad, h_bad = run_modality(tiny_model, bad)
    repairs = " ".join(s_bad[0].meta["repairs"])
    assert "sorted" in repairs and "dropped 3 rows with a repeated timestamp" in repairs
    assert "repairs" not in s_good[0].meta
    np.testing.assert_allclose(s_bad[0].arrays["imu"], s_good[0].arrays["imu"], atol=1e-6)


def test_short_recording_padding_is_masked(tmp_path, tiny_model):
    p = write_csv(tmp_path / "short.csv", LAYOUTS["short"], seconds=3, rate=200.0)
    _, samples, tokens, hidden = run_modality(tiny_model, p)
    assert samples[0].arrays["valid"].tolist() == [600] and "padded" in samples[0].meta
    assert tokens.pad_mask is not None and int((~tokens.pad_mask).sum()) == 1 + 75
    v_masked = pool(hidden, tokens, "mean")
    # The same tokens without the padding, encoded without a mask, give the same vector.
    from mtx.modalities._base import Tokens

    keep = Tokens(tokens.x[:, :76], None, True)
    v_cut = pool(tiny_model.encode_tokens(keep), keep, "mean")
    assert torch.allclose(v_masked, v_cut, atol=1e-5)


def test_per_window_keys_and_npy_with_hint(tmp_path, tiny_model):
    mod = get_modality("imu")
    p = write_csv(tmp_path / "w.csv", LAYOUTS["snake"], seconds=25, rate=200.0)
    wins = list(mod.load(p, mod.config(window=10.0)))
    assert [s.key for s in wins] == ["t=0", "t=10", "t=15"]
    assert all(s.arrays["imu"].shape == (1, 6, 2000) for s in wins)
    half = list(mod.load(p, mod.config(window=20.0, stride=2.5)))  # the CLI passes floats
    assert [s.key for s in half][:3] == ["t=0", "t=2.5", "t=5"] and half[-1].key == "t=5"
    assert half[0].arrays["imu"].shape == (2, 6, 2000)
    (sub,) = mod.load(p, mod.config(max_windows=2))
    assert sub.arrays["imu"].shape[0] == 2 and "windows_subsampled" in sub.meta
    d = tmp_path / "imu"
    d.mkdir()
    np.save(d / "walk.npy", motion(3000, 200.0).astype(np.float32))
    dec, samples, tokens, _ = run_modality(tiny_model, d / "walk.npy")
    assert dec.modality == "imu" and "path hint 'imu'" in dec.reason
    assert samples[0].arrays["imu"].shape == (2, 6, 2000)


def test_bad_inputs_fail_clearly(tmp_path):
    mod = get_modality("imu")
    p = tmp_path / "words.csv"
    p.write_text("time,label,other\n1,a,b\n2,c,d\n")
    assert mod.sniff(p.read_bytes(), p) is None
    with pytest.raises(DecodeError, match="no accelerometer x/y/z columns"):
        list(mod.load(p, mod.config()))
    one = tmp_path / "one.csv"
    one.write_text("time,ax,ay,az\n0,1,2,3\n")
    with pytest.raises(DecodeError, match="at least 2"):
        list(mod.load(one, mod.config()))
    same = tmp_path / "same.csv"
    same.write_text("time,ax,ay,az\n0,1,2,3\n0,1,2,3\n0,2,2,2\n")
    with pytest.raises(DecodeError, match="distinct timestamps"):
        list(mod.load(same, mod.config()))
    assert sniff(write_csv(tmp_path / "ok.csv", LAYOUTS["short"], seconds=1)).modality == "imu"
