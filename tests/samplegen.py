"""Small generated look-alikes of the real third-party sample files (../shared/data, SOURCES.md).

Each builder writes one modality folder under the same file names as the real data, in the same
format and structure, only smaller (KBs), deterministically, and returns the facts a test needs
to check what the loaders report (shapes, raw ranges, segment counts, byte orders...):

- infrared: FLIR radiometric JPEGs (visible JPEG + Exif, the FFF blob split over FLIR APP1
  segments, a record directory with empty entries, camera-info record with Planck constants,
  raw thermal frame as a little-endian-sample PNG or as bare uint16, big- and little-endian FFF,
  DJI's "ATAU_RBFO" variant with an XMP segment), and a FLIR Duo Pro R-style LZW + predictor-2
  16-bit TIFF with 6-row strips and XMP;
- hyperspectral: a PlantCV-style ENVI BIL pair (no byte-order or offset line, 580 bands,
  wavelengths one per line), three compressed MATLAB v5 files with the real variable names,
  shapes (bands) and dtypes, plus a MATLAB v7.3 (HDF5) copy of one of them;
- graph: Newman-style GML (ids only; labels; string values), Pajek ``*vertices 34`` with no vertex
  lines and a repeated edge, NetworkX GEXF 1.2draft with typed attributes, Gephi GEXF 1.1draft
  (``defaultedgetype="directed"``, viz) and GraphML, d3 node-link JSON without ``directed`` —
  with the real node and edge counts (Zachary's karate club and Les Misérables come with
  networkx; the others are seeded random graphs of the same size);
- imu: an x-io Fusion ``sensor_data.csv`` layout (gyroscope first, magnetometer, ~99.2 Hz,
  Excel-style exponents) and a SensorLog phone export;
- xray: an 8-bit greyscale chest-radiograph-like PNG.

``python tests/samplegen.py OUT`` writes the whole tree to OUT (to look at, or to ``mtx embed``).
"""
from __future__ import annotations

import io
import json
import random
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Infrared: FLIR radiometric JPEGs
# ---------------------------------------------------------------------------------------------

# Planck constants (R1, B, F, O, R2) as the real cameras' camera-info records hold them.
PLANCK = {
    "flir_ax8.jpg": (16951.797, 1435.1, 1.0, -7142, 0.014294867),
    "flir_example.jpg": (17837.531, 1450.4, 1.0, -1143, 0.012332781),
    "dji_zenmuse_xtr.jpg": (17096.453, 1428.0, 1.0, -370, 0.048084795),
    "flir_t630sc.jpg": (16056.111, 1418.8, 1.0, -4227, 0.014308703),
}


def planck_raw(celsius, planck) -> np.ndarray:
    """Raw sensor counts of a black body at ``celsius`` (ExifTool's FLIR formula, inverted)."""
    r1, b, f, o, r2 = planck
    return r1 / (r2 * (np.exp(b / (np.asarray(celsius, np.float64) + 273.15)) - f)) - o


def planck_celsius(raw, planck) -> np.ndarray:
    """Black-body temperature of raw sensor counts (emissivity 1, no atmosphere)."""
    r1, b, f, o, r2 = planck
    return b / np.log(r1 / (r2 * (np.asarray(raw, np.float64) + o)) + f) - 273.15


def _record_header(kind: int, w: int, h: int, order: str = "<", extra: int = 0) -> bytearray:
    """The 32-byte header FLIR puts before raw, visual and camera-info data: a byte-order word
    (2 for raw and camera info, 3 for the embedded visual JPEG), width, height, then width-1 and
    height-1 at 12 and 16."""
    head = bytearray(32)
    struct.pack_into(order + "HHH", head, 0, kind, w, h)
    struct.pack_into(order + "H", head, 12, w - 1)
    struct.pack_into(order + "H", head, 16, h - 1)
    if extra:
        struct.pack_into(order + "H", head, 20, extra)
    return head


def raw_record(a: np.ndarray, storage: str = "png", order: str = "<") -> bytes:
    """A type-1 FFF record: header + the frame as a PNG whose 16-bit samples are little-endian
    (FLIR's quirk: a standard decoder reads them byteswapped) or as bare uint16 in ``order``."""
    from PIL import Image

    h, w = a.shape
    head = _record_header(2, w, h, order)
    if storage == "png":
        buf = io.BytesIO()
        Image.fromarray(a.astype(np.uint16).byteswap()).save(buf, "PNG")
        return bytes(head) + buf.getvalue()
    return bytes(head) + a.astype(order + "u2").tobytes()


