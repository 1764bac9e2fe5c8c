"""infrared: FLIR radiometric JPEGs (raw thermal records), 16-bit thermal frames, sniffing."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import run_modality
from PIL import Image

from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.modalities.infrared import flir_raw, path_hint
from mtx.sniff import sniff

# Raw thermal frames of the shared FLIR JPEGs: (rows, cols), min, max, storage (SOURCES.md).
FLIR_SAMPLES = {
    "flir_ax8.jpg": ((60, 80), 16711, 16876, "png"),
    "flir_example.jpg": ((320, 240), 12501, 20042, "png"),
    "dji_zenmuse_xtr.jpg": ((512, 640), 3051, 4630, "raw"),
    "flir_t630sc.jpg": ((480, 640), 13084, 13783, "png"),
}


# -- fixture builders ---------------------------------------------------------------------------


def _jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _fff(records: list[tuple[int, bytes]], order: str = ">") -> bytes:
    """An FFF blob: 64-byte header, a 32-byte-entry directory, then the records."""
    dir_off, n = 64, len(records)
    body_off = dir_off + 32 * n
    entries, bodies, off = b"", b"", body_off
    for idx, (rtype, data) in enumerate(records, 1):
        entries += struct.pack(order + "HHIIII", rtype, 1, 100, idx, off, len(data)) + b"\x00" * 12
        bodies += data
        off += len(data)
    header = b"FFF\x00" + b"mtxtest".ljust(16, b"\x00") + struct.pack(order + "III", 100, dir_off, n)
    return header.ljust(64, b"\x00") + entries + bodies


def _raw_record(a: np.ndarray, as_png: bool) -> bytes:
    h, w = a.shape
    head = struct.pack("<HHH", 2, w, h).ljust(32, b"\x00")
    if as_png:
        buf = io.BytesIO()
        # FLIR stores the PNG's 16-bit samples little-endian: byteswap before a standard encoder.
        Image.fromarray(a.astype(np.uint16).byteswap()).save(buf, "PNG")
        return head + buf.getvalue()
    return head + a.astype("<u2").tobytes()


def _flir_jpeg(path: Path, fff: bytes, nseg: int = 1, rgb: np.ndarray | None = None) -> Path:
    """A JPEG carrying ``fff`` in ``nseg`` FLIR APP1 segments right after SOI (written shuffled:
    chunk order comes from the segment header, not from file order)."""
    if rgb is None:
        rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    jpg = _jpeg_bytes(rgb)
    size = -(-len(fff) // nseg)
    parts = [fff[i * size:(i + 1) * size] for i in range(nseg)]
    segs = []
    for i, p in enumerate(parts):
        payload = b"FLIR\x00\x01" + bytes([i, nseg - 1]) + p
        segs.append(b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload)
    if nseg > 2:
        segs[0], segs[1] = segs[1], segs[0]
    path.write_bytes(jpg[:2] + b"".join(segs) + jpg[2:])
    return path


def _thermal(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return (7000 + 300 * np.sin(xx / 7.0) + 200 * np.cos(yy / 5.0) + rng.integers(0, 20, (h, w))).astype(np.uint16)


# -- the shared FLIR samples --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FLIR_SAMPLES))
def test_flir_raw_thermal_matches_sources(shared_data, name):
    shape, lo, hi, storage = FLIR_SAMPLES[name]
    raw, meta = flir_raw((shared_data / "infrared" / name).read_bytes())
    assert raw is not None and raw.dtype == np.uint16
    assert raw.shape == shape
    assert (int(raw.min()), int(raw.max())) == (lo, hi)
    assert meta["raw_encoding"].startswith(storage)
    sample = next(get_modality("infrared").load(shared_data / "infrared" / name, get_modality("infrared").config()))
    assert sample.meta["thermal_source"] == "raw"
    assert sample.meta["raw_range"] == [lo, hi]


def test_dji_fff_is_little_endian(shared_data):
    _, meta = flir_raw((shared_data / "infrared" / "dji_zenmuse_xtr.jpg").read_bytes())
    assert meta["fff_byte_order"] == "little" and meta["flir_app1_segments"] == 11
    _, meta = flir_raw((shared_data / "infrared" / "flir_ax8.jpg").read_bytes())
    assert meta["fff_byte_order"] == "big"


def test_radiometric_lzw_tiff(shared_data):
    p = shared_data / "infrared" / "flir_duo_pro_r_radiometric.tiff"
    mod = get_modality("infrared")
    s = next(mod.load(p, mod.config()))
    assert s.meta["value_range"] == [6743.0, 7077.0]
    assert s.meta["shape"] == [512, 640] and s.meta["compression"] == "LZW"
    assert s.meta["thermal_source"] == "frame"


def test_every_shared_infrared_file_sniffs_and_embeds(shared_data, tiny_model, b16_model):
    files = sorted((shared_data / "infrared").iterdir())
    assert len(files) == 5
    for p in files:
        dec, samples, tokens, hidden = run_modality(tiny_model, p)
        assert dec.modality == "infrared", (p.name, dec.reason)
        px = samples[0].arrays["pixels"]
        assert px.shape == (1, 3, 224, 224) and px.dtype == np.float32
        assert 0.0 <= px.min() and px.max() <= 1.0 and px.max() > 0.5
        assert tokens.x.shape == (1, 197, 64) and tokens.pad_mask is None
        assert bool(hidden.isfinite().all())
    # The shape contract at the real B/16 geometry (one file: the encoder cost is the same for all).
    _, _, tokens, hidden = run_modality(b16_model, shared_data / "infrared" / "flir_ax8.jpg")
    assert tokens.x.shape == (1, 197, 768) and hidden.shape == (1, 197, 768)


# -- synthetic FLIR files -----------------------------------------------------------------------


@pytest.mark.parametrize("order,as_png,nseg", [(">", True, 1), ("<", False, 3), (">", False, 2), ("<", True, 4)])
def test_synthetic_flir_record_layouts(tmp_path, order, as_png, nseg):
    a = _thermal()
    fff = _fff([(32, b"\x00" * 100), (1, _raw_record(a, as_png)), (14, b"visual")], order)
    p = _flir_jpeg(tmp_path / "cam.jpg", fff, nseg)
    assert sniff(p).modality == "infrared"
    raw, meta = flir_raw(p.read_bytes())
    np.testing.assert_array_equal(raw, a)
    assert meta["flir_app1_segments"] == nseg
    assert meta["fff_byte_order"] == ("big" if order == ">" else "little")


def test_flir_without_raw_record_falls_back_to_rendered(tmp_path):
    p = _flir_jpeg(tmp_path / "noraw.jpg", _fff([(32, b"\x00" * 64), (14, b"visual")]))
    mod = get_modality("infrared")
    s = next(mod.load(p, mod.config()))
    assert s.meta["thermal_source"] == "rendered"
    # The palette picture keeps its colours (the image path), not a grey average.
    assert s.arrays["pixels"].shape == (1, 3, 224, 224) and s.arrays["pixels"].dtype == np.uint8
    assert not np.array_equal(s.arrays["pixels"][0, 0], s.arrays["pixels"][0, 1])


def test_flir_raw_record_past_the_end_is_a_decode_error(tmp_path):
    fff = bytearray(_fff([(1, _raw_record(_thermal(), False))]))
    struct.pack_into(">I", fff, 64 + 16, 10_000_000)  # record length far beyond the blob
    p = _flir_jpeg(tmp_path / "bad.jpg", bytes(fff))
    mod = get_modality("infrared")
    with pytest.raises(DecodeError, match="raw thermal record"):
        next(mod.load(p, mod.config()))


def test_flir_blob_that_is_not_fff_is_a_decode_error(tmp_path):
    p = _flir_jpeg(tmp_path / "junk.jpg", b"NOTFFF" + b"\x00" * 100)
    mod = get_modality("infrared")
    with pytest.raises(DecodeError, match="FFF"):
        next(mod.load(p, mod.config()))


def test_raw_frame_drives_the_pixels_not_the_visible_jpeg(tmp_path):
    a = _thermal(56, 56)
    fff = _fff([(1, _raw_record(a, True))])
    rng = np.random.default_rng(1)
    p1 = _flir_jpeg(tmp_path / "a.jpg", fff, rgb=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    p2 = _flir_jpeg(tmp_path / "b.jpg", fff, rgb=np.zeros((32, 32, 3), np.uint8))
    mod = get_modality("infrared")
    x1 = next(mod.load(p1, mod.config())).arrays["pixels"]
    x2 = next(mod.load(p2, mod.config())).arrays["pixels"]
    np.testing.assert_array_equal(x1, x2)


# -- 16-bit frames and sniffing -----------------------------------------------------------------


def _png16(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint16)).save(path)
    return path


def test_sniff_single_channel_frames_need_a_path_hint(tmp_path):
    a = _thermal()
    assert sniff(_png16(tmp_path / "thermal" / "f0001.png", a)).modality == "infrared"
    assert sniff(_png16(tmp_path / "data" / "IR_0001.png", a)).modality == "infrared"
    assert sniff(_png16(tmp_path / "LWIR" / "x.png", a)).modality == "infrared"
    assert sniff(_png16(tmp_path / "data" / "frame.png", a)).modality == "image"
    assert sniff(_png16(tmp_path / "data" / "irish_sea.png", a)).modality == "image"  # 'irish' is no token
    rgb = tmp_path / "thermal" / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    assert sniff(rgb).modality == "image"  # a colour picture is not a measured frame
    grey_jpg = tmp_path / "flir" / "g.jpg"
    grey_jpg.parent.mkdir()
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(grey_jpg)
    assert sniff(grey_jpg).modality == "infrared"


def test_path_hint_tokens():
    assert path_hint(Path("/d/Thermal/a.png"), ("thermal",)) == "Thermal"
    assert path_hint(Path("/d/x/cam_flir_01.tiff"), ("flir",)) == "flir"
    assert path_hint(Path("/d/x/FLIR0001.jpg"), ("flir",)) == "flir"
    assert path_hint(Path("/d/firmware/a.png"), ("ir",)) is None


def test_lzw_predictor_tiff_roundtrip_and_robust_range(tmp_path):
    import tifffile

    a = _thermal(64, 80)
    a[0, 0] = 65535  # one hot pixel must not flatten the rest: 1st-99th percentile range
    p = tmp_path / "infrared" / "frame.tif"
    p.parent.mkdir()
    tifffile.imwrite(p, a, compression="lzw", predictor=True)
    assert sniff(p).modality == "infrared"
    mod = get_modality("infrared")
    s = next(mod.load(p, mod.config()))
    assert s.meta["value_range"] == [float(a.min()), 65535.0]
    assert s.meta["normalisation"]["range_hi"] < 8000
    px = s.arrays["pixels"][0]
    assert px.std() > 0.15  # contrast kept despite the outlier
    np.testing.assert_array_equal(px[0], px[1])  # grey replicated to 3 channels


def test_png16_values_are_not_rescaled_by_dtype(tmp_path):
    """A frame and the same frame + offset give the same pixels (min-max is per file)."""
    a = _thermal()
    mod = get_modality("infrared")
    x1 = next(mod.load(_png16(tmp_path / "ir" / "a.png", a), mod.config())).arrays["pixels"]
    x2 = next(mod.load(_png16(tmp_path / "ir" / "b.png", a + 1000), mod.config())).arrays["pixels"]
    np.testing.assert_allclose(x1, x2, atol=1e-5)


def test_not_an_image_is_a_decode_error(tmp_path):
    p = tmp_path / "thermal" / "x.png"
    p.parent.mkdir()
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    mod = get_modality("infrared")
    with pytest.raises(DecodeError):
        next(mod.load(p, mod.config()))
    q = tmp_path / "x.bin"
    q.write_bytes(b"hello world")
    with pytest.raises(DecodeError, match="not an image container"):
        next(mod.load(q, mod.config()))


def test_tiny_model_contract(tmp_path, tiny_model):
    p = _flir_jpeg(tmp_path / "c.jpg", _fff([(1, _raw_record(_thermal(), True))]))
    dec, samples, tokens, hidden = run_modality(tiny_model, p)
    assert dec.modality == "infrared" and tokens.x.shape == (1, 197, 64)
    mod = get_modality("infrared")
    assert mod.default_pool(tiny_model.tokenizer("infrared", mod.config()).init) == "mean"
    assert mod.cost(samples[0], tiny_model.spec, mod.config()) == 197
