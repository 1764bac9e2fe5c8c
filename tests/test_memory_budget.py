"""One per-sample memory budget for every reader (issue #17, items 1, 3, 16 and the DICOM part of 15).

Each hostile file declares far more than it holds (or than one sample may take); the reader must
find out from the header (or by counting while streaming) and refuse, subsample or reduce it
*before* allocating. Refusals are checked with the allocation traced: nothing near the declared
size is ever allocated. The full-size reproductions of the issue run through ``mtx embed`` with
the peak memory of the whole process tree measured: ``pytest -m slow -k severe``.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import tracemalloc
import warnings
from contextlib import contextmanager
from pathlib import Path

import hostile
import numpy as np
import pytest

from mtx.errors import DecodeError, UsageError
from mtx.modalities import _budget, get_modality
from mtx.sniff import sniff

MB = 1 << 20


@pytest.fixture
def budget():
    """``budget("8M")`` sets the per-sample budget for this test only."""
    before = os.environ.get(_budget.ENV)
    yield _budget.set_max_sample_memory
    _budget.set_max_sample_memory(None)
    if before is not None:
        os.environ[_budget.ENV] = before


@contextmanager
def traced():
    """The peak of Python and numpy allocations inside the block: ``with traced() as peak: ...;
    peak()``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    box = [0]
    try:
        yield lambda: box[0]
    finally:
        box[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def load(path: Path, modality: str | None = None, **cfg):
    dec = sniff(path, modality=modality)
    mod = get_modality(dec.modality)
    return dec.modality, list(mod.load(path, mod.config(**cfg), dec.sniffed))


def refused(path: Path, modality: str | None = None, limit: int = 64 * MB) -> str:
    """The one-line refusal of ``path``; fails if decoding allocated more than ``limit``."""
    with traced() as peak, pytest.raises(DecodeError) as e:
        load(path, modality)
    msg = str(e.value)
    assert "\n" not in msg
    assert peak() < limit, f"{peak() / MB:.0f} MiB allocated before refusing: {msg}"
    return msg


# -- the setting --------------------------------------------------------------------------------


def test_the_setting_parses_sizes_reads_the_environment_and_the_function_sets_both(budget, monkeypatch):
    p = _budget.parse_size
    assert p("512M") == 512 * MB and p("2G") == 2 << 30 and p("1.5GiB") == 3 << 29
    assert p("300000000") == 300_000_000 and p("2GB") == 2_000_000_000 and p(64 * MB) == 64 * MB
    assert p("unlimited") is None and p(None) == _budget.DEFAULT == 256 * MB
    for bad in ("lots", "-1G", "12 parsecs", "0", "100K"):
        with pytest.raises(UsageError):
            p(bad)
    monkeypatch.setenv(_budget.ENV, "1G")
    assert _budget.max_sample_memory() == 1 << 30
    budget("96M")
    assert _budget.max_sample_memory() == 96 * MB and os.environ[_budget.ENV] == "96M"
    with pytest.raises(UsageError):
        budget("a lot")
    assert _budget.max_sample_memory() == 96 * MB  # a bad value changes nothing


def _child(q) -> None:
    from mtx.modalities._budget import max_sample_memory

    q.put(max_sample_memory())


def test_spawned_decoder_processes_inherit_the_setting(budget):
    budget("300M")
    ctx = multiprocessing.get_context("spawn")  # as the pipeline starts its decoders
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    got = q.get(timeout=120)
    p.join(30)
    assert got == 300 * MB


def test_the_message_names_the_declared_size_the_limit_and_how_to_raise_it(tmp_path):
    p = tmp_path / "vertices.net"
    hostile.pajek_vertices(p)  # 21 bytes
    msg = refused(p)
    assert msg.startswith("declares 2,000,000,000 vertices (~"), msg
    assert "over the limit of 256 MiB per sample; raise it with --max-sample-memory / MTX_MAX_SAMPLE_MEMORY" in msg


# -- refusals before allocating: one per class of reader -----------------------------------------


SEVERE_CLASSES = {
    # name: (writer, forced modality, substring of the message[, most bytes allocated before refusing])
    "graphml.graphml": (lambda p: hostile.graphml_nodes(p, 300_000), None, "holds 300,000 nodes and edges"),
    "gexf.gexf": (lambda p: hostile.gexf_nodes(p, 200_000), None, "over the limit"),
    "gml.gml": (lambda p: hostile.gml_nodes(p, 400_000), None, "over the limit"),
    "nodelink.json": (lambda p: hostile.nodelink_nodes(p, 1_000_000), None, "JSON values"),
    "edges.edgelist": (lambda p: hostile.edgelist_edges(p, 800_000), None, "nodes and edges", 256 * MB),
    "lzf.pcd": (lambda p: hostile.pcd_compressed(p, 357_913_941), None, "x88"),
    "declared.npz": (lambda p: hostile.npz_declared(p, (150_000_000, 3)), None, "x1032"),
    "ts/zeros.npz": (lambda p: hostile.npz_zeros(p, 400_000_000, key="x"), None, "over the limit"),
    "imu/declared.npy": (lambda p: hostile.npy_declared(p, (10**9, 6)), None, "truncated NPY"),
    "zeros_v5.mat": (lambda p: hostile.mat5_compressed_zeros(p, (200, 200, 1000)), None, "MATLAB v5 is read whole"),
    "unwritten_v73.mat": (lambda p: hostile.mat73_declared(p, write=False), None, "stores no data"),
    "bands.tiff": (lambda p: hostile.tiff_bands(p), None, "a page is decoded whole"),
    "rgba16.png": (lambda p: hostile.png_zeros(p), None, "declares 99,000,000 pixels"),
    "screen.gif": (lambda p: hostile.gif_screen(p), None, "per GIF frame"),
    "frame.y4m": (lambda p: hostile.y4m_frame(p, 12_000, 8_000), "video", "per video frame"),
    "big_frame.dcm": (lambda p: hostile.dicom_pixels(p, 9_000, 9_000, nbytes=1000), None, "one DICOM frame"),
}


@pytest.mark.parametrize("name", list(SEVERE_CLASSES))
def test_severe_class_is_refused_before_it_is_allocated(name, tmp_path):
    write, modality, needle, *limit = SEVERE_CLASSES[name]  # a limit: streamed and counted up to the budget
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    write(p)
    msg = refused(p, modality, *limit)
    assert needle in msg, msg


def test_a_declared_size_is_compared_with_what_the_file_can_hold(tmp_path):
    p = tmp_path / "lzf.pcd"
    hostile.pcd_compressed(p, 1_000_000)  # 12 MB declared: under the budget, over what 333 bytes hold
    assert "can hold at most 28.6 KiB (x88" in refused(p)
    p = tmp_path / "member.npz"
    hostile.npz_declared(p, (1_000_000, 3))
    assert "x1032" in refused(p)


# -- over the budget, subsample or reduce (recorded) instead of refusing ----------------------------


def test_a_large_jpeg_is_decoded_at_reduced_scale(budget, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (125, 125, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    p = tmp_path / "big.jpg"
    Image.fromarray(a).save(p, quality=90)
    _, (full,) = load(p)
    budget("8M")
    _, (small,) = load(p)
    assert "jpeg_draft" in small.meta and "jpeg_draft" not in full.meta
    assert small.arrays["pixels"].shape == full.arrays["pixels"].shape == (1, 3, 224, 224)
    diff = np.abs(small.arrays["pixels"].astype(int) - full.arrays["pixels"].astype(int)).mean()
    assert diff < 6, diff  # the same picture


@pytest.mark.parametrize("kind", ["png", "thermal", "dicom"])
def test_a_picture_too_large_to_preprocess_is_reduced_right_after_decoding(kind, budget, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    if kind == "png":
        p = tmp_path / "big.png"
        Image.fromarray(rng.integers(0, 255, (125, 125, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)).save(p)
    elif kind == "thermal":
        p = tmp_path / "thermal" / "big.png"
        p.parent.mkdir()
        Image.fromarray((rng.integers(0, 60000, (64, 64)).astype(np.uint16)).repeat(16, 0).repeat(16, 1)).save(p)
    else:
        p = tmp_path / "big.dcm"
        hostile.dicom_pixels(p, 1024, 1024)
    _, (full,) = load(p)
    budget("20M" if kind == "png" else "8M")  # the decoded picture itself fits (RGB: 4 bytes/pixel)
    _, (small,) = load(p)
    assert "reduced" in small.meta and "reduced" not in full.meta, small.meta
    assert small.arrays["pixels"].shape == full.arrays["pixels"].shape
    a, b = (s.arrays["pixels"].astype(np.float64) for s in (small, full))
    scale = 255.0 if full.arrays["pixels"].dtype == np.uint8 else 1.0
    assert np.abs(a - b).mean() / scale < 0.05


def test_a_band_over_the_budget_is_read_at_every_sth_pixel(budget, tmp_path):
    p = tmp_path / "cube.hdr"
    hostile.envi_declared(p, 2000, 2000, 3, 0)
    with open(p.with_suffix(".raw"), "wb") as f:
        for b in range(3):  # 16 MB per band
            f.write(np.random.default_rng(b).random((2000, 2000), dtype=np.float32).astype("<f4").tobytes())
    budget("8M")
    with traced() as peak:
        _, (s,) = load(p)
    assert "every 8th pixel" in s.meta["normalisation"]["spatial_subsample"], s.meta["normalisation"]
    assert peak() < 8 * MB, peak() / MB


def test_an_npz_cloud_of_any_length_is_streamed(budget, tmp_path):
    import zipfile

    block = np.random.default_rng(2).standard_normal((341, 3))
    p = tmp_path / "cloud.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("points.npy", "w", force_zip64=True) as m:
        n = 341 * 12_000  # 4.1M points, 98 MB decompressed, ~0.3 MB in the file
        m.write(hostile._npy_header((n, 3)))
        for _ in range(12_000):
            m.write(block.tobytes())
    budget("16M")
    with traced() as peak:
        _, (s,) = load(p)
    assert s.meta["points_in_file"] == 341 * 12_000
    assert peak() < 16 * MB, peak() / MB


def test_mesh_surface_sampling_caps_follow_the_budget(budget, tmp_path):
    from mtx.modalities._pointio import base

    budget("8M")
    assert base.max_triangles() == 8 * MB // base.TRIANGLE_BYTES < base.MAX_MESH_TRIANGLES


def test_large_video_frames_decode_on_one_thread_then_are_refused(budget, tmp_path):
    import av

    p = tmp_path / "big.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 512, 512, "yuv420p"
        for i in range(4):
            fr = av.VideoFrame.from_ndarray(np.full((512, 512, 3), 40 * i, np.uint8), format="rgb24")
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    budget("7M")  # 512 x 512 frames: ~7.5 MB with frame threads, ~6.7 MB with one
    _, (one,) = load(p)
    assert one.meta["decoder_threads"].startswith("1 ")
    budget("4M")
    assert "per video frame" in refused(p)


def test_audio_blocks_shrink_with_many_channels(budget, tmp_path):
    p = tmp_path / "wide.wav"
    hostile.wav_channels(p, channels=256, rate=48_000, frames=48_000)  # 24 MB of 16-bit samples
    budget("8M")
    with traced() as peak:
        _, (s,) = load(p)
    assert s.meta["decoded_frames"] == 48_000
    assert peak() < 8 * MB, peak() / MB


# -- IMU: memory follows the rows, not the span (item 3) ---------------------------------------------


def test_imu_a_row_a_day_later_is_an_isolated_outlier_not_a_day_of_samples(tmp_path):
    p = tmp_path / "day.csv"
    hostile.imu_day_gap(p)
    with traced() as peak:
        _, (s,) = load(p)
    assert peak() < 64 * MB, peak() / MB  # a day at 200 Hz would be 17M samples x 6 channels
    assert s.meta["gaps"]["count"] == 1 and s.meta["gaps"]["largest_s"] == [86400.0]
    assert "1 row(s)" in s.meta["isolated_rows_dropped"] and s.meta["samples_200hz"] < 14_000


def test_imu_a_timestamp_written_as_zero_is_dropped(tmp_path):
    p = tmp_path / "zero.csv"
    hostile.imu_zero_stamp(p)
    with traced() as peak:
        _, (s,) = load(p)
    assert peak() < 64 * MB
    assert "isolated_rows_dropped" in s.meta and abs(s.meta["measured_rate_hz"] - 100) < 0.1


def test_imu_windows_never_span_a_gap(tmp_path):
    t = np.concatenate([np.arange(3000) / 100.0, 3600.0 + np.arange(1500) / 100.0])  # 30 s, an hour, 15 s
    p = tmp_path / "two.csv"
    hostile.imu_csv(p, t)
    _, (s,) = load(p)
    assert s.meta["segments"] == 2 and s.meta["gaps"]["bound_s"] == 1.0
    assert s.meta["segment_starts_s"] == [0.0, 3600.0]
    starts = s.meta["window_starts_s"]
    assert starts[0] == 0.0 and 3600.0 in starts
    for t0 in starts:  # a 10 s window lies wholly before the gap or wholly after it
        assert t0 + 10.0 <= 30.0 or t0 >= 3600.0, starts
    _, wins = load(p, window=10.0)
    keys = [w.key for w in wins]
    assert keys[0] == "t=0" and "t=3600" in keys and all(w.meta["window_s"][1] <= 30 or w.meta["window_s"][0] >= 3600
                                                          for w in wins)


def test_imu_nothing_left_at_200hz_is_a_failure(tmp_path):
    p = tmp_path / "ns.csv"
    hostile.imu_ns_steps(p)
    with pytest.raises(DecodeError, match="no sample at 200 Hz: its 1,000 rows span 999 ns"):
        load(p)


# -- non-finite input (item 16), DICOM messages (item 15), warnings ---------------------------------


def test_all_nan_audio_fails_and_a_partial_fill_is_recorded(tmp_path):
    p = tmp_path / "nan.wav"
    hostile.wav_float(p, np.full(8000, np.nan))
    with pytest.raises(DecodeError, match="no finite samples"):
        load(p)
    x = np.sin(np.arange(16000) / 9.0)
    x[::100] = np.nan
    hostile.wav_float(p, x)
    _, (s,) = load(p)
    assert s.meta["repair_nonfinite"].startswith("160 non-finite samples")


def test_a_float_picture_without_a_finite_pixel_fails_and_a_partial_fill_is_recorded(tmp_path):
    import tifffile

    p = tmp_path / "f.tiff"
    tifffile.imwrite(p, np.full((16, 16), np.nan, np.float32))
    with pytest.raises(DecodeError, match="no finite values"):
        load(p)
    a = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    a[3, 3] = np.inf
    tifffile.imwrite(p, a)
    _, (s,) = load(p)
    assert s.meta["nonfinite_fill"].startswith("1 NaN/inf")


def test_dicom_pixel_data_shorter_than_declared_is_one_clear_line(tmp_path):
    p = tmp_path / "short.dcm"
    hostile.dicom_pixels(p, 64, 64, frames=3, nbytes=1000)
    with pytest.raises(DecodeError) as e:
        load(p)
    assert str(e.value) == ("DICOM pixel data holds 1,000 bytes, the header declares 64 x 64 x 3 frames x 16 bits "
                            "= 24,576 bytes (truncated or corrupt)")


def test_decoder_warnings_become_facts_not_stderr(tmp_path, capfd, monkeypatch):
    import logging

    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 40x40 picture now warns (1600 > 1000)
    p = tmp_path / "w.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(p)
    mod = get_modality("image")
    orig = type(mod).load.__wrapped__

    def noisy(self, path, cfg, sniffed=None):
        warnings.warn("overflow encountered in multiply", RuntimeWarning, stacklevel=1)
        logging.getLogger("tifffile").warning("a TIFF tag is odd")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
        yield from orig(self, path, cfg, sniffed)

    from mtx.modalities._base import _guarded_load

    monkeypatch.setattr(type(mod), "load", _guarded_load(noisy))
    (s,) = list(mod.load(p, mod.config()))
    notes = s.meta["decoder_warnings"]
    assert any(n.startswith("DecompressionBombWarning: Image size (1600 pixels)") for n in notes), notes
    assert "RuntimeWarning: overflow encountered in multiply" in notes
    assert "tifffile: a TIFF tag is odd" in notes
    assert not any("old API" in n for n in notes)
    out, err = capfd.readouterr()
    assert "Warning" not in err and "TIFF tag" not in err and not out


# -- the full-size reproductions of the issue, through `mtx embed` ----------------------------------


def _tree_peak(cmd: list[str], env: dict) -> tuple[int, float, int]:
    """(return code, seconds, peak RSS of the process and its children) of ``cmd``."""
    import subprocess
    import time

    import psutil

    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = sum(q.memory_info().rss for q in [root, *root.children(recursive=True)])
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.02)
    return proc.returncode, time.time() - t0, peak


@pytest.mark.slow
@pytest.mark.parametrize("name", list(hostile.SEVERE))
@pytest.mark.parametrize("workers", ["default", "0"])
def test_severe_cases_peak_tree_memory(name, workers, tmp_path):
    import h5py

    p = tmp_path / name
    hostile.SEVERE[name](p)
    out = tmp_path / "o.h5"
    cmd = [sys.executable, "-m", "mtx", "embed", str(p), "-o", str(out), "-m", "tiny", "-w", "seeded", "-q"]
    cmd += ["-j", "0"] if workers == "0" else []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rc, seconds, peak = _tree_peak(cmd, env)
    assert peak < 2.5e9, f"{name}: peak {peak / 1e9:.2f} GB in {seconds:.0f} s"
    with h5py.File(out, "r") as f:
        failed = list(f["failures/message"].asstr()[()])
    want = SEVERE_OUTCOMES[name]
    if want is None:
        assert rc == 0 and not failed
    else:
        assert rc == 3 and len(failed) == 1 and want in failed[0], failed


SEVERE_OUTCOMES = {  # what each full-size case of the issue ends as (None: embedded, facts recorded)
    "vertices.net": "over the limit", "huge_compressed.pcd": "x88", "zeros.npz": "one location",
    "declared.npz": "x1032", "zeros_v5.mat": "over the limit", "chunked_v73.mat": "stores no data",
    "bands.tiff": "over the limit", "rgba16.png": "over the limit", "isolated.graphml": "over the limit",
    "imu_day_gap.csv": None, "imu_zero_stamp.csv": None,
}
