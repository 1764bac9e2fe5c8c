"""The bad-input matrix (issue #8, item 1): one ``mtx embed`` over every kind of bad file.

Every bad file must end as a ``/failures`` row whose one-line message names the problem (or as
a documented repair that is recorded in the sample's meta); the good files beside them are
embedded; the run exits 3; no traceback is printed; nothing in any file is ever executed (the
pickles below write a marker file if anything unpickles them).

``python tests/test_bad_inputs.py`` prints the matrix as a markdown table (docs/reliability.md).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import sys
import wave
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import hostile
import numpy as np
import pytest

from mtx.cli import main

TINY = ["-m", "tiny", "-w", "seeded"]
# CSVs that only a forced modality reads (their content alone would make them tables)
MAPS = ["--map", "*ts_text_only.csv=time_series", "--map", "*forced_ts_pickle.npy=time_series"]


# ------------------------------------------------------------------------------------------
# Tiny file factories
# ------------------------------------------------------------------------------------------


def _png(w=32, h=24, seed=0, mode="RGB") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    if mode == "I;16":
        a = a.astype(np.uint16) * 40
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def _jpg() -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(b, "JPEG")
    return b.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(w=100_000, h=100_000) -> bytes:
    """A valid PNG header that claims w x h pixels, with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _wav(rate=16000, n=16000, channels=1) -> bytes:
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((3000 * np.sin(np.arange(n) / 5)).astype("<i2").tobytes())
    return b.getvalue()


def _wav_lying(rate=None, channels=None) -> bytes:
    b = bytearray(_wav())
    if channels is not None:
        struct.pack_into("<H", b, 22, channels)  # fmt chunk: channels
    if rate is not None:
        struct.pack_into("<I", b, 24, rate)  # fmt chunk: sample rate
    return bytes(b)


def _flac() -> bytes:
    import soundfile as sf

    b = io.BytesIO()
    sf.write(b, (0.3 * np.sin(np.arange(32000) / 10)).astype(np.float32), 16000, format="FLAC")
    return b.getvalue()


def _video(path: Path, frames: int, fmt: str = "mp4") -> None:
    import av

    codec, pix = ("mjpeg", "yuvj420p") if fmt == "avi" else ("mpeg4", "yuv420p")
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=8)
        s.width = s.height = 32
        s.pix_fmt = pix
        c.start_encoding()
        for t in range(frames):
            a = np.random.default_rng(t).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def _ply(declared: int, verts: np.ndarray) -> bytes:
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {declared}\nproperty float x\n"
            "property float y\nproperty float z\nend_header\n").encode()
    return head + verts.astype("<f4").tobytes()


def _parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    b = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(300)), "b": [f"x{i}" for i in range(300)]}), b)
    return b.getvalue()


