"""Small, deterministic, *valid* files of the kinds users have that mtx used to refuse (issue #17,
items 5-9): AAC/M4A/MKA/WebM/WMA/AC3 audio, raw H.264/H.265 streams, Matroska/WebM whose audio
outlasts the video, UTF-16/32 text without a byte-order mark, GML with UTF-8 labels, XYZ clouds
with a header line, NPY with named x/y/z fields, very wide CSVs, a CSV with a 50 MB cell,
European CSVs, stock-price CSVs (month names, newest first), float planar multi-page TIFFs and a
PNG with megabytes of text metadata.

Each builder writes one file and returns its path; :data:`CASES` maps a file name to its builder
and the modality it must be sniffed as. ``python tests/validgen.py OUT`` writes every case to
OUT (to look at, or to run ``mtx tokenize`` over).
"""
from __future__ import annotations

import io
import math
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Audio and video through PyAV
# ---------------------------------------------------------------------------------------------


def tone(seconds: float, rate: int, channels: int = 1, f0: float = 440.0) -> np.ndarray:
    """[channels, n] float32 tones with a little deterministic noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(5)
    rows = [0.3 * np.sin(2 * math.pi * f0 * (c + 1) * t) + 0.02 * rng.standard_normal(len(t))
            for c in range(channels)]
    return np.asarray(rows, dtype=np.float32)


def _encode_audio(container, stream, seconds: float, rate: int, channels: int) -> None:
    import av

    sig = tone(seconds, rate, channels)
    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    layout = "mono" if channels == 1 else "stereo"
    frame_size = stream.codec_context.frame_size or 1024
    res = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    pts = 0
    for i in range(0, sig.shape[1], frame_size):
        block = np.ascontiguousarray(sig[:, i:i + frame_size])
        fr = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        fr.sample_rate = rate
        fr.pts = pts
        pts += block.shape[1]
        for out in res.resample(fr):
            for pkt in stream.encode(out):
                container.mux(pkt)
    for out in res.resample(None):
        for pkt in stream.encode(out):
            container.mux(pkt)
    for pkt in stream.encode(None):
        container.mux(pkt)


def av_audio(path: Path, container_format: str, codec: str, seconds: float = 3.0, rate: int = 44100,
             channels: int = 2, bit_rate: int = 96000) -> Path:
    """An audio-only file written by FFmpeg (through PyAV)."""
    import av

    with av.open(str(path), "w", format=container_format) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono" if channels == 1 else "stereo"
        if bit_rate and codec not in ("alac", "flac", "pcm_s16le"):
            s.bit_rate = bit_rate
        _encode_audio(c, s, seconds, rate, channels)
    return path


def _video_frames(n: int, size: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    for t in range(n):
        yield np.roll(base, 3 * t, axis=1)


def av_video(path: Path, container_format: str, vcodec: str, video_seconds: float = 2.0,
             audio_seconds: float = 0.0, acodec: str = "aac", fps: int = 8, size: int = 64,
             options: dict | None = None) -> Path:
    """A video (optionally with an audio stream of another length) written through PyAV."""
    import av

    with av.open(str(path), "w", format=container_format, options=options or {}) as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        if vcodec in ("libx264", "libx265"):
            vs.options = {"preset": "ultrafast"} if vcodec == "libx264" else {"preset": "ultrafast",
                                                                             "x265-params": "log-level=none"}
        ast = None
        if audio_seconds:
            ast = c.add_stream(acodec, rate=48000)
            ast.layout = "stereo"
        for arr in _video_frames(int(video_seconds * fps), size):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode(None):
            c.mux(pkt)
        if ast is not None:
            _encode_audio(c, ast, audio_seconds, 48000, 2)
    return path


def raw_h264(path: Path) -> Path:
    return av_video(path, "h264", "libx264", video_seconds=2.0)


def raw_h265(path: Path) -> Path:
    return av_video(path, "hevc", "libx265", video_seconds=2.0)


# ---------------------------------------------------------------------------------------------
# Text, graph, points
# ---------------------------------------------------------------------------------------------

PROSE = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.\n"
         "Sphinx of black quartz, judge my vow. How vexingly quick daft zebras jump!\n") * 20


def utf_text(path: Path, codec: str, text: str = PROSE) -> Path:
    """``text`` encoded as ``codec`` ('utf-16-le', 'utf-16-be', 'utf-32-le'...), no byte-order mark."""
    path.write_bytes(text.encode(codec))
    return path


def gml_utf8(path: Path) -> Path:
    """GML whose labels are raw UTF-8 (as networkx and Gephi write them), one with a ``&#...;`` escape."""
    labels = ["Zürich", "Genève", "Bern", "Lugano", "Sankt Moritz", "Neuchâtel"]
    lines = ["graph [", "  directed 0"]
    for i, name in enumerate(labels):
        lines += ["  node [", f"    id {i}", f'    label "{name}"', f"    population {1000 * (i + 1)}", "  ]"]
    lines += ["  node [", "    id 6", '    label "Z&#252;g &amp; Baar"', "  ]"]
    for u, v in ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (6, 0), (6, 2)):
        lines += ["  edge [", f"    source {u}", f"    target {v}", "  ]"]
    lines.append("]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cloud(n: int = 2000, seed: int = 2) -> np.ndarray:
    """[n, 3] points on a unit sphere (deterministic)."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def xyz_with_header(path: Path, header: str, sep: str = " ", rgb: bool = False, order: str = "xyz") -> Path:
    """XYZ text with a header line (``x y z``, ``X,Y,Z,R,G,B``, ``//X,Y,Z``...); ``order`` puts the
    coordinate columns where the header says (e.g. 'rgbxyz' for colour first)."""
    p = cloud()
    cols = {"x": p[:, 0], "y": p[:, 1], "z": p[:, 2]}
    if rgb:
        rng = np.random.default_rng(1)
        for k in "rgb":
            cols[k] = rng.integers(0, 256, len(p)).astype(np.float64)
    rows = [sep.join(f"{cols[k][i]:.6f}" if k in "xyz" else f"{int(cols[k][i])}" for k in order)
            for i in range(len(p))]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def npy_fields(path: Path, names: tuple[str, ...] = ("x", "y", "z", "intensity"), dtype: str = "<f4") -> Path:
    p = cloud()
    rec = np.zeros(len(p), dtype=[(n, dtype) for n in names])
    for i, n in enumerate(names):
        rec[n] = p[:, i] if i < 3 else np.linspace(0, 1, len(p))
    np.save(path, rec)
    return path


# ---------------------------------------------------------------------------------------------
# CSVs
# ---------------------------------------------------------------------------------------------


def wide_csv(path: Path, columns: int = 5000, rows: int = 4) -> Path:
    """A header longer than 64 KiB (5,000 columns of ~14-character names)."""
    rng = np.random.default_rng(0)
    head = ",".join(f"measurement_{j:05d}" for j in range(columns))
    body = "\n".join(",".join(f"{v:.3f}" for v in rng.standard_normal(columns)) for _ in range(rows))
    path.write_text(head + "\n" + body + "\n")
    return path


def big_cell_csv(path: Path, cell_mb: float = 50.0) -> Path:
    """A valid CSV whose one text cell holds ``cell_mb`` MB (a quoted blob, e.g. an embedded document)."""
    blob = ("lorem ipsum dolor sit amet " * (int(cell_mb * 1e6) // 27 + 1))[: int(cell_mb * 1e6)]
    with open(path, "w") as f:
        f.write("id,score,document\n")
        f.write('1,0.5,"short"\n')
        f.write(f'2,0.7,"{blob}"\n')
        f.write('3,0.9,"also short"\n')
    return path


def european_csv(path: Path) -> Path:
    """``;`` delimiter, decimal commas, thousands dots (as Excel writes in de/fr/it/es locales)."""
    rng = np.random.default_rng(4)
    lines = ["Stadt;Einwohner;Fläche_km2;Dichte;Anteil"]
    for i in range(40):
        pop = int(rng.integers(1_000, 3_000_000))
        area = rng.uniform(10, 900)
        lines.append(f"Stadt{i};{pop:,}".replace(",", ".") + f";{area:.2f}".replace(".", ",")
                     + f";{pop / area:.1f}".replace(".", ",") + f";{rng.random():.3f}".replace(".", ","))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _comma(v: float, digits: int) -> str:
    return f"{v:.{digits}f}".replace(".", ",")


def european_series_csv(path: Path) -> Path:
    """A German-locale export: ``;``, ``dd.mm.yyyy`` dates and decimal commas."""
    lines = ["Datum;Temperatur;Niederschlag"]
    for i in range(60):
        y, m, dd = str(np.datetime64("2023-01-01") + i).split("-")
        lines.append(f"{dd}.{m}.{y};{_comma(10 + 5 * math.sin(i / 5), 2)};{_comma(abs(math.cos(i)) * 3, 1)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def european_imu_csv(path: Path, n: int = 2000) -> Path:
    """A phone logger in a German locale: ``;``, decimal commas, 200 Hz accelerometer + gyroscope."""
    rng = np.random.default_rng(3)
    lines = ["time;acc_x;acc_y;acc_z;gyr_x;gyr_y;gyr_z"]
    for i in range(n):
        lines.append(";".join([_comma(i * 0.005, 3), *(_comma(v, 4) for v in rng.standard_normal(6))]))
    path.write_text("\n".join(lines) + "\n")
    return path


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


def _prices(n: int, seed: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 20 + np.cumsum(rng.standard_normal(n) * 0.3)
    return np.stack([close + 0.1, close + 0.4, close - 0.4, close, rng.integers(1e5, 1e6, n)], axis=1)


def stock_csv(path: Path, style: str = "dd-Mon-yy", newest_first: bool = True, n: int = 120) -> Path:
    """A stock-price export: Date,Open,High,Low,Close,Volume, newest first as finance sites write."""
    days = [np.datetime64("2003-06-02") + i for i in range(n)]
    px = _prices(n)
    lines = []
    for d, row in zip(days, px, strict=True):
        y, m, dd = (int(v) for v in str(d).split("-"))
        mon = _MONTHS[m - 1]
        date = {"dd-Mon-yy": f"{dd}-{mon[:3]}-{y % 100:02d}",
                "Mon dd yyyy": f"{mon[:3]} {dd} {y}",
                "dd Month yyyy": f"{dd} {mon} {y}",
                "iso": f"{y}-{m:02d}-{dd:02d}"}[style]
        lines.append(f"{date},{row[0]:.2f},{row[1]:.2f},{row[2]:.2f},{row[3]:.2f},{int(row[4])}")
    if newest_first:
        lines.reverse()
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(lines) + "\n")
    return path


def descending_epoch_csv(path: Path, n: int = 100) -> Path:
    """A numeric time column (unix seconds) newest first."""
    t = 1_700_000_000 + 60 * np.arange(n)[::-1]
    v = np.sin(np.arange(n)[::-1] / 7)
    path.write_text("timestamp,value,other\n" + "\n".join(f"{a},{b:.4f},{b * 2:.4f}" for a, b in zip(t, v, strict=True)) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def float_planar_tiff(path: Path, pages: int = 2, h: int = 40, w: int = 48) -> Path:
    """A float64, planar-configuration-2 (separate planes) RGB TIFF of ``pages`` pages."""
    import tifffile

    yy, xx = np.mgrid[0:h, 0:w]
    with tifffile.TiffWriter(path) as tw:
        for k in range(pages):
            planes = np.stack([xx / w, yy / h, (xx + yy + k) / (w + h)]).astype(np.float64) * 1000.0
            tw.write(planes, photometric="rgb", planarconfig="separate")
    return path


def png_with_text(path: Path, text_mb: float = 2.0, compressed: bool = True, after_pixels: bool = False) -> Path:
    """An ordinary PNG with ``text_mb`` MB of text metadata (zTXt when ``compressed``, else tEXt),
    before the pixel data (or after it)."""
    from PIL import Image

    b = io.BytesIO()
    rng = np.random.default_rng(8)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(b, "PNG")
    png = b.getvalue()
    payload = ("<x:xmpmeta>" + "metadata " * int(text_mb * 1e6 / 9) + "</x:xmpmeta>").encode("latin-1")
    kind, data = (b"zTXt", b"Comment\x00\x00" + zlib.compress(payload)) if compressed else \
        (b"tEXt", b"Comment\x00" + payload)
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    at = len(png) - 12 if after_pixels else 8 + 25  # before IEND, or after the signature and IHDR
    path.write_bytes(png[:at] + chunk + png[at:])
    return path


# ---------------------------------------------------------------------------------------------
# The cases: file name -> (builder, expected modality)
# ---------------------------------------------------------------------------------------------

Builder = Callable[[Path], Path]

CASES: dict[str, tuple[Builder, str]] = {
    # 5. audio PyAV decodes and libsndfile does not; raw elementary video streams
    "aac_in_m4a.m4a": (lambda p: av_audio(p, "ipod", "aac"), "audio"),
    "alac_in_m4a.m4a": (lambda p: av_audio(p, "ipod", "alac", channels=1), "audio"),
    "aac_audio_only.mp4": (lambda p: av_audio(p, "mp4", "aac"), "audio"),
    "adts.aac": (lambda p: av_audio(p, "adts", "aac"), "audio"),
    "aac_in_mka.mka": (lambda p: av_audio(p, "matroska", "aac"), "audio"),
    "opus_audio_only.webm": (lambda p: av_audio(p, "webm", "libopus", rate=48000), "audio"),
    "wma_v2.wma": (lambda p: av_audio(p, "asf", "wmav2"), "audio"),
    "ac3.ac3": (lambda p: av_audio(p, "ac3", "ac3", rate=48000, bit_rate=192000), "audio"),
    "mp2_in_mkv_noext": (lambda p: av_audio(p, "matroska", "mp2"), "audio"),
    "video_with_aac.mp4": (lambda p: av_video(p, "mp4", "mpeg4", audio_seconds=2.0), "video"),
    "raw_stream.h264": (raw_h264, "video"),
    "raw_stream.h265": (raw_h265, "video"),
    # 6. audio outlasting the video
    "audio_outlasts_video.mkv": (lambda p: av_video(p, "matroska", "mpeg4", 2.0, 6.0), "video"),
    "audio_outlasts_video.webm": (lambda p: av_video(p, "webm", "libvpx", 2.0, 6.0, acodec="libopus"),
                                  "video"),
    # 7. text, graph, points
    "utf16le_nobom.txt": (lambda p: utf_text(p, "utf-16-le"), "text"),
    "utf16be_nobom": (lambda p: utf_text(p, "utf-16-be"), "text"),
    "utf32le_nobom.txt": (lambda p: utf_text(p, "utf-32-le"), "text"),
    "utf16le_accents_nobom": (lambda p: utf_text(p, "utf-16-le", "Café crème, déjà vu, naïve façade.\n" * 40),
                              "text"),
    "labels_utf8.gml": (gml_utf8, "graph"),
    "header_xyz.xyz": (lambda p: xyz_with_header(p, "x y z"), "point_cloud"),
    "header_XYZRGB.xyz": (lambda p: xyz_with_header(p, "X,Y,Z,R,G,B", ",", rgb=True, order="xyzrgb"),
                          "point_cloud"),
    "header_rgb_first.xyz": (lambda p: xyz_with_header(p, "//R G B X Y Z", rgb=True, order="rgbxyz"),
                             "point_cloud"),
    "fields_xyzi.npy": (npy_fields, "point_cloud"),
    "fields_XYZ.npy": (lambda p: npy_fields(p, ("X", "Y", "Z"), "<f8"), "point_cloud"),
    # 8. CSVs
    "wide_5000_columns.csv": (wide_csv, "tabular"),
    "cell_50mb.csv": (big_cell_csv, "tabular"),
    "european.csv": (european_csv, "tabular"),
    "european_series.csv": (european_series_csv, "time_series"),
    "european_imu.csv": (european_imu_csv, "imu"),
    "stock_dd-Mon-yy.csv": (lambda p: stock_csv(p, "dd-Mon-yy"), "time_series"),
    "stock_Mon_dd_yyyy.csv": (lambda p: stock_csv(p, "Mon dd yyyy"), "time_series"),
    "stock_dd_Month_yyyy.csv": (lambda p: stock_csv(p, "dd Month yyyy"), "time_series"),
    "stock_iso_newest_first.csv": (lambda p: stock_csv(p, "iso"), "time_series"),
    "epoch_newest_first.csv": (descending_epoch_csv, "time_series"),
    # 9. images
    "float64_planar_2page.tif": (float_planar_tiff, "image"),
    "png_2mb_ztxt.png": (png_with_text, "image"),
    "png_2mb_text.png": (lambda p: png_with_text(p, compressed=False), "image"),
}


def build(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return CASES[name][0](folder / name)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "validfiles")
    for name in CASES:
        build(name, out)
        print(out / name)
