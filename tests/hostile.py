"""Writers of hostile files whose headers declare far more than they hold (issue #17, item 1).

Every writer streams: a file that decompresses to gigabytes is written without ever holding
them, so the tests (and ``python tests/hostile.py DIR`` for the full-size severe cases measured
in the closing note of the issue) stay cheap. Sizes are parameters: the tests use small ones with
a small ``MTX_MAX_SAMPLE_MEMORY``; ``SEVERE`` lists the full-size reproductions of the issue.
"""
from __future__ import annotations

import io
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

_ZEROS = bytes(1 << 20)


def _deflate_zeros(n: int, level: int = 9) -> bytes:
    """zlib stream of ``n`` zero bytes, built without holding them."""
    c = zlib.compressobj(level)
    out = []
    while n > 0:
        k = min(n, len(_ZEROS))
        out.append(c.compress(_ZEROS[:k]))
        n -= k
    out.append(c.flush())
    return b"".join(out)


# -- graph ----------------------------------------------------------------------------------


def pajek_vertices(p: Path, n: int = 2_000_000_000) -> None:
    """A Pajek file of a few bytes declaring ``n`` vertices (vertex lines are optional)."""
    p.write_bytes(b"*Vertices %d\n" % n)


def graphml_nodes(p: Path, n: int = 2_000_000) -> None:
    """GraphML of ``n`` isolated nodes (~21 bytes each)."""
    with open(p, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns">\n'
                '<graph edgedefault="undirected">\n')
        for i in range(0, n, 10000):
            f.write("".join(f'<node id="n{j}"/>\n' for j in range(i, min(n, i + 10000))))
        f.write("</graph>\n</graphml>\n")


def gexf_nodes(p: Path, n: int) -> None:
    with open(p, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<gexf xmlns="http://gexf.net/1.3" version="1.3">\n'
                '<graph defaultedgetype="undirected"><nodes>\n')
        for i in range(0, n, 10000):
            f.write("".join(f'<node id="{j}"/>\n' for j in range(i, min(n, i + 10000))))
        f.write("</nodes><edges/></graph>\n</gexf>\n")


def gml_nodes(p: Path, n: int) -> None:
    with open(p, "w") as f:
        f.write("graph [\n")
        for i in range(0, n, 10000):
            f.write("".join(f"node [ id {j} ]\n" for j in range(i, min(n, i + 10000))))
        f.write("]\n")


def nodelink_nodes(p: Path, n: int) -> None:
    with open(p, "w") as f:
        f.write('{"nodes": [')
        f.write(",".join("{}" for _ in range(n)))
        f.write('], "links": []}')


def edgelist_edges(p: Path, n: int) -> None:
    with open(p, "w") as f:
        for i in range(0, n, 10000):
            f.write("".join(f"{j} {j + 1}\n" for j in range(i, min(n, i + 10000))))


# -- point clouds ---------------------------------------------------------------------------


def pcd_compressed(p: Path, points: int = 357_913_941) -> None:
    """A ~400-byte PCD whose binary_compressed size words declare ``points`` x 12 bytes."""
    hdr = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
           f"WIDTH {points}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA binary_compressed\n")
    body = b"\x1f" + bytes(32) + bytes(300)  # one literal run, then junk
    p.write_bytes(hdr.encode() + struct.pack("<II", len(body), points * 12) + body)


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_2_0(b, {"descr": dtype, "fortran_order": False, "shape": shape})
    return b.getvalue()


def npz_zeros(p: Path, nbytes: int = 3_800_000_000, key: str = "points", cols: int = 3) -> None:
    """An NPZ whose deflated member is ``nbytes`` of zeros: a (N, cols) float64 array."""
    n = nbytes // (8 * cols)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open(f"{key}.npy", "w", force_zip64=True) as m:
            m.write(_npy_header((n, cols)))
            left = n * 8 * cols
            while left > 0:
                k = min(left, len(_ZEROS))
                m.write(_ZEROS[:k])
                left -= k


def npz_declared(p: Path, shape: tuple[int, ...] = (2_000_000_000, 3), key: str = "points") -> None:
    """An NPZ member whose NPY header declares ``shape`` over a few bytes of data."""
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{key}.npy", _npy_header(shape) + bytes(4096))