class Payload:
    """Unpickling this runs ``exec``: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('executed')",))


def _evil(marker: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps({"weights": Payload(marker)}, protocol=protocol)


ENVI = ("ENVI\nsamples = 4\nlines = 4\nbands = 20\nheader offset = 0\nfile type = ENVI Standard\n"
        "data type = 4\ninterleave = {}\nbyte order = 0\n")
IMU_HEAD = "time,acc_x,acc_y,acc_z\n"


def _imu_backwards() -> str:
    rows = [(i / 100, 0.1 * (i % 5), 0.2, 1.0) for i in range(300)]
    rows[100], rows[101] = rows[101], rows[100]  # one step back in time
    rows.insert(150, rows[149])  # one repeated timestamp
    return IMU_HEAD + "".join(f"{t:.2f},{a},{b},{c}\n" for t, a, b, c in rows)


def _symlink_pair(p: Path) -> None:
    other = p.with_name("loop_b.png")
    os.symlink(other, p)
    os.symlink(p, other)


def _too_deep(p: Path) -> None:
    """A folder ``p`` whose path is just over PATH_MAX (a text file inside): it can be reached
    only relative to its parent's descriptor, never by name."""
    from mtx._files import PATH_MAX

    parent = p.with_name("deep")
    room = PATH_MAX - 6 - len(str(parent))  # the parent's path ends at PATH_MAX - 6 bytes
    parts = ["d" * 200] * (room // 201)  # each adds 201 bytes ("/" + name)
    if room % 201 > 1:
        parts.append("e" * (room % 201 - 1))
    deep = str(parent.joinpath(*parts))
    os.makedirs(deep)
    fd = os.open(deep, os.O_RDONLY)
    try:
        os.mkdir(p.name, dir_fd=fd)
        f = os.open(f"{p.name}/note.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"unreachable by name\n")
        os.close(f)
    finally:
        os.close(fd)
    assert len(os.fsencode(os.path.join(deep, p.name))) >= PATH_MAX


def _write_bytes_name(name: bytes, data: bytes) -> Callable[[Path, Path], None]:
    def make(p: Path, marker: Path) -> None:  # noqa: ARG001 - p: the escaped name, unused
        with open(os.fsencode(p.parent) + b"/" + name, "wb") as f:
            f.write(data)

    return make


# ------------------------------------------------------------------------------------------
# The matrix
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input. ``name`` is the file's name as stored in /failures or /id (non-UTF-8 bytes
    backslash-escaped). Either ``stage`` + ``needle`` (a failure whose message contains the
    needle, case-insensitive) or ``repaired`` (embedded as that modality) + ``meta`` (a key the
    sample meta must hold, shown by ``mtx tokenize --json``)."""

    name: str
    modality: str  # the modality the file claims to be
    kind: str  # what is wrong with it
    make: Callable[[Path, Path], None]  # (folder, marker) -> writes the file
    stage: str = ""
    needle: str = ""
    repaired: str = ""
    meta: str = ""


def _b(data: bytes | Callable[[], bytes]) -> Callable[[Path, Path], None]:
    """A maker writing ``data`` to the case's name (filled in by ``_cases``)."""
    return lambda p, marker: p.write_bytes(data() if callable(data) else data)  # noqa: ARG005


def _t(text: str | Callable[[], str]) -> Callable[[Path, Path], None]:
    return lambda p, marker: p.write_text(text() if callable(text) else text)  # noqa: ARG005


def _np(a: Callable[[], np.ndarray], **kw) -> Callable[[Path, Path], None]:
    return lambda p, marker: np.save(p, a(), **kw)  # noqa: ARG005


def _envi(interleave: str, data: bool) -> Callable[[Path, Path], None]:
    def make(p: Path, marker: Path) -> None:  # noqa: ARG001
        p.write_text(ENVI.format(interleave))
        if data:
            p.with_suffix(".raw").write_bytes(np.zeros(4 * 4 * 20, "<f4").tobytes())

    return make


def _dir_like_file(p: Path, marker: Path) -> None:  # noqa: ARG001
    p.mkdir()
    (p / "inner.txt").write_text("a note inside a directory that is named like a PNG file\n")


def _tiff_nan(p: Path, marker: Path) -> None:  # noqa: ARG001
    import tifffile

    tifffile.imwrite(p, np.full((16, 16), np.nan, np.float32))


C = Case
CASES: list[Case] = [
    # zero bytes, several extensions
    C("zero.png", "image", "zero-byte file", _b(b""), "sniff", "0 bytes"),
    C("zero.jpg", "image", "zero-byte file", _b(b""), "sniff", "0 bytes"),
    C("zero.wav", "audio", "zero-byte file", _b(b""), "sniff", "0 bytes"),
    C("zero.mp4", "video", "zero-byte file", _b(b""), "sniff", "0 bytes"),
    C("zero.ply", "point_cloud", "zero-byte file", _b(b""), "sniff", "0 bytes"),
    C("zero.csv", "tabular", "zero-byte file", _b(b""), "sniff", "0 bytes"),
    C("zero.txt", "text", "zero-byte file", _b(b""), "sniff", "0 bytes"),
    # image
    C("truncated.png", "image", "truncated PNG (first half)", _b(lambda: _half(_png(64, 48))), "load", "truncated"),
    C("truncated.jpg", "image", "truncated JPEG (first half)", _b(lambda: _half(_jpg())), "load", "truncated"),
    C("text_named.png", "image", "plain text named .png", _b(b"plain text, not a picture\n" * 4),
      "load", "not a decodable image"),
    C("bomb.png", "image", "PNG header claiming 100000x100000 pixels (decompression bomb)", _b(_png_bomb),
      "load", "decompression"),
    C("png_named.wav", "audio", "a PNG named .wav", _b(lambda: _png(16, 16, 3)), repaired="image", meta="format"),
    C("dir.png/inner.txt", "image", "a directory named dir.png", _dir_like_file, repaired="text", meta="encoding"),
    # infrared (path hint 'thermal')
    C("thermal_truncated.png", "infrared", "truncated 16-bit thermal PNG",
      _b(lambda: _half(_png(40, 40, 4, mode="I;16"))), "load", "truncated"),
    C("thermal_nan.tiff", "infrared", "float thermal TIFF, every pixel NaN", _tiff_nan, "load", "no finite values"),
    # X-ray
    C("dicm_garbage.dcm", "xray", "DICM preamble followed by garbage",
      _b(lambda: b"\0" * 128 + b"DICM" + np.random.default_rng(5).bytes(200)), "load", "no pixel data"),
    C("cxr_truncated.png", "xray", "truncated 8-bit chest X-ray PNG",
      _b(lambda: _half(_png(64, 64, 2, mode="L"))), "load", "truncated"),
    # video
    C("truncated.mp4", "video", "MP4 cut in half (no 'moov' index)",
      lambda p, m: (_video(p, 8), p.write_bytes(_half(p.read_bytes()))), "load", "truncated MP4"),
    C("zero_frames.mp4", "video", "MP4 with a video track and 0 frames", lambda p, m: _video(p, 0),
      "load", "no video stream"),
    C("zero_frames.avi", "video", "AVI with a video stream and 0 frames", lambda p, m: _video(p, 0, "avi"),
      "load", "no packets"),
    # audio
    C("truncated.wav", "audio", "WAV header declares 16000 frames, 8 present", _b(lambda: _wav()[:60]),
      repaired="audio", meta="repair"),
    C("truncated.flac", "audio", "FLAC cut to a third", _b(lambda: _flac()[:3000]),
      "load", "corrupt"),
    C("huge_rate.wav", "audio", "WAV header claiming a 4294967280 Hz sample rate",
      _b(lambda: _wav_lying(rate=0xFFFFFFF0)), "load", "sample rate"),
    C("ultra_rate.wav", "audio", "WAV header claiming a 2 GHz sample rate (libsndfile accepts it)",
      _b(lambda: _wav_lying(rate=2_000_000_000)), "load", "sample rate"),
    C("zero_channels.wav", "audio", "WAV header claiming 0 channels", _b(lambda: _wav_lying(channels=0)),
      "load", "0 channels"),
    C("garbage.mp3", "audio", "ID3 tag followed by random bytes",
      _b(lambda: b"ID3\x04\0\0\0\0\0\x10" + np.random.default_rng(6).bytes(3000)), "load", "no decoder"),
    # point cloud
    C("truncated.ply", "point_cloud", "binary PLY declaring 2048 vertices, 100 present",
      _b(lambda: _ply(2048, np.zeros((100, 3)))), "load", "truncated"),
    C("billion.ply", "point_cloud", "PLY header claiming 10^9 vertices",
      _b(lambda: _ply(10**9, np.zeros((10, 3)))), "load", "1,000,000,000 vertices"),
    C("nan.ply", "point_cloud", "PLY whose every coordinate is NaN", _b(lambda: _ply(64, np.full((64, 3), np.nan))),
      "load", "NaN"),
    C("bad_header.pcd", "point_cloud", "PCD header with non-numeric WIDTH/POINTS",
      _t("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH abc\n"
         "HEIGHT 1\nPOINTS many\nDATA ascii\n1 2 3\n"), "load", "corrupt PCD header"),
    # hyperspectral
    C("bad_interleave.hdr", "hyperspectral", "ENVI header with interleave = xyz", _envi("xyz", True),
      "load", "interleave"),
    C("no_data.hdr", "hyperspectral", "ENVI header without its data file", _envi("bsq", False),
      "load", "data file not found"),
    C("hyperspectral_flat.npy", "hyperspectral", "2-D NPY under a hyperspectral name hint",
      _np(lambda: np.ones((8, 8), np.float32)), "load", "a cube needs"),
    C("garbage.mat", "hyperspectral", "MATLAB 5.0 header followed by garbage",
      _b(lambda: b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + b" " * 78 + np.random.default_rng(7).bytes(300)),
      "load", "corrupt MATLAB"),
    # tabular
    C("header_only.csv", "tabular", "CSV with a header and no rows", _t("a,b,c\n"), "load", "no data rows"),
    C("truncated.parquet", "tabular", "Parquet cut in half (no footer)", _b(lambda: _half(_parquet())),
      "load", "Parquet"),
    C("broken.jsonl", "tabular", "JSON Lines with a cut last record", _b(b'{"a": 1, "b": 2}\n{"a": 3, "b": \n'),
      "load", "invalid JSON"),
    # graph
    C("broken.gml", "graph", "GML cut inside an edge", _t("graph [\n  node [ id 1 ]\n  edge [ source 1 target\n"),
      "load", "cannot read as gml"),
    C("broken.graphml", "graph", "GraphML with unclosed XML",
      _t('<?xml version="1.0"?>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph>'
         '<node id="a"/><edge source="a" tar'), "load", "unclosed token"),
    C("dangling.json", "graph", "node-link JSON with an edge to a missing node",
      _t('{"nodes": [{"id": 0}, {"id": 1}], "links": [{"source": 0, "target": 1}, {"source": 0, "target": 7}]}'),
      "load", "unknown target"),
    C("evil.gpickle", "graph", "a .gpickle whose payload runs exec", lambda p, m: p.write_bytes(_evil(m)),
      "load", "refusing to unpickle"),
    # time series
    C("ts_nan.npy", "time_series", "NPY series of NaN (name hint 'ts')", _np(lambda: np.full((96, 3), np.nan)),
      "load", "no numeric values"),
    C("ts_text_only.csv", "time_series", "CSV with a time column and no numeric channel (forced by --map)",
      _t("time,label,note\n" + "".join(f"{i},a{i},b{i}\n" for i in range(10))), "load", "no numeric column"),
    C("ts_wide.npy", "time_series", "NPY series with 2100 channels (name hint 'ts')",
      _np(lambda: np.ones((100, 2100), np.float32)), "load", "channels exceed"),
    C("ts_pickled.npz", "time_series", "NPZ holding a pickled object array (name hint 'ts')",
      lambda p, m: np.savez(p, a=np.array([Payload(m), 2], dtype=object)), "load", "object arrays are refused"),
    C("forced_ts_pickle.npy", "time_series", "pickled object array in .npy, forced to time_series by --map",
      lambda p, m: np.save(p, np.array([Payload(m), 1], dtype=object), allow_pickle=True),
      "load", "object arrays are refused"),
    C("pickled.npy", "point_cloud", "pickled object array in .npy (np.save allow_pickle=True)",
      lambda p, m: np.save(p, np.array([Payload(m), 1], dtype=object), allow_pickle=True),
      "sniff", "never unpickled"),
    # IMU
    C("imu_text.csv", "imu", "accelerometer columns holding words",
      _t(IMU_HEAD + "".join(f"{i / 100:.2f},up,down,left\n" for i in range(50))),
      "load", "no numeric values"),
    C("imu_allinf.csv", "imu", "accelerometer channel that is all inf",
      _t(IMU_HEAD + "".join(f"{i / 100:.2f},inf,0.2,1.0\n" for i in range(300))), "load", "no numeric values"),
    C("imu_inf.csv", "imu", "some inf samples in a channel",
      _t(IMU_HEAD + "".join(f"{i / 100:.2f},{'inf' if i % 7 == 0 else 0.1 * (i % 5)},0.2,1.0\n" for i in range(300))),
      repaired="imu", meta="interpolated_values"),
    C("imu_backwards.csv", "imu", "timestamps that go backwards and repeat", _t(_imu_backwards),
      repaired="imu", meta="repairs"),
    # text
    C("garbage.txt", "text", "random binary bytes named .txt", _b(lambda: np.random.default_rng(8).bytes(2000)),
      "load", "binary content"),
    C("latin1.txt", "text", "Latin-1 text (invalid UTF-8)",
      _b("caf\xe9 cr\xe8me br\xfbl\xe9e, a note in Latin-1\n".encode("latin-1")), repaired="text", meta="encoding"),
    # declared sizes over the per-sample memory budget, or beyond what the file can hold (#17 item 1)
    C("vertices.net", "graph", "32-byte Pajek file declaring 2,000,000,000 vertices",
      lambda p, m: hostile.pajek_vertices(p), "load", "over the limit of"),
    C("isolated.graphml", "graph", "GraphML of 300,000 isolated nodes (6 MB)",
      lambda p, m: hostile.graphml_nodes(p, 300_000), "load", "over the limit of"),
    C("lzf_bomb.pcd", "point_cloud", "400-byte PCD whose binary_compressed size word declares 240 MB",
      lambda p, m: hostile.pcd_compressed(p, 20_000_000), "load", "compression ratio"),
    C("declared.npz", "point_cloud", "NPZ member whose NPY header declares (20000000, 3) over 4 KB",
      lambda p, m: hostile.npz_declared(p, (20_000_000, 3)), "load", "compression ratio"),
    C("ts_bomb.npz", "time_series", "NPZ (name hint 'ts') whose 100 KB of deflate hold 100 MB of zeros",
      lambda p, m: hostile.npz_zeros(p, 100_000_000, key="x"), "load", "over the limit of"),
    C("zeros_v5.mat", "hyperspectral", "zlib-compressed MATLAB v5 cube of 320 MB zeros (300 KB)",
      lambda p, m: hostile.mat5_compressed_zeros(p, (200, 200, 1000)), "load", "over the limit of"),
    C("unwritten_v73.mat", "hyperspectral", "MATLAB v7.3 cube declared 100x200x200, never written",
      lambda p, m: hostile.mat73_declared(p, (200, 200, 100), (100, 50, 50), write=False), "load", "stores no data"),
    C("bands.tiff", "hyperspectral", "zlib TIFF of 2000x2000x40 uint16 zeros (0.3 MB)",
      lambda p, m: hostile.tiff_bands(p, (2000, 2000, 40)), "load", "over the limit of"),
    C("rgba16.png", "image", "valid 9000x9000 RGBA16 PNG of 0.6 MB (Pillow: 324 MB)",
      lambda p, m: hostile.png_zeros(p, 9000, 9000), "load", "over the limit of"),
    C("screen.gif", "video", "animated GIF with a 20000x5000 logical screen",
      lambda p, m: hostile.gif_screen(p), "load", "over the limit of"),
    C("imu_day_gap.csv", "imu", "IMU recording whose last row is a day later",
      lambda p, m: hostile.imu_day_gap(p, 3000), repaired="imu", meta="gaps"),
    C("imu_zero_stamp.csv", "imu", "Unix-time IMU recording with one timestamp written as 0",
      lambda p, m: hostile.imu_zero_stamp(p, 3000), repaired="imu", meta="isolated_rows_dropped"),
    # no content (#17 items 4 and 16)
    C("imu_ns.csv", "imu", "1,000 IMU rows 1 ns apart (nothing left at 200 Hz)",
      lambda p, m: hostile.imu_ns_steps(p), "load", "no sample at 200 Hz"),
    C("nan.wav", "audio", "float WAV whose every sample is NaN",
      lambda p, m: hostile.wav_float(p, np.full(8000, np.nan)), "load", "no finite samples"),
    C("hsi_nan.npy", "hyperspectral", "NPY cube of NaN (name hint 'hsi')",
      _np(lambda: np.full((8, 8, 16), np.nan, np.float32)), "load", "no finite values"),
    C("one_place.xyz", "point_cloud", "XYZ cloud whose 50 points are one point",
      _t("1 2 3\n" * 50), "load", "one location"),
    # messages (#17 item 15)
    C("short_pixels.dcm", "xray", "DICOM whose pixel data is shorter than rows x cols x bits",
      lambda p, m: hostile.dicom_pixels(p, 64, 64, nbytes=1000), "load", "pixel data holds 1,000 bytes"),
    # anything
    C("evil.pth", "", "a pickle whose payload runs exec, named .pth, in the data", lambda p, m: p.write_bytes(_evil(m)),
      "sniff", "never unpickled"),
    C("evil.pkl", "", "a pickle whose payload runs exec", lambda p, m: p.write_bytes(_evil(m)),
      "sniff", "never unpickled"),
    C("dangling_link.png", "image", "symlink to a missing file",
      lambda p, m: os.symlink(p.with_name("no_such_target.png"), p), "discover", "broken symlink"),
    C("loop_a.png", "image", "symlink loop", lambda p, m: _symlink_pair(p), "discover", "symlink loop"),
    C("too_long_path", "text", "a folder whose path is over PATH_MAX (a text file inside)",
      lambda p, m: _too_deep(p), "discover", "path too long"),
    C("bad\\xff.txt", "text", "non-UTF-8 file name, empty file", _write_bytes_name(b"bad\xff.txt", b""),
      "sniff", "0 bytes"),
    C("caf\\xe9_good.png", "image", "non-UTF-8 file name, good PNG", _write_bytes_name(b"caf\xe9_good.png", _png(20, 20, 5)),
      repaired="image", meta="format"),
]
FAILS = [c for c in CASES if c.stage]
REPAIRS = [c for c in CASES if c.repaired]
GOOD = {"good.png": "image", "good.txt": "text", "good.csv#row=0": "tabular"}
DERIVED = {"loop_a.png": ["loop_b.png"]}  # files a case makes besides its own


def build(d: Path, marker: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "good.png").write_bytes(_png())
    (d / "good.txt").write_text("a short note about frozen encoders and shared tokens.\n")
    (d / "good.csv").write_text("age,income,city\n" + "".join(f"{20 + i},{1000 * i},c{i % 3}\n" for i in range(5)))
    for c in CASES:
        c.make(d / c.name.split("/")[0], marker)


@dataclass
class Run:
    root: Path
    out: Path
    marker: Path
    rc: int
    stdout: str
    stderr: str
    failures: dict[str, tuple[str, str, str]]  # name -> (modality, stage, message)
    rows: dict[str, str]  # id -> modality


def _embed(root: Path, out: Path, marker: Path) -> Run:
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(["embed", str(root), "-o", str(out), *TINY, "-j", "0", "--no-progress", "--json", *MAPS])
    with h5py.File(out, "r") as f:
        g = f["failures"]
        failures = {Path(p).name: (m, s, msg) for p, m, s, msg in zip(
            g["path"].asstr()[()], g["modality"].asstr()[()], g["stage"].asstr()[()], g["message"].asstr()[()],
            strict=True)}
        ds = f["modality"]
        names = {v: k for k, v in h5py.check_enum_dtype(ds.dtype).items()} if ds.dtype.kind in "iu" else None
        mods = [names[int(v)] for v in ds[()]] if names else list(ds.asstr()[()])
        rows = dict(zip(f["id"].asstr()[()], mods, strict=True))
    return Run(root, out, marker, rc, o.getvalue(), e.getvalue(), failures, rows)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("badin")
    root, marker = base / "data", base / "marker_executed"
    build(root, marker)
    return _embed(root, base / "out.h5", marker)


# ------------------------------------------------------------------------------------------
# Assertions
# ------------------------------------------------------------------------------------------


def test_the_matrix_is_broad():
    assert len(FAILS) + len(REPAIRS) >= 30
    assert {c.modality for c in CASES} >= {"image", "infrared", "xray", "video", "audio", "point_cloud",
                                           "hyperspectral", "tabular", "graph", "time_series", "imu", "text"}


def test_one_run_exit_3_good_files_embedded_nothing_executed(run):
    assert run.rc == 3, run.stderr
    for id_, modality in GOOD.items():
        assert run.rows.get(id_) == modality, id_
    assert not run.marker.exists(), "a pickle payload was executed"
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    summary = json.loads(run.stdout)
    # every input is accounted for exactly once: the bad ones failed, the rest embedded
    expected_failed = {c.name for c in FAILS} | {n for c in FAILS for n in DERIVED.get(c.name, [])}
    assert set(run.failures) == expected_failed
    assert summary["n_failed"] == len(expected_failed)


@pytest.mark.parametrize("case", FAILS, ids=[c.name for c in FAILS])
def test_bad_input_is_a_one_line_failure_naming_the_problem(run, case):
    assert case.name in run.failures, f"{case.name} was not recorded as failed"
    modality, stage, message = run.failures[case.name]
    assert stage == case.stage, (stage, message)
    assert case.needle.lower() in message.lower(), message
    assert "\n" not in message and "Traceback" not in message and message.strip() == message
    assert not any(i.split("#")[0] == case.name for i in run.rows), "a failed file also has rows"


def _disk_name(name: str) -> bytes:
    """The bytes of a case's file name on disk (its name here has backslash escapes)."""
    return name.encode().decode("unicode_escape").encode("latin-1")


def meta_of(path: str) -> dict:
    """The first sample's meta, from ``mtx tokenize --json``."""
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(["tokenize", path, *TINY, "--json"])
    assert rc == 0, e.getvalue()
    return json.loads(o.getvalue())[0]["samples"][0]["meta"]


@pytest.mark.parametrize("case", REPAIRS, ids=[c.name for c in REPAIRS])
def test_documented_repair_is_embedded_and_recorded(run, case):
    assert run.rows.get(case.name) == case.repaired, (case.name, run.rows.get(case.name))
    assert case.name not in run.failures
    meta = meta_of(os.fsdecode(os.path.join(os.fsencode(run.root), _disk_name(case.name))))
    assert case.meta in meta, meta


def test_repairs_say_what_they_did(run):
    def meta_of_(name: str) -> dict:
        return meta_of(str(run.root / name))

    assert any("backwards" in r for r in meta_of_("imu_backwards.csv")["repairs"])
    assert any("repeated timestamp" in r for r in meta_of_("imu_backwards.csv")["repairs"])
    assert meta_of_("imu_inf.csv")["interpolated_values"] == 43
    assert "declares 16000 frames" in meta_of_("truncated.wav")["repair"]
    assert meta_of_("latin1.txt")["decode_errors"] == "replace"


def _rows_of(out) -> dict[str, str]:
    with h5py.File(out, "r") as f:
        enum = {v: k for k, v in h5py.check_enum_dtype(f["modality"].dtype).items()}
        return dict(zip(f["id"].asstr()[()], (enum[int(m)] for m in f["modality"][()]), strict=True))


def test_non_utf8_names_round_trip_into_hdf5_and_resume(run):
    assert run.rows["caf\\xe9_good.png"] == "image"
    with h5py.File(run.out, "r") as f:
        paths = list(f["path"].asstr()[()])
        assert any(p.endswith("/caf\\xe9_good.png") for p in paths)
    # a rerun skips every embedded input, the oddly named ones included; failed inputs are tried
    # again (the cause may be gone) and fail again; nothing new is embedded
    o = io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["embed", str(run.root), "-o", str(run.out), *TINY, "-j", "0", "--no-progress", "--json",
                   *MAPS])
    s = json.loads(o.getvalue())
    assert rc == 3 and s["n_embedded"] == 0 and s["n_skipped"] >= 1, s
    assert s["n_failed"] == s["n_inputs"] - s["n_skipped"], s
    assert _rows_of(run.out) == run.rows  # failures retried without touching the embedded rows