def camera_info_record(w: int, h: int, planck, model: str = "", length: int = 2476,
                       emissivity: float = 0.95) -> bytes:
    """A type-32 camera-info record (little-endian, ExifTool's FLIR::CameraInfo offsets)."""
    r1, b, f, o, r2 = planck
    rec = bytearray(length)
    rec[:32] = _record_header(2, w, h)
    for off, v in ((0x20, emissivity), (0x24, 1.0), (0x28, 293.15), (0x2C, 293.15), (0x30, 293.15),
                   (0x34, 1.0), (0x3C, 0.5), (0x58, r1), (0x5C, b), (0x60, f), (0x70, 0.006569),
                   (0x74, 0.012620), (0x78, -0.002276), (0x7C, -0.006670), (0x80, 1.9)):
        struct.pack_into("<f", rec, off, v)
    rec[0xD4:0xD4 + 32] = model.encode("ascii").ljust(32, b"\x00")[:32]
    struct.pack_into("<i", rec, 0x308, int(o))
    struct.pack_into("<f", rec, 0x30C, r2)
    return bytes(rec)


def read_planck(rec: bytes) -> tuple[float, float, float, int, float]:
    """(R1, B, F, O, R2) from a camera-info record (byte order from its first word)."""
    order = "<" if struct.unpack("<H", rec[:2])[0] == 2 else ">"
    r1, b, f = struct.unpack_from(order + "fff", rec, 0x58)
    (o,) = struct.unpack_from(order + "i", rec, 0x308)
    (r2,) = struct.unpack_from(order + "f", rec, 0x30C)
    return r1, b, f, o, r2


def visual_record(rgb: np.ndarray) -> bytes:
    """A type-14 record: header (byte-order word 3) + the embedded visual JPEG."""
    h, w = rgb.shape[:2]
    return bytes(_record_header(3, w, h, extra=5)) + jpeg_bytes(rgb)


def fff_blob(records: list[tuple[int, int, bytes]], order: str = ">", creator: str = "",
             entries: int | None = None, checksums: bool = True) -> bytes:
    """An FFF blob: 64-byte header ("FFF\\0", creator, version 100, directory offset 64, entry
    count, next id), a directory of 32-byte entries (type, subtype, version, index, offset,
    length, parent, object number, CRC-32 of the record; unused entries all zero) and the records
    back to back after it. ``records`` are (type, subtype, data)."""
    n = entries if entries is not None else len(records)
    if n < len(records):
        raise ValueError("fewer directory entries than records")
    body_off = 64 + 32 * n
    head = bytearray(64)
    head[:4] = b"FFF\x00"
    head[4:20] = creator.encode("ascii").ljust(16, b"\x00")
    struct.pack_into(order + "IIII", head, 20, 100, 64, n, len(records) + 1)
    directory, bodies, off = bytearray(32 * n), b"", body_off
    for k, (rtype, subtype, data) in enumerate(records):
        crc = zlib.crc32(data) if checksums else 0
        struct.pack_into(order + "HHIIIIIII", directory, 32 * k, rtype, subtype, 100, 1, off, len(data), 0, 0, crc)
        bodies += data
        off += len(data)
    return bytes(head) + bytes(directory) + bodies