def npy_declared(p: Path, shape: tuple[int, ...], extra: int = 4096) -> None:
    """An NPY whose header declares ``shape`` over ``extra`` bytes of data."""
    p.write_bytes(_npy_header(shape) + bytes(extra))


# -- hyperspectral ----------------------------------------------------------------------------


def _mat5_header() -> bytes:
    text = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024"
    return text.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


def mat5_compressed_zeros(p: Path, shape: tuple[int, int, int] = (1000, 1000, 400), name: bytes = b"cube") -> None:
    """MATLAB v5 file, one zlib-compressed double array of ``shape`` (all zeros)."""
    nbytes = int(np.prod(shape)) * 8
    dims = struct.pack("<3i", *shape) + b"\0" * 4
    nm = name.ljust((len(name) + 7) // 8 * 8, b"\0")
    sub = (struct.pack("<II", 6, 8) + struct.pack("<II", 6, 0)  # array flags: mxDOUBLE_CLASS
           + struct.pack("<II", 5, 12) + dims  # dimensions (miINT32)
           + struct.pack("<II", 1, len(name)) + nm  # name (miINT8)
           + struct.pack("<II", 9, nbytes))  # real part tag (miDOUBLE), data follows
    matrix_tag = struct.pack("<II", 14, len(sub) + nbytes)
    c = zlib.compressobj(9)
    out = [c.compress(matrix_tag + sub)]
    left = nbytes
    while left > 0:
        k = min(left, len(_ZEROS))
        out.append(c.compress(_ZEROS[:k]))
        left -= k
    out.append(c.flush())
    comp = b"".join(out)
    p.write_bytes(_mat5_header() + struct.pack("<II", 15, len(comp)) + comp)


def mat73_declared(p: Path, shape: tuple[int, int, int] = (400, 1000, 1000), chunks=(400, 100, 100),
                   write: bool = True) -> None:
    """MATLAB v7.3 (HDF5) file with a gzip-chunked double dataset of ``shape`` (HDF5 order, the
    MATLAB shape reversed). ``write``: store zero chunks (compressed), else leave it unallocated."""
    import h5py

    with h5py.File(p, "w", userblock_size=512) as f:
        ds = f.create_dataset("cube", shape=shape, dtype="<f8", chunks=chunks, compression="gzip",
                              compression_opts=9, fillvalue=0.0)
        ds.attrs["MATLAB_class"] = np.bytes_(b"double")
        if write:
            step = chunks[0]
            for i in range(0, shape[0], step):
                block = np.zeros((min(step, shape[0] - i), *shape[1:]), "<f8")
                ds[i:i + step] = block
                del block
    hdr = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(p, "r+b") as f:
        f.write(hdr.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0200) + b"IM")