def test_non_utf8_names_print_in_a_strict_utf8_locale(run):
    # A UTF-8 terminal gives Python a strict stdout: an odd file name must still print (as its
    # own bytes, like ls), not end the command with "internal error: UnicodeEncodeError".
    import subprocess

    path = os.path.join(os.fsencode(run.root), _disk_name("caf\\xe9_good.png"))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONPATH": str(Path(__file__).parents[1])}
    for args in (["tokenize", path, *TINY, "--json"], ["tokenize", path, *TINY],
                 ["embed", path, "-o", os.fsencode(run.out.with_name("one.h5")), *TINY, "--dry-run"]):
        r = subprocess.run([sys.executable, "-m", "mtx", *args], capture_output=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert path in r.stdout or os.path.basename(path) in r.stdout
    out = subprocess.run([sys.executable, "-m", "mtx", "tokenize", path, *TINY, "--json"], capture_output=True,
                         env=env, timeout=120).stdout
    assert json.loads(out.decode("utf-8", "surrogateescape"))[0]["path"].encode("utf-8", "surrogateescape") == path


def test_malicious_pickle_as_weights_is_fatal_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "marker_executed"
    for protocol in (2, pickle.DEFAULT_PROTOCOL):
        evil = tmp_path / f"evil{protocol}.pth"
        evil.write_bytes(_evil(marker, protocol))
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / "a.png").write_bytes(_png())
        capsys.readouterr()
        rc = main(["embed", str(tmp_path / "in"), "-o", str(tmp_path / "o.h5"), "-m", "tiny", "-w", str(evil), "-q"])
        err = capsys.readouterr().err
        assert rc == 1
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, err
        assert str(evil) in lines[0] and "weights_only" in lines[0] and "Traceback" not in err
        assert "weights_only` set to `False`" not in err  # never advise loading it unsafely
        assert not marker.exists()
        assert not (tmp_path / "o.h5").exists()


