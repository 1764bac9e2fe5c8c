"""infrared: FLIR radiometric JPEGs (raw thermal records), 16-bit thermal frames, sniffing."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import SOURCES, run_modality
from PIL import Image
from samplegen import fff_blob, flir_jpeg, planck_celsius, raw_record, read_planck

from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.modalities.infrared import fff_records, flir_blob, flir_raw, path_hint
from mtx.sniff import sniff

# The real FLIR JPEGs (SOURCES.md): raw frame (rows, cols), min, max, storage, FLIR APP1 segments,
# FFF byte order, and the black-body temperatures (deg C) of min and max through the file's own
# Planck constants. The generated look-alikes (tests/samplegen.py) report the same facts.
REAL_FLIR = {
    "flir_ax8.jpg": ((60, 80), 16711, 16876, "png", 1, "big", (24.11, 25.16)),
    "flir_example.jpg": ((320, 240), 12501, 20042, "png", 2, "big", (25.61, 60.22)),
    "dji_zenmuse_xtr.jpg": ((512, 640), 3051, 4630, "raw", 11, "little", (18.58, 48.74)),
    "flir_t630sc.jpg": ((480, 640), 13084, 13783, "png", 13, "big", (19.41, 24.03)),
}
REAL_TIFF = {"shape": (512, 640), "lo": 6743, "hi": 7077}
INFRARED_FILES = [*sorted(REAL_FLIR), "flir_duo_pro_r_radiometric.tiff"]


def flir_case(sample_files, source: str, name: str) -> tuple[Path, dict]:
    """A FLIR JPEG of ``source`` and what it holds (``raw``: the exact frame, generated only)."""
    data = sample_files[source]
    path = data.path(f"infrared/{name}")
    if source == "generated":
        return path, data.facts(f"infrared/{name}")
    shape, lo, hi, storage, nseg, order, temps = REAL_FLIR[name]
    return path, dict(shape=shape, lo=lo, hi=hi, storage=storage, segments=nseg, byte_order=order,
                      temp_range=temps, raw=None)


# -- fixture builders ---------------------------------------------------------------------------


def _fff(records: list[tuple[int, bytes]], order: str = ">") -> bytes:
    return fff_blob([(rtype, 1, data) for rtype, data in records], order)


def _raw_record(a: np.ndarray, as_png: bool, order: str = "<") -> bytes:
    return raw_record(a, "png" if as_png else "raw", order)


def _flir_jpeg(path: Path, fff: bytes, nseg: int = 1, rgb: np.ndarray | None = None) -> Path:
    """``fff`` in ``nseg`` FLIR APP1 segments right after SOI (the first two written out of order
    when nseg > 2: chunk order comes from the segment header, not from file order)."""
    return flir_jpeg(path, fff, nseg, rgb, swap_first=nseg > 2, after_soi=True)


def _thermal(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return (7000 + 300 * np.sin(xx / 7.0) + 200 * np.cos(yy / 5.0) + rng.integers(0, 20, (h, w))).astype(np.uint16)


# -- the real FLIR samples and their generated look-alikes -------------------------------------


@pytest.mark.parametrize("name", sorted(REAL_FLIR))
@pytest.mark.parametrize("source", SOURCES)
def test_flir_raw_thermal_frame(sample_files, source, name):
    path, want = flir_case(sample_files, source, name)
    raw, meta = flir_raw(path.read_bytes())
    assert raw is not None and raw.dtype == np.uint16
    assert raw.shape == tuple(want["shape"])
    assert (int(raw.min()), int(raw.max())) == (want["lo"], want["hi"])
    assert meta["raw_encoding"].startswith(want["storage"])
    if want["raw"] is not None:
        np.testing.assert_array_equal(raw, want["raw"])
    mod = get_modality("infrared")
    sample = next(mod.load(path, mod.config()))
    assert sample.meta["thermal_source"] == "raw"
    assert sample.meta["raw_range"] == [want["lo"], want["hi"]]


@pytest.mark.parametrize("name", sorted(REAL_FLIR))
@pytest.mark.parametrize("source", SOURCES)
def test_flir_segments_and_fff_byte_order(sample_files, source, name):
    """DJI writes a little-endian FFF (creator ATAU_RBFO) in 11 segments; FLIR big-endian."""
    path, want = flir_case(sample_files, source, name)
    _, meta = flir_raw(path.read_bytes())
    assert meta["fff_byte_order"] == want["byte_order"]
    assert meta["flir_app1_segments"] == want["segments"]
    assert (meta["fff_creator"] == "ATAU_RBFO") == name.startswith("dji")
    assert 1 in meta["fff_records"] and 32 in meta["fff_records"]


@pytest.mark.parametrize("name", sorted(REAL_FLIR))
@pytest.mark.parametrize("source", SOURCES)
def test_flir_raw_range_is_radiometric(sample_files, source, name):
    """The raw range the loader reports is in sensor counts: through the Planck constants of the
    file's camera-info record (type 32) it gives the scene's temperatures (a byteswapped or
    rescaled frame would not)."""
    path, want = flir_case(sample_files, source, name)
    fff, _ = flir_blob(path.read_bytes())
    _, _, recs = fff_records(fff)
    off, length = next((o, n) for t, o, n in recs if t == 32)
    planck = read_planck(fff[off:off + length])
    mod = get_modality("infrared")
    lo, hi = next(mod.load(path, mod.config())).meta["raw_range"]
    np.testing.assert_allclose(planck_celsius([lo, hi], planck), want["temp_range"], atol=0.02)


@pytest.mark.parametrize("source", SOURCES)
def test_radiometric_lzw_tiff(sample_files, source):
    rel = "infrared/flir_duo_pro_r_radiometric.tiff"
    p = sample_files[source].path(rel)
    want = REAL_TIFF if source == "real" else sample_files[source].facts(rel)
    mod = get_modality("infrared")
    s = next(mod.load(p, mod.config()))
    assert s.meta["value_range"] == [float(want["lo"]), float(want["hi"])]
    assert s.meta["shape"] == list(want["shape"]) and s.meta["compression"] == "LZW"
    assert s.meta["thermal_source"] == "frame"
    import tifffile

    with tifffile.TiffFile(p) as tf:  # the format facts that make it the hard case
        page = tf.pages[0]
        assert page.predictor == 2 and page.bitspersample == 16 and page.dtype == np.uint16


@pytest.mark.parametrize("name", INFRARED_FILES)
@pytest.mark.parametrize("source", SOURCES)
def test_every_infrared_sample_sniffs_and_embeds(sample_files, tiny_model, source, name):
    p = sample_files[source].path(f"infrared/{name}")
    dec, got, tokens, hidden = run_modality(tiny_model, p)
    assert dec.modality == "infrared", (p.name, dec.reason)
    px = got[0].arrays["pixels"]
    assert px.shape == (1, 3, 224, 224) and px.dtype == np.float32
    assert 0.0 <= px.min() and px.max() <= 1.0 and px.max() > 0.5
    assert tokens.x.shape == (1, 197, 64) and tokens.pad_mask is None
    assert bool(hidden.isfinite().all())


@pytest.mark.parametrize("source", SOURCES)
def test_flir_jpeg_at_b16(sample_files, b16_model, source):
    """The shape contract at the real B/16 geometry (one file: the encoder cost is the same for all)."""
    _, _, tokens, hidden = run_modality(b16_model, sample_files[source].path("infrared/flir_ax8.jpg"))
    assert tokens.x.shape == (1, 197, 768) and hidden.shape == (1, 197, 768)


# -- synthetic FLIR files -----------------------------------------------------------------------


@pytest.mark.parametrize("order,as_png,nseg,rec_order", [(">", True, 1, "<"), ("<", False, 3, "<"), (">", False, 2, "<"),
                                                     ("<", True, 4, "<"), (">", False, 2, ">"), ("<", False, 3, ">")])
def test_synthetic_flir_record_layouts(tmp_path, order, as_png, nseg, rec_order):
    """FFF directory in either byte order; the raw record's own byte-order word decides how bare
    uint16 samples are read (both orders), PNG samples are byteswapped."""
    a = _thermal()
    fff = _fff([(32, b"\x00" * 100), (1, _raw_record(a, as_png, rec_order)), (14, b"visual")], order)
    p = _flir_jpeg(tmp_path / "cam.jpg", fff, nseg)
    assert sniff(p).modality == "infrared"
    raw, meta = flir_raw(p.read_bytes())
    np.testing.assert_array_equal(raw, a)
    assert meta["flir_app1_segments"] == nseg
    assert meta["fff_byte_order"] == ("big" if order == ">" else "little")
    if not as_png:
        assert meta["raw_encoding"] == f"raw uint16 {'big' if rec_order == '>' else 'little'}-endian"


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