def tiff_bands(p: Path, shape: tuple[int, int, int] = (4000, 4000, 70), dtype: str = "uint16",
               tile: int = 512) -> None:
    """A zlib-compressed, tiled multi-band TIFF of zeros (written tile by tile)."""
    import tifffile

    h, w, b = shape
    ty, tx = -(-h // tile), -(-w // tile)
    zero = np.zeros((tile, tile, b), dtype)

    def tiles():
        for _ in range(ty * tx):
            yield zero

    tifffile.imwrite(p, tiles(), shape=shape, dtype=dtype, tile=(tile, tile), photometric="minisblack",
                     planarconfig="contig", compression="zlib", metadata=None)


def envi_declared(p: Path, lines: int, samples: int, bands: int, data_bytes: int) -> None:
    p.write_text(f"ENVI\nsamples = {samples}\nlines = {lines}\nbands = {bands}\nheader offset = 0\n"
                 "file type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 0\n")
    with open(p.with_suffix(".raw"), "wb") as f:
        f.truncate(data_bytes)


# -- images and video ------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_zeros(p: Path, w: int = 10_000, h: int = 9_900, depth: int = 16, ctype: int = 6) -> None:
    """A complete, valid PNG of ``w`` x ``h`` transparent-black pixels (RGBA16 by default)."""
    chans = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    row = b"\0" + bytes(w * chans * depth // 8)
    c = zlib.compressobj(9)
    parts = []
    for _ in range(h):
        parts.append(c.compress(row))
    parts.append(c.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
                  + _chunk(b"IEND", b""))


def gif_screen(p: Path, w: int = 20_000, h: int = 5_000, frames: int = 2) -> None:
    """An animated GIF whose logical screen is ``w`` x ``h``, with ``frames`` 1-pixel frames."""
    out = [b"GIF89a", struct.pack("<HHBBB", w, h, 0x80, 0, 0), bytes(6)]  # 2-colour global table
    out.append(b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")
    for _ in range(frames):
        out.append(b"!\xf9\x04\x00\x0a\x00\x00\x00")  # graphic control: 100 ms
        out.append(b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00")
    out.append(b";")
    p.write_bytes(b"".join(out))


def y4m_frame(p: Path, w: int = 8_000, h: int = 8_000) -> None:
    """A YUV4MPEG2 stream declaring ``w`` x ``h`` frames, one short frame of data."""
    p.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + bytes(1000))


# -- audio ----------------------------------------------------------------------------------


def wav_float(p: Path, values: np.ndarray, rate: int = 16000) -> None:
    """A float32 WAV (format 3) of ``values`` [n] or [n, channels]."""
    a = np.asarray(values, "<f4")
    ch = 1 if a.ndim == 1 else a.shape[1]
    data = a.tobytes()
    fmt = struct.pack("<HHIIHH", 3, ch, rate, rate * 4 * ch, 4 * ch, 32)
    p.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                  + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def wav_channels(p: Path, channels: int = 1024, rate: int = 1_000_000, frames: int = 20_000) -> None:
    """A 16-bit PCM WAV with many channels at a high rate (each block read is channels x rate)."""
    data = bytes(frames * channels * 2)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    p.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                  + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


# -- IMU ----------------------------------------------------------------------------------


def imu_csv(p: Path, t: np.ndarray, header: str = "time_s,acc_x,acc_y,acc_z") -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(t), 3)) * 0.1
    with open(p, "w") as f:
        f.write(header + "\n")
        for ti, row in zip(t, x, strict=True):
            f.write(f"{float(ti)!r},{row[0]:.4f},{row[1]:.4f},{row[2]:.4f}\n")


def imu_day_gap(p: Path, rows: int = 6800) -> None:
    """~190 KB at 100 Hz whose last row is a day after the others."""
    t = np.arange(rows) / 100.0
    t[-1] = t[-2] + 86_400.0
    imu_csv(p, t)


def imu_zero_stamp(p: Path, rows: int = 6800) -> None:
    """Unix-time stamps at 100 Hz, one of them written as 0."""
    t = 1.7e9 + np.arange(rows) / 100.0
    t[rows // 2] = 0.0
    imu_csv(p, t)


def imu_ns_steps(p: Path, rows: int = 1000) -> None:
    """1,000 rows 1 ns apart (a time column in seconds): resampled to 200 Hz, nothing is left."""
    imu_csv(p, np.arange(rows) * 1e-9)


# -- DICOM -----------------------------------------------------------------------------------


def dicom_pixels(p: Path, rows: int = 64, cols: int = 64, frames: int = 1, nbytes: int | None = None,
                 bits: int = 16) -> None:
    """An uncompressed DICOM whose pixel data holds ``nbytes`` (default: what rows x cols x
    frames x bits need)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(p), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    need = rows * cols * frames * bits // 8
    n = need if nbytes is None else nbytes
    ds.PixelData = (np.arange(n, dtype=np.uint8) * 7).tobytes()
    ds.save_as(p, enforce_file_format=True)


# -- the severe cases of the issue, full size -------------------------------------------------

SEVERE = {
    "vertices.net": lambda p: pajek_vertices(p),
    "huge_compressed.pcd": lambda p: pcd_compressed(p, 357_913_941),
    "zeros.npz": lambda p: npz_zeros(p),
    "declared.npz": lambda p: npz_declared(p, (150_000_000, 3)),
    "zeros_v5.mat": lambda p: mat5_compressed_zeros(p),
    "chunked_v73.mat": lambda p: mat73_declared(p, write=False),
    "bands.tiff": lambda p: tiff_bands(p),
    "rgba16.png": lambda p: png_zeros(p),
    "isolated.graphml": lambda p: graphml_nodes(p),
    "imu_day_gap.csv": imu_day_gap,
    "imu_zero_stamp.csv": imu_zero_stamp,
}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, make in SEVERE.items():
        if len(sys.argv) > 2 and name not in sys.argv[2:]:
            continue
        make(out / name)
        print(name, (out / name).stat().st_size)
