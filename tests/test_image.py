"""image: every format of MODALITIES.md, colour handling, EXIF, TIFF via tifffile, bomb cap."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_modality
from PIL import Image

from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.sniff import sniff

IMG = get_modality("image")


def _load(path):
    return list(IMG.load(path, IMG.config()))[0]


def _grad(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) * 2 % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("ext,kw", [(".jpg", {}), (".png", {}), (".webp", {}), (".bmp", {}), (".gif", {}),
                                    (".tiff", {}), (".ppm", {}), (".pgm", {})])
def test_formats_sniff_and_load(tmp_path, ext, kw):
    im = Image.fromarray(_grad())
    if ext == ".pgm":
        im = im.convert("L")
    p = tmp_path / f"x{ext}"
    im.save(p, **kw)
    d = sniff(p)
    assert d.modality == "image", d
    s = _load(p)
    assert s.arrays["pixels"].shape == (1, 3, 224, 224)


def test_modes_grey_palette_alpha_16bit(tmp_path):
    Image.fromarray(np.full((20, 20), 77, np.uint8), "L").save(tmp_path / "g.png")
    px = _load(tmp_path / "g.png").arrays["pixels"][0]
    assert (px[0] == px[1]).all() and (px[1] == px[2]).all() and px[0, 5, 5] == 77
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    s = _load(tmp_path / "a.png")
    assert s.meta["alpha"] == "composited over white" and (s.arrays["pixels"] == 255).all()
    Image.fromarray(_grad()).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "p.png")
    assert _load(tmp_path / "p.png").arrays["pixels"].dtype == np.uint8
    a16 = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 100 + 1000)
    Image.fromarray(a16).save(tmp_path / "d.png")
    s = _load(tmp_path / "d.png")
    px = s.arrays["pixels"]
    assert px.dtype == np.float32 and px.min() == 0.0 and px.max() == pytest.approx(1.0)
    assert s.meta["value_range"] == [1000.0, 40900.0]


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, :40] = 255  # left half white
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    s = _load(tmp_path / "r.jpg")
    assert s.meta["exif_orientation"] == 6
    px = s.arrays["pixels"][0, 0]
    assert px[:50].mean() > 200 and px[-50:].mean() < 50  # white now at the top


def test_float_and_multipage_tiff_through_tifffile(tmp_path):
    import tifffile

    f = np.linspace(-1, 3, 50 * 60, dtype=np.float32).reshape(50, 60)
    tifffile.imwrite(tmp_path / "f.tif", f)
    s = _load(tmp_path / "f.tif")
    assert s.arrays["pixels"].dtype == np.float32 and s.arrays["pixels"].max() <= 1.0
    pages = np.stack([np.full((30, 30, 3), v, np.uint8) for v in (10, 200)])
    tifffile.imwrite(tmp_path / "m.tif", pages, photometric="rgb")
    s = _load(tmp_path / "m.tif")
    assert abs(int(s.arrays["pixels"][0, 0, 10, 10]) - 10) <= 1  # first page


def test_decompression_bomb_refused(tmp_path):
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    p = tmp_path / "bomb.png"
    p.write_bytes(png)
    with pytest.raises(DecodeError, match="pixels|too large"):
        _load(p)


def test_224_image_is_not_resampled(tmp_path):
    a = _grad(224, 224)
    Image.fromarray(a).save(tmp_path / "e.png")
    np.testing.assert_array_equal(_load(tmp_path / "e.png").arrays["pixels"][0], a.transpose(2, 0, 1))


def test_contract_b16(b16_model, tmp_path):
    Image.fromarray(_grad(300, 400)).save(tmp_path / "x.jpg")
    dec, samples, tokens, hidden = run_modality(b16_model, tmp_path / "x.jpg")
    assert tokens.x.shape == (1, 197, 768) and hidden.shape == (1, 197, 768) and tokens.has_cls


def test_other_input_sizes_resize_the_position_table(tiny_model, tmp_path):
    Image.fromarray(_grad(300, 400)).save(tmp_path / "x.png")
    dec, samples, tokens, hidden = run_modality(tiny_model, tmp_path / "x.png", size=112)
    assert samples[0].arrays["pixels"].shape == (1, 3, 112, 112)
    assert tokens.x.shape == (1, 1 + 7 * 7, 64) and torch.isfinite(hidden).all()