def jpeg_bytes(rgb: np.ndarray, make: str | None = None, model: str | None = None) -> bytes:
    from PIL import Image

    exif = None
    if make or model:
        exif = Image.Exif()
        if make:
            exif[271] = make
        if model:
            exif[272] = model
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=85, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def _after_app_segments(jpg: bytes) -> int:
    """Offset just past SOI and the leading APPn segments (where cameras put their own)."""
    pos = 2
    while jpg[pos] == 0xFF and 0xE0 <= jpg[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", jpg[pos + 2:pos + 4])[0]
    return pos


def app1(payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("APP1 payload too long")
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def flir_segments(fff: bytes, nseg: int) -> list[bytes]:
    """``fff`` split over ``nseg`` FLIR APP1 segments: "FLIR\\0", 0x01, chunk index, last index."""
    size = -(-len(fff) // nseg)
    parts = [fff[i * size:(i + 1) * size] for i in range(nseg)]
    if not all(parts):
        raise ValueError(f"{len(fff)} bytes cannot fill {nseg} segments")
    return [app1(b"FLIR\x00\x01" + bytes([i, nseg - 1]) + p) for i, p in enumerate(parts)]


def flir_jpeg(path: Path, fff: bytes, nseg: int = 1, rgb: np.ndarray | None = None, *,
              make: str | None = "FLIR Systems AB", model: str | None = None,
              xmp: bytes | None = None, swap_first: bool = False, after_soi: bool = False) -> Path:
    """A radiometric JPEG laid out as FLIR cameras write it: SOI, APP0 JFIF, APP1 Exif (Make,
    Model), [APP1 XMP], the FLIR APP1 segments, then the visible picture's tables and scan.
    ``swap_first`` writes the first two FLIR segments out of order (chunk order is in the
    segment header, not the file order); ``after_soi`` puts them before APP0 instead."""
    if rgb is None:
        rgb = gradient_rgb(48, 64)
    jpg = jpeg_bytes(rgb, make, model)
    at = 2 if after_soi else _after_app_segments(jpg)
    segs = flir_segments(fff, nseg)
    if swap_first and nseg > 1:
        segs[0], segs[1] = segs[1], segs[0]
    extra = app1(b"http://ns.adobe.com/xap/1.0/\x00" + xmp) if xmp is not None else b""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpg[:at] + extra + b"".join(segs) + jpg[at:])
    return path


def gradient_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A palette-like colour picture (what the visible JPEG of a thermal camera looks like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(xx / 6.0)
    g = 128 + 100 * np.cos(yy / 5.0)
    b = 128 + 60 * np.sin((xx + yy) / 9.0)
    return (np.stack([r, g, b], -1) + rng.integers(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)


def thermal_scene(h: int, w: int, lo_c: float, hi_c: float, seed: int = 0) -> np.ndarray:
    """Temperatures (deg C) spanning exactly [lo_c, hi_c]: a warm blob on a gradient + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    t = 0.6 * np.exp(-((xx - 0.55) ** 2 + (yy - 0.45) ** 2) / 0.03) + 0.3 * xx + 0.05 * rng.random((h, w))
    t = (t - t.min()) / (t.max() - t.min())
    return lo_c + (hi_c - lo_c) * t


def _frame(name: str, h: int, w: int, lo_c: float, hi_c: float, seed: int) -> tuple[np.ndarray, dict]:
    scene = thermal_scene(h, w, lo_c, hi_c, seed)
    raw = np.round(planck_raw(scene, PLANCK[name])).astype(np.uint16)
    return raw, {"temp_range": (lo_c, hi_c)}


def build_infrared(folder: Path) -> dict[str, dict]:
    """The four FLIR JPEGs and the radiometric TIFF of shared/data/infrared, in miniature."""
    folder.mkdir(parents=True, exist_ok=True)
    facts: dict[str, dict] = {}

    def add(name, raw, storage, nseg, order, extra):
        facts[name] = dict(raw=raw, shape=raw.shape, lo=int(raw.min()), hi=int(raw.max()), storage=storage,
                           segments=nseg, byte_order={">": "big", "<": "little"}[order], **extra)

    # FLIR AX8: big-endian FFF, 14 directory entries (7 used), raw 80x60 PNG, one segment.
    name = "flir_ax8.jpg"
    raw, extra = _frame(name, 60, 80, 24.1, 25.2, 1)
    recs = [(32, 1, camera_info_record(80, 60, PLANCK[name], "FLIR AX8")), (34, 1, bytes(784)), (33, 1, bytes(60)),
            (1, 3, raw_record(raw, "png")), (41, 1, bytes(66)), (42, 1, bytes(96)),
            (14, 5, visual_record(gradient_rgb(48, 64, 1)))]
    flir_jpeg(folder / name, fff_blob(recs, ">", entries=14), 1, gradient_rgb(60, 80, 1), model="FLIR AX8\x00")
    add(name, raw, "png", 1, ">", extra)

    # "flir_example": portrait (visible and raw), two segments, visual record first.
    name = "flir_example.jpg"
    raw, extra = _frame(name, 64, 48, 25.6, 60.2, 2)
    recs = [(14, 5, visual_record(gradient_rgb(64, 48, 2))), (32, 1, camera_info_record(48, 64, PLANCK[name], "*")),
            (34, 1, bytes(784)), (1, 3, raw_record(raw, "png")), (42, 1, bytes(96)), (43, 1, bytes(184))]
    flir_jpeg(folder / name, fff_blob(recs, ">", entries=14), 2, gradient_rgb(64, 48, 2), model="*")
    add(name, raw, "png", 2, ">", extra)

    # DJI Zenmuse XT R: little-endian FFF by "ATAU_RBFO", raw first and uncompressed
    # little-endian uint16, camera info of 2108 bytes, 11 segments, an XMP segment before them.
    name = "dji_zenmuse_xtr.jpg"
    raw, extra = _frame(name, 64, 80, 18.6, 48.7, 3)
    recs = [(1, 2, raw_record(raw, "raw", "<")), (32, 0, camera_info_record(80, 64, PLANCK[name], "", 2108, 0.7))]
    xmp = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n<x:xmpmeta xmlns:x="adobe:ns:meta/">'
           b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
           b'xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" drone-dji:Version="1.0"/></rdf:RDF>'
           b'</x:xmpmeta>\n<?xpacket end="w"?>')
    flir_jpeg(folder / name, fff_blob(recs, "<", "ATAU_RBFO", checksums=False), 11, gradient_rgb(64, 80, 3),
              make="DJI", model="FLIR", xmp=xmp)
    add(name, raw, "raw", 11, "<", extra)

    # FLIR T630sc: big-endian, 13 segments, raw PNG, an embedded visual JPEG larger than the raw.
    name = "flir_t630sc.jpg"
    raw, extra = _frame(name, 48, 64, 19.4, 24.0, 4)
    recs = [(32, 1, camera_info_record(64, 48, PLANCK[name], "FLIR T630sc")), (34, 1, bytes(784)),
            (1, 3, raw_record(raw, "png")), (42, 1, bytes(96)), (43, 1, bytes(184)),
            (14, 5, visual_record(gradient_rgb(96, 128, 4)))]
    flir_jpeg(folder / name, fff_blob(recs, ">", entries=14), 13, gradient_rgb(48, 64, 4), model="FLIR T630sc")
    add(name, raw, "png", 13, ">", extra)

    # FLIR Duo Pro R radiometric TIFF: 16-bit, LZW with horizontal predictor, 6-row strips, XMP.
    name = "flir_duo_pro_r_radiometric.tiff"
    a = np.round(6743 + (7077 - 6743) * thermal_scene(64, 80, 0.0, 1.0, 5)).astype(np.uint16)
    write_radiometric_tiff(folder / name, a)
    facts[name] = dict(raw=a, shape=a.shape, lo=int(a.min()), hi=int(a.max()), compression="LZW")
    return facts


def write_radiometric_tiff(path: Path, a: np.ndarray) -> Path:
    import tifffile

    xmp = (b"<?xpacket begin='\xef\xbb\xbf' id='W5M0MpCehiHzreSzNTczkc9d'?>\n<x:xmpmeta xmlns:x='adobe:ns:meta/'>"
           b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'><rdf:Description "
           b"xmlns:Camera='http://pix4d.com/camera/1.0/' Camera:ModelType='perspective'"
           b" xmlns:tiff='http://ns.adobe.com/tiff/1.0/' tiff:Make='FLIR' tiff:Model='Duo Pro R'/>"
           b"</rdf:RDF></x:xmpmeta>\n<?xpacket end='w'?>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, a, photometric="minisblack", compression="lzw", predictor=2, rowsperstrip=6,
                     metadata=None, extratags=[(700, 1, len(xmp), xmp, True), (50735, 2, 0, "8340357", True)])
    return path


# ---------------------------------------------------------------------------------------------
# Hyperspectral: ENVI, MATLAB v5 / v7.3
# ---------------------------------------------------------------------------------------------

ENVI_DTYPE = {np.dtype("uint16"): 12, np.dtype("int16"): 2, np.dtype("float32"): 4, np.dtype("uint8"): 1}


def write_envi(path: Path, a: np.ndarray, interleave: str = "bsq", big_endian: bool | None = False,
               offset: int | None = 0, wavelengths=None, units: str | None = "Nanometers",
               data_ext: str = ".raw", comments: tuple[str, ...] = ()) -> Path:
    """An ENVI header at ``path`` (.hdr) and its data file (same stem + ``data_ext``) for the
    (H, W, B) cube ``a``. ``big_endian=None`` / ``offset=None`` leave out the byte order /
    header offset lines (PlantCV writes neither; ENVI's default is little-endian, no offset)."""
    h, w, b = a.shape
    lay = {"bsq": a.transpose(2, 0, 1), "bil": a.transpose(0, 2, 1), "bip": a}[interleave]
    lines = ["ENVI", *(f"; {c}" for c in comments)]
    if offset is None and big_endian is None:  # PlantCV's field order
        lines += [f"interleave = {interleave}", f"samples = {w}", f"lines = {h}", f"bands = {b}",
                  f"data type = {ENVI_DTYPE[a.dtype]}"]
    else:
        lines += ["description = {test cube}", f"samples = {w}", f"lines   = {h}", f"bands = {b}"]
        if offset is not None:
            lines.append(f"header offset = {offset}")
        lines += ["file type = ENVI Standard", f"data type = {ENVI_DTYPE[a.dtype]}", f"interleave = {interleave}"]
        if big_endian is not None:
            lines.append(f"byte order = {int(big_endian)}")
    text = "\n".join(lines) + "\n"
    if wavelengths is not None:
        if units:
            text += f"wavelength units = {units}\n"
        text += "wavelength = {\n" + ",\n".join(f"{v:.10g}" for v in wavelengths) + "\n}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    dt = a.dtype.newbyteorder(">" if big_endian else "<")
    data = path.with_suffix(data_ext) if data_ext else path.with_suffix("")
    data.write_bytes(b"\x00" * (offset or 0) + np.ascontiguousarray(lay).astype(dt).tobytes())
    return path


_MATLAB_CLASS = {"f": {4: "single", 8: "double"}, "i": {1: "int8", 2: "int16", 4: "int32", 8: "int64"},
                 "u": {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}, "b": {1: "logical"}}


def write_mat73(path: Path, variables: dict[str, np.ndarray]) -> Path:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 behind a 512-byte user block holding the
    128-byte MAT header (text, subsystem offset, version 0x0200, 'IM'), every array stored with
    its axes reversed and a MATLAB_class attribute."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in variables.items():
            ds = f.create_dataset(k, data=np.ascontiguousarray(np.asarray(v).T))
            ds.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS[v.dtype.kind][v.dtype.itemsize])
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(text.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    return path


def smooth_cube(h: int, w: int, b: int, seed: int = 0) -> np.ndarray:
    """A float (H, W, B) cube in [0, 1] whose bands differ in pattern, not only in level."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    k = np.arange(b)[None, None, :]
    a = 0.5 + 0.4 * np.sin(xx[..., None] / (1.5 + k % 5) + k / 7.0) * np.cos(yy[..., None] / (2 + k % 3))
    return np.clip(a + 0.02 * rng.random((h, w, b)), 0.0, 1.0)


def build_hyperspectral(folder: Path) -> dict[str, dict]:
    """The three MATLAB v5 cubes and the ENVI pair of shared/data/hyperspectral (same variable
    names, bands, dtypes and layouts, a few pixels wide), plus a v7.3 copy of one MATLAB file."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    facts: dict[str, dict] = {}

    wl224 = np.linspace(365.9, 2496.2, 224)[:, None]
    hsi = np.round(-12 + 8155 * smooth_cube(6, 6, 224, 1)).astype(np.int16)
    scipy.io.savemat(folder / "a_hsi_img_for_VI_demo.mat", {"hsi_img": hsi, "wavelengths": wl224},
                     do_compression=True)
    facts["a_hsi_img_for_VI_demo.mat"] = dict(variable="hsi_img", cube=hsi, wavelengths=wl224[:, 0], tokens=225)

    wl72 = np.linspace(367.7, 1043.4, 72)[:, None]
    sub = (-0.18 + 1.03 * smooth_cube(5, 8, 72, 2)).astype(np.float32)
    mask = (smooth_cube(5, 8, 1, 3)[..., 0] > 0.5).astype(np.uint8)
    scipy.io.savemat(folder / "an_hsi_image_sub_for_demo.mat",
                     {"hsi_img_sub": sub, "mask_sub": mask, "wavelengths": wl72}, do_compression=True)
    facts["an_hsi_image_sub_for_demo.mat"] = dict(variable="hsi_img_sub", cube=sub, wavelengths=wl72[:, 0],
                                                  tokens=73)

    det = smooth_cube(6, 6, 72, 4).astype(np.float32)
    tgt = {"hsi_sub": det, "gtImg_sub": np.eye(6, dtype=np.uint8), "tgt_spectra": det[2:3, 2, :].T.copy(),
           "wavelengths": wl72}
    scipy.io.savemat(folder / "an_hsi_img_for_tgt_det_demo.mat", tgt, do_compression=True)
    facts["an_hsi_img_for_tgt_det_demo.mat"] = dict(variable="hsi_sub", cube=det, wavelengths=wl72[:, 0],
                                                    tokens=73)
    # No real v7.3 file is in the shared data: the same variables in MATLAB's HDF5 layout.
    write_mat73(folder / "an_hsi_img_for_tgt_det_demo_v73.mat", tgt)
    facts["an_hsi_img_for_tgt_det_demo_v73.mat"] = dict(facts["an_hsi_img_for_tgt_det_demo.mat"],
                                                        generated_only=True)

    # PlantCV's ENVI export: BIL uint16, no byte order / header offset lines, 580 bands.
    wl580 = np.round(np.linspace(366.551, 1048.421, 580), 3)
    corn = np.round(2887 * smooth_cube(3, 4, 580, 5)).astype(np.uint16)
    write_envi(folder / "corn-kernel-hyperspectral.hdr", corn, "bil", big_endian=None, offset=None,
               wavelengths=wl580, units="nm", data_ext=".raw",
               comments=("this file was written by tests/samplegen.py (PlantCV layout)",))
    facts["corn-kernel-hyperspectral.hdr"] = dict(cube=corn, wavelengths=wl580, tokens=513)
    return facts


# ---------------------------------------------------------------------------------------------
# Graphs
# ---------------------------------------------------------------------------------------------


def _gml(nodes: list[dict], edges: list[tuple[int, int]], creator: str, directed: bool | None) -> str:
    """Mark Newman's GML layout: a Creator line, 2-space indentation, brackets on their own lines."""
    out = [f'Creator "{creator}"', "graph", "["]
    if directed is not None:
        out.append(f"  directed {int(directed)}")
    for n in nodes:
        out += ["  node", "  ["] + [f"    {k} {json.dumps(v) if isinstance(v, str) else v}" for k, v in n.items()]
        out.append("  ]")
    for u, v in edges:
        out += ["  edge", "  [", f"    source {u}", f"    target {v}", "  ]"]
    return "\n".join(out + ["]"]) + "\n"


def _random_graph(n: int, m: int, seed: int) -> list[tuple[int, int]]:
    import networkx as nx

    g = nx.gnm_random_graph(n, m, seed=seed)
    return sorted((min(u, v), max(u, v)) for u, v in g.edges)


def build_graph(folder: Path) -> dict[str, dict]:
    """The eight graph files of shared/data/graph, same formats, node and edge counts."""
    import networkx as nx

    folder.mkdir(parents=True, exist_ok=True)
    facts: dict[str, dict] = {}

    karate = sorted((min(u, v), max(u, v)) for u, v in nx.karate_club_graph().edges)
    (folder / "karate.gml").write_text(_gml([{"id": i + 1} for i in range(34)], [(v + 1, u + 1) for u, v in karate],
                                            "tests/samplegen.py (Zachary 1977)", None))
    facts["karate.gml"] = dict(nodes=34, edges=78)

    # Pajek as igraph's karate.net: '*vertices 34' and no vertex lines; edge 9-31 typed as 9-33,
    # so 9-33 appears twice (78 lines, 77 distinct pairs).
    pairs = [(u + 1, v + 1) if (u + 1, v + 1) != (9, 31) else (9, 33) for u, v in karate]
    pairs.sort(key=lambda p: (p[0], -p[1]))
    (folder / "karate.net").write_text("*vertices 34\n*edges\n" + "".join(f"{u} {v}\n" for u, v in pairs))
    facts["karate.net"] = dict(nodes=34, edges_in_file=78, edges=77, parallel=1)

    rng = random.Random(7)
    words = ["Beak", "Bumper", "Cross", "Double", "Feather", "Fish", "Gallatin", "Hook", "Jet", "Knit", "Mus",
             "Notch", "Oscar", "Patchback", "Quasi", "Ripplefluke", "Scabs", "Shmuddel", "Stripes", "Topless"]
    nodes = [{"id": i, "label": f"{words[i % len(words)]}{i // len(words) or ''}"} for i in range(62)]
    (folder / "dolphins.gml").write_text(_gml(nodes, [(v, u) for u, v in _random_graph(62, 159, 1)],
                                              "tests/samplegen.py", False))
    facts["dolphins.gml"] = dict(nodes=62, edges=159)

    nodes = [{"id": i, "label": f"Book {i}: {rng.choice(words)} & Co.", "value": rng.choice("lnc")} for i in range(105)]
    (folder / "polbooks.gml").write_text(_gml(nodes, [(v, u) for u, v in _random_graph(105, 441, 2)],
                                              "tests/samplegen.py", False))
    facts["polbooks.gml"] = dict(nodes=105, edges=441)

    # NetworkX's own GEXF 1.2draft writer, names with spaces as ids, typed node attributes.
    g = nx.Graph()
    names = [f"Friend {rng.choice(words)} {i}" for i in range(119)]
    for i, name in enumerate(names):
        g.add_node(name, label=name, historical_significance=rng.choice(["minister", "writer", "merchant"]),
                   gender=rng.choice(["male", "female"]), birth_year=str(1600 + i), degree=0,
                   betweenness=rng.random(), modularity=i % 7)
    g.add_edges_from((names[u], names[v]) for u, v in _random_graph(119, 174, 3))
    for v in g:
        g.nodes[v]["degree"] = g.degree[v]
    nx.write_gexf(g, folder / "quakers.gexf", version="1.2draft")
    facts["quakers.gexf"] = dict(nodes=119, edges=174)

    les_mis_files(folder)
    for name in ("les_miserables.gexf", "miserables.graphml", "miserables_nodelink.json"):
        facts[name] = dict(nodes=77, edges=254)
    return facts


def les_mis_files(folder: Path) -> None:
    """Les Misérables (networkx's copy of Knuth's graph) three ways, as the real files hold it:
    Gephi GEXF 1.1draft with a *directed* default edge type, float ids, viz and float
    attributes; Gephi GraphML in another node order; d3 node-link JSON with integer indices and
    no ``directed`` key."""
    import networkx as nx

    g = nx.les_miserables_graph()
    names = list(g.nodes)
    idx = {v: i for i, v in enumerate(names)}
    edges = sorted((max(idx[u], idx[v]), min(idx[u], idx[v]), d.get("weight", 1)) for u, v, d in g.edges(data=True))
    rng = np.random.default_rng(11)
    pos = rng.uniform(-400, 400, (len(names), 2)).round(4)
    deg = dict(g.degree)

    x = ['<?xml version="1.0" encoding="UTF-8"?>',
         '<gexf version="1.1" xmlns="http://www.gexf.net/1.1draft" xmlns:viz="http:///www.gexf.net/1.1draft/viz">',
         '\t<meta lastmodifieddate="2010-05-29+01:27">', "\t\t<Creator>tests/samplegen.py</Creator>",
         "\t\t<Title>Les Misérables, the characters coappearance weighted graph</Title>", "\t</meta>",
         '\t<graph defaultedgetype="directed" idtype="string" type="static">',
         '\t\t<attributes class="node" mode="static">',
         '\t\t\t<attribute id="authority" title="Authority" type="float"/>',
         '\t\t\t<attribute id="hub" title="Hub" type="float"/>', "\t\t</attributes>",
         f'\t\t<nodes count="{len(names)}">']
    for i, n in enumerate(names):
        a = deg[n] / 117.0
        x += [f'\t\t\t<node id="{i}.0" label="{n}">', "\t\t\t\t<attvalues>",
              f'\t\t\t\t\t<attvalue for="authority" value="{a:.8g}"/>',
              f'\t\t\t\t\t<attvalue for="hub" value="{a:.8g}"/>', "\t\t\t\t</attvalues>",
              f'\t\t\t\t<viz:size value="{10 + deg[n]:.6g}"/>', f'\t\t\t\t<viz:color b="45" g="72" r="{100 + i}"/>',
              f'\t\t\t\t<viz:position x="{pos[i, 0]}" y="{pos[i, 1]}" z="0.0"/>', "\t\t\t</node>"]
    x += ["\t\t</nodes>", f'\t\t<edges count="{len(edges)}">']
    for k, (s, t, w) in enumerate(edges):
        wa = f' weight="{float(w)}"' if w != 1 else ""
        x.append(f'\t\t\t<edge id="{k}" source="{s}.0" target="{t}.0"{wa}/>')
    x += ["\t\t</edges>", "\t</graph>", "</gexf>"]
    (folder / "les_miserables.gexf").write_text("\n".join(x), encoding="utf-8")

    keys = [("label", "string", "node", "label"), ("Edge Label", "string", "edge", "edgelabel"),
            ("weight", "double", "edge", "weight"), ("r", "int", "node", "r"), ("g", "int", "node", "g"),
            ("b", "int", "node", "b"), ("x", "float", "node", "x"), ("y", "float", "node", "y"),
            ("size", "float", "node", "size"), ("Modularity Class", "int", "node", "modularity_class")]
    x = ['<?xml version="1.0" encoding="UTF-8"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">']
    x += [f'<key attr.name="{a}" attr.type="{t}" for="{f}" id="{i}"/>' for a, t, f, i in keys]
    x.append('<graph edgedefault="undirected">')
    order = sorted(range(len(names)), key=lambda i: (-deg[names[i]], i))  # Gephi: by size
    for i in order:
        x += [f'<node id="{i}">', f'<data key="label">{names[i]}</data>',
              f'<data key="modularity_class">{i % 9}</data>', f'<data key="size">{10 + deg[names[i]]:.1f}</data>',
              f'<data key="x">{pos[i, 0]}</data>', f'<data key="y">{pos[i, 1]}</data>', "</node>"]
    for k, (s, t, w) in enumerate(edges):
        x += [f'<edge id="{k}" source="{s}" target="{t}">', f'<data key="weight">{float(w)}</data>', "</edge>"]
    x += ["</graph>", "</graphml>"]
    (folder / "miserables.graphml").write_text("\n".join(x), encoding="utf-8")

    d3 = {"nodes": [{"name": n, "group": 1 + i % 10, "index": i} for i, n in enumerate(names)],
          "links": [{"source": s, "target": t, "value": int(w)} for s, t, w in edges]}
    (folder / "miserables_nodelink.json").write_text(json.dumps(d3, separators=(",", ":")))


# ---------------------------------------------------------------------------------------------
# IMU
# ---------------------------------------------------------------------------------------------

XIO_HEADER = ["Time (s)", "Gyroscope X (deg/s)", "Gyroscope Y (deg/s)", "Gyroscope Z (deg/s)",
              "Accelerometer X (g)", "Accelerometer Y (g)", "Accelerometer Z (g)",
              "Magnetometer X (uT)", "Magnetometer Y (uT)", "Magnetometer Z (uT)"]


def _cell(v: float) -> str:
    """Numbers as the x-io export writes them: 7 significant digits, Excel-style exponents."""
    s = f"{v:.7g}"
    if "e" in s:
        s = f"{v:.2E}"
    return s


def xio_csv(path: Path, seconds: float = 12.0, step: float = 0.0100794, seed: int = 0) -> Path:
    """x-io Fusion's sensor_data.csv layout: Time (s), gyroscope, accelerometer, magnetometer."""
    rng = np.random.default_rng(seed)
    n = int(seconds / step)
    t = np.arange(n) * step + np.concatenate([[0.0], rng.uniform(-2e-7, 2e-7, n - 1)])
    gyro = 0.3 * rng.standard_normal((n, 3)) + 40 * np.sin(2 * np.pi * 0.5 * t)[:, None] * [1, 0.5, -0.3]
    acc = 0.02 * rng.standard_normal((n, 3)) + [0.0, -0.02, 1.0] + 0.2 * np.sin(2 * np.pi * 1.3 * t)[:, None] * [1, 0, 0.1]
    acc[::97, 0] = 5.4e-05  # a few tiny values in exponent notation, as in the real export
    mag = np.array([15.3, 0.4, -41.1]) + 0.01 * rng.standard_normal((n, 3))
    rows = [",".join(XIO_HEADER)]
    for i in range(n):
        rows.append(",".join(["0" if i == 0 else repr(round(float(t[i]), 9))]
                             + [_cell(v) for v in (*gyro[i], *acc[i], *mag[i])]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


SENSORLOG_HEADER = ["loggingTime(txt)", "loggingSample(N)", "identifierForVendor(txt)",
                    "accelerometerTimestamp_sinceReboot(s)", "accelerometerAccelerationX(G)",
                    "accelerometerAccelerationY(G)", "accelerometerAccelerationZ(G)", "gyroTimestamp_sinceReboot(s)",
                    "gyroRotationX(rad/s)", "gyroRotationY(rad/s)", "gyroRotationZ(rad/s)",
                    "magnetometerTimestamp_sinceReboot(s)", "magnetometerX(µT)", "magnetometerY(µT)",
                    "magnetometerZ(µT)", "label(N)"]


def sensorlog_csv(path: Path, seconds: float = 11.0, rate: float = 50.0, seed: int = 1) -> Path:
    """An iOS SensorLog export: a text logging time ('2019-10-24 13:56:08.123 +0200'), a sample
    counter, per-sensor 'since reboot' timestamps, accelerometer (G), gyroscope (rad/s),
    magnetometer (µT) and a label column."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t0 = 62608.123
    t = t0 + np.arange(n) / rate + rng.uniform(0, 2e-4, n)
    acc = [0.0, 0.0, -1.0] + 0.3 * np.sin(2 * np.pi * 1.8 * (t - t0))[:, None] * [1, 0.6, 0.3]
    gyro = 0.5 * np.cos(2 * np.pi * 0.9 * (t - t0))[:, None] * [1, -0.4, 0.2] + 0.01 * rng.standard_normal((n, 3))
    mag = [-20.0, 5.0, -40.0] + rng.standard_normal((n, 3))
    rows = [",".join(SENSORLOG_HEADER)]
    for i in range(n):
        ms = 123 + round(1000 * i / rate)
        stamp = f"2019-10-24 13:56:{8 + ms // 1000:02d}.{ms % 1000:03d} +0200"
        cells = [stamp, str(i), "6E4A-TEST", f"{t[i]:.6f}", *(f"{v:.6f}" for v in acc[i]), f"{t[i] + 1e-4:.6f}",
                 *(f"{v:.6f}" for v in gyro[i]), f"{t[i] + 2e-4:.6f}", *(f"{v:.3f}" for v in mag[i]), "0"]
        rows.append(",".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def build_imu(folder: Path) -> dict[str, dict]:
    xio_csv(folder / "xio_fusion_sensor_data.csv")
    sensorlog_csv(folder / "sensorlog_iphone.csv")
    return {"xio_fusion_sensor_data.csv": dict(windows=2, rate=99.21),
            "sensorlog_iphone.csv": dict(windows=2, rate=50.0, generated_only=True)}


# ---------------------------------------------------------------------------------------------
# X-ray
# ---------------------------------------------------------------------------------------------


def chest_png(path: Path, size: int = 256, seed: int = 0) -> Path:
    """An 8-bit greyscale (mode L) radiograph-like PNG: two dark lung fields in a bright body."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.exp(-((xx - 0.5) ** 2) / 0.12)
    lungs = sum(np.exp(-(((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.28) ** 2)) for cx in (0.32, 0.68))
    a = 40 + 190 * body - 120 * lungs + 6 * rng.standard_normal((size, size))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.clip(0, 255).astype(np.uint8), "L").save(path)
    return path


def build_xray(folder: Path) -> dict[str, dict]:
    chest_png(folder / "nih_cxr14_00000001_000.png")
    return {"nih_cxr14_00000001_000.png": dict(size=(256, 256), mode="L")}


BUILDERS = {"infrared": build_infrared, "hyperspectral": build_hyperspectral, "graph": build_graph,
            "imu": build_imu, "xray": build_xray}


def build_all(root: Path) -> dict[str, dict[str, dict]]:
    return {name: build(root / name) for name, build in BUILDERS.items()}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "generated-samples")
    build_all(out)
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>9,}  {p.relative_to(out)}")
