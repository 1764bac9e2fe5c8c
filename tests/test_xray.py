"""xray: DICOM (uncompressed, RLE, JPEG, JPEG-LS, JPEG 2000; LUTs; MONOCHROME1; multi-frame)
and X-ray PNG/JPEG with a path hint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SOURCES, run_modality
from PIL import Image

from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.sniff import sniff

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def _radiograph(h: int = 48, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = 1500 + 1200 * np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (2 * (w / 4) ** 2))
    return (a + rng.integers(0, 40, (h, w))).astype(np.uint16)


def make_dicom(path: Path, arr: np.ndarray, *, photometric: str = "MONOCHROME2", slope=None, intercept=None,
               window=None, syntax=None, encapsulated: bytes | list[bytes] | None = None,
               pixels: bool = True, modality: str = "CR") -> Path:
    """A minimal DICOM file written by pydicom (frames first when ``arr`` is 3-D)."""
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = modality, "Test^Phantom"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = ds.BitsAllocated, ds.BitsAllocated - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if encapsulated is not None:
        frames = [encapsulated] if isinstance(encapsulated, bytes) else encapsulated
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
        return path
    if pixels:
        ds.PixelData = arr.tobytes()
    if syntax is not None:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def _load(path: Path, **cfg):
    mod = get_modality("xray")
    return next(mod.load(path, mod.config(**cfg)))


# -- the real sample and its generated look-alike ----------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_chest_png_sniffs_by_path_hint_and_embeds(sample_files, b16_model, source):
    """An 8-bit greyscale PNG (NIH ChestX-ray14, 512x512; the look-alike 256x256) in an xray/ folder."""
    p = sample_files[source].path("xray/nih_cxr14_00000001_000.png")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.mode == "L" and min(im.size) > 224
    dec, got, tokens, hidden = run_modality(b16_model, p)
    assert dec.modality == "xray", dec.reason
    assert "path hint" in dec.reason
    assert got[0].arrays["pixels"].shape == (1, 3, 224, 224)
    assert tokens.x.shape == (1, 197, 768)
    assert hidden.shape == (1, 197, 768) and bool(hidden.isfinite().all())


# -- DICOM --------------------------------------------------------------------------------------


def test_dicom_sniffs_as_xray_whatever_its_name(tmp_path):
    p = make_dicom(tmp_path / "scan.png", _radiograph())  # a wrong extension does not matter
    dec = sniff(p)
    assert dec.modality == "xray" and "DICM" in dec.reason
    q = make_dicom(tmp_path / "IM0001", _radiograph())
    assert sniff(q).modality == "xray"


def test_uncompressed_dicom_embeds(tmp_path, b16_model):
    p = make_dicom(tmp_path / "a.dcm", _radiograph())
    dec, samples, tokens, hidden = run_modality(b16_model, p)
    assert dec.modality == "xray" and tokens.x.shape == (1, 197, 768)
    m = samples[0].meta
    assert m["format"] == "DICOM" and m["dicom_modality"] == "CR" and m["frames"] == 1
    assert m["transfer_syntax"] == "Explicit VR Little Endian"


def test_monochrome1_is_inverted(tmp_path):
    a = _radiograph()
    x2 = _load(make_dicom(tmp_path / "m2.dcm", a)).arrays["pixels"]
    s1 = _load(make_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1"))
    assert s1.meta["invert"] is True
    np.testing.assert_allclose(s1.arrays["pixels"], 1.0 - x2, atol=1e-5)


def test_rescale_and_window(tmp_path):
    a = _radiograph()  # stored 1500..2740; with slope 2, intercept -1024: 1976..4456
    s = _load(make_dicom(tmp_path / "w.dcm", a, slope=2, intercept=-1024, window=(2200, 400)))
    assert s.meta["rescale"] == {"slope": 2.0, "intercept": -1024.0}
    assert s.meta["voi"] == {"window_center": 2200.0, "window_width": 400.0}
    # Everything above the window (most of the bright disc) is saturated white.
    plain = _load(make_dicom(tmp_path / "p.dcm", a)).arrays["pixels"]
    win = s.arrays["pixels"]
    assert (win >= 0.999).mean() > (plain >= 0.999).mean() + 0.2


def test_voi_lut_sequence_is_applied(tmp_path):
    from pydicom.sequence import Sequence

    a = (np.arange(48 * 40).reshape(48, 40) % 256).astype(np.uint16)
    p = make_dicom(tmp_path / "lut.dcm", a)
    ds = pydicom.dcmread(p)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.add_new(0x00283006, "US", [int(v) for v in (255 - np.arange(256)) * 100])  # a reversing LUT
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(p)
    s = _load(p)
    assert s.meta["voi"] == "VOI LUT sequence (first)"
    plain = _load(make_dicom(tmp_path / "plain.dcm", a)).arrays["pixels"]
    np.testing.assert_allclose(s.arrays["pixels"], 1.0 - plain, atol=1e-3)


def test_multiframe_uses_the_middle_frame(tmp_path):
    frames = np.stack([_radiograph(seed=i) * (1 if i != 1 else 0) + (i == 1) * _radiograph(seed=9)
                       for i in range(3)]).astype(np.uint16)
    s = _load(make_dicom(tmp_path / "mf.dcm", frames))
    assert s.meta["frames"] == 3 and s.meta["frame_used"] == 1
    single = _load(make_dicom(tmp_path / "one.dcm", frames[1])).arrays["pixels"]
    np.testing.assert_array_equal(s.arrays["pixels"], single)


@pytest.mark.parametrize("kind", ["rle", "jpeg2000", "jpegls", "jpeg_baseline"])
def test_compressed_transfer_syntaxes(tmp_path, kind):
    a = _radiograph()
    ref = _load(make_dicom(tmp_path / "ref.dcm", a)).arrays["pixels"]
    if kind == "rle":
        p = make_dicom(tmp_path / "c.dcm", a, syntax=RLELossless)
        want = "RLE Lossless"
    elif kind == "jpeg2000":
        p = make_dicom(tmp_path / "c.dcm", a, syntax=JPEG2000Lossless)
        want = "JPEG 2000"
    elif kind == "jpegls":
        imagecodecs = pytest.importorskip("imagecodecs")
        p = make_dicom(tmp_path / "c.dcm", a, syntax=JPEGLSLossless,
                       encapsulated=imagecodecs.jpegls_encode(a))
        want = "JPEG-LS"
    else:
        a8 = (a >> 4).astype(np.uint8)
        ref = _load(make_dicom(tmp_path / "ref8.dcm", a8)).arrays["pixels"]
        import io

        buf = io.BytesIO()
        Image.fromarray(a8).save(buf, "JPEG", quality=95)
        p = make_dicom(tmp_path / "c.dcm", a8, syntax=JPEGBaseline8Bit, encapsulated=buf.getvalue())
        want = "JPEG Baseline"
    s = _load(p)
    assert want in s.meta["transfer_syntax"]
    if kind == "jpeg_baseline":
        assert np.abs(s.arrays["pixels"] - ref).mean() < 0.03
    else:
        np.testing.assert_array_equal(s.arrays["pixels"], ref)


def test_dicom_without_pixel_data_is_a_clear_decode_error(tmp_path):
    p = make_dicom(tmp_path / "sr.dcm", _radiograph(), pixels=False)
    assert sniff(p).modality == "xray"
    with pytest.raises(DecodeError, match="no pixel data"):
        _load(p)


def test_corrupt_dicom_is_a_decode_error(tmp_path):
    p = tmp_path / "bad.dcm"
    p.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(DecodeError):
        _load(p)
    good = make_dicom(tmp_path / "t.dcm", _radiograph(200, 200))
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(good.read_bytes()[:-30000])
    with pytest.raises(DecodeError):
        _load(trunc)


# -- PNG/JPEG with a path hint ------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["xray/a.png", "X-Ray/a.png", "data/cxr_0001.png", "chest/a.jpg",
                                 "radiographs/b.png", "data/patient_x-ray_3.jpg"])
def test_hinted_pictures_sniff_as_xray(tmp_path, rel):
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((_radiograph() >> 4).astype(np.uint8)).save(p)
    dec = sniff(p)
    assert dec.modality == "xray", dec.reason
    assert any(c.modality == "image" for c in dec.candidates)  # image lost, it did not abstain


def test_unhinted_picture_stays_image(tmp_path):
    p = tmp_path / "photos" / "a.png"
    p.parent.mkdir()
    Image.fromarray((_radiograph() >> 4).astype(np.uint8)).save(p)
    assert sniff(p).modality == "image"


def test_png_and_dicom_of_the_same_image_agree(tmp_path):
    a8 = (_radiograph() >> 4).astype(np.uint8)
    p = tmp_path / "xray" / "a.png"
    p.parent.mkdir()
    Image.fromarray(a8).save(p)
    np.testing.assert_allclose(_load(p).arrays["pixels"], _load(make_dicom(tmp_path / "a.dcm", a8)).arrays["pixels"],
                               atol=1e-5)