def test_docs_show_every_case():
    text = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    missing = [c.name for c in CASES if f"| `{c.name}` |" not in text]
    assert not missing, f"docs/reliability.md lacks {missing}: paste `python tests/test_bad_inputs.py`"


# ------------------------------------------------------------------------------------------
# The table for docs/reliability.md
# ------------------------------------------------------------------------------------------


def table(r: Run) -> str:
    lines = ["| input | kind of bad input | claims to be | outcome: stage | message / repair recorded |",
             "|---|---|---|---|---|"]
    for c in CASES:
        if c.stage:
            _, stage, msg = r.failures.get(c.name, ("", "?", "(not recorded)"))
            msg = msg.replace(str(r.root) + "/", "").replace("|", "\\|")
            outcome = f"failed: {stage}"
        else:
            outcome = f"embedded as {r.rows.get(c.name, '?')}"
            msg = f"repair recorded in meta `{c.meta}`"
            if c.name == "dir.png/inner.txt":
                msg = "a directory is walked, never read as a file"
            elif c.name == "png_named.wav":
                msg = "magic bytes win over the extension (reason: PNG magic bytes)"
            elif c.name.startswith("caf"):
                msg = "id and path stored with backslash escapes; resume skips it"
        lines.append(f"| `{c.name}` | {c.kind} | {c.modality or '-'} | {outcome} | {msg} |")
    return "\n".join(lines)


if __name__ == "__main__":  # print the matrix as markdown
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root, marker = Path(tmp) / "data", Path(tmp) / "marker_executed"
        build(root, marker)
        r = _embed(root, Path(tmp) / "out.h5", marker)
        print(table(r))
        print(f"\nexit code {r.rc}; payload executed: {marker.exists()}", file=sys.stderr)
