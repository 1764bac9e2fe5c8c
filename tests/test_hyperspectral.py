"""hyperspectral: .mat v5/v7.3, ENVI (interleaves, byte order, offset, wavelengths), TIFF, NPY;
one token per band, wavelength positions, spectral resampling above 512 bands."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SOURCES, run_modality
from samplegen import write_envi, write_mat73

from mtx.errors import DecodeError, UnknownModality
from mtx.modalities import get_modality, list_modalities
from mtx.sniff import read_head, sniff

scipy_io = pytest.importorskip("scipy.io")


def cube(h: int = 12, w: int = 10, b: int = 20, seed: int = 0, dtype=np.uint16) -> np.ndarray:
    """A smooth (H, W, B) cube whose bands differ in pattern, not only in level."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    bands = [1000 + 400 * np.sin(xx / (2 + k % 5) + k) * np.cos(yy / (3 + k % 3)) + 50 * k for k in range(b)]
    a = np.stack(bands, -1) + rng.integers(0, 10, (h, w, b))
    return a.astype(dtype)


def _load(path: Path, **cfg):
    mod = get_modality("hyperspectral")
    return next(mod.load(path, mod.config(**cfg)))


# -- the real samples and their generated look-alikes ------------------------------------------

# Tokens per file (bands + 1; the 580-band ENVI cube is averaged into 512 bands): the same for
# the real files and the look-alikes, which keep the band counts and shrink the pixels.
HSI_TOKENS = {"a_hsi_img_for_VI_demo.mat": 225, "an_hsi_image_sub_for_demo.mat": 73,
              "an_hsi_img_for_tgt_det_demo.mat": 73, "corn-kernel-hyperspectral.hdr": 513}
# MATLAB files: the cube variable, its dtype, and the wavelength range (nm) of `wavelengths`.
HSI_MAT = {"a_hsi_img_for_VI_demo.mat": ("hsi_img", "int16", (365.9, 2496.2)),
           "an_hsi_image_sub_for_demo.mat": ("hsi_img_sub", "float32", (367.7, 1043.4)),
           "an_hsi_img_for_tgt_det_demo.mat": ("hsi_sub", "float32", (367.7, 1043.4))}
V73 = "an_hsi_img_for_tgt_det_demo_v73.mat"  # generated only: no real v7.3 file is in the data
TOKENS = {**HSI_TOKENS, V73: 73}
HSI_CASES = [(s, n) for s in SOURCES for n in sorted(HSI_TOKENS)] + [("generated", V73)]
MAT_CASES = [(s, n) for s in SOURCES for n in sorted(HSI_MAT)] + [("generated", V73)]


@pytest.mark.parametrize("source,name", HSI_CASES)
def test_every_hyperspectral_sample_sniffs_and_embeds(sample_files, tiny_model, b16_model, source, name):
    p = sample_files[source].path(f"hyperspectral/{name}")
    # B/16 for the 580-band ENVI cube (the acceptance shape), the tiny encoder for the rest.
    model = b16_model if p.suffix == ".hdr" else tiny_model
    dec, got, tokens, hidden = run_modality(model, p)
    assert dec.modality == "hyperspectral", (p.name, dec.reason)
    assert tokens.x.shape == (1, TOKENS[name], model.spec.dim), p.name
    assert hidden.shape == tokens.x.shape and bool(hidden.isfinite().all())
    assert got[0].meta["band_positions"] == "wavelength_nm"


@pytest.mark.parametrize("source", SOURCES)
def test_envi_data_file_is_consumed_with_its_header(sample_files, source):
    data = sample_files[source].path("hyperspectral/corn-kernel-hyperspectral.raw")
    sample_files[source].path("hyperspectral/corn-kernel-hyperspectral.hdr")
    folder = data.parent
    mod = get_modality("hyperspectral")
    companions = {c for p in folder.iterdir() for c in mod.companions(p)}
    assert companions == {data}
    # The data file of the pair is consumed with its header; nobody claims it alone.
    head = read_head(data)
    assert all(m.sniff(head, data) is None for m in list_modalities())
    with pytest.raises(UnknownModality):
        sniff(data)


@pytest.mark.parametrize("source,name", MAT_CASES)
def test_mat_cubes_variables_and_wavelengths(sample_files, source, name):
    p = sample_files[source].path(f"hyperspectral/{name}")
    variable, dtype, (lo, hi) = HSI_MAT[name.replace("_v73", "")]
    s = _load(p)
    assert s.meta["format"] == ("MATLAB v7.3 (HDF5)" if name == V73 else "MATLAB v5")
    assert s.meta["variable"] == variable and s.meta["dtype"] == dtype
    assert s.meta["wavelengths_from"] == "wavelengths"
    assert s.meta["wavelength_range_nm"] == pytest.approx([lo, hi], abs=0.1)
    assert s.arrays["bands"].shape == (1, TOKENS[name] - 1, 16, 16)
    if source == "generated":
        want = sample_files[source].facts(f"hyperspectral/{name}")
        assert s.meta["shape_hwb"] == list(want["cube"].shape)
        np.testing.assert_allclose(s.arrays["band_pos"][0], want["wavelengths"], rtol=1e-6)
        if name == V73:  # the HDF5 layout reads to the same maps as its v5 twin
            twin = _load(sample_files[source].path(f"hyperspectral/{name.replace('_v73', '')}"))
            np.testing.assert_array_equal(s.arrays["bands"], twin.arrays["bands"])
            assert sniff(p).modality == "hyperspectral"


@pytest.mark.parametrize("source", SOURCES)
def test_corn_envi_cube_matches_the_documented_layout_and_regotto_512(sample_files, source, tmp_path):
    hdr = sample_files[source].path("hyperspectral/corn-kernel-hyperspectral.hdr")
    raw = sample_files[source].path("hyperspectral/corn-kernel-hyperspectral.raw")
    h, w = (31, 43) if source == "real" else sample_files[source].facts("hyperspectral/corn-kernel-hyperspectral.hdr")[
        "cube"].shape[:2]
    s = _load(hdr)
    assert s.meta["shape_hwb"] == [h, w, 580] and s.meta["interleave"] == "bil"
    assert s.meta["byte_order_from"] == "default (little)" and s.meta["header_offset"] == 0
    assert "580 bands averaged into 512" in s.meta["spectral_resampling"]
    assert s.arrays["bands"].shape == (1, 512, 16, 16)
    lo, hi = s.meta["wavelength_range_nm"]
    assert 366 < lo < 368 and 1047 < hi < 1049.5
    # The same cube read the way SOURCES.md documents it, through the NPY path: same band maps.
    ref = np.fromfile(raw, dtype="<u2").reshape(h, 580, w).transpose(0, 2, 1)
    if source == "real":
        assert int(ref.max()) == 2887
    else:
        np.testing.assert_array_equal(ref, sample_files[source].facts("hyperspectral/corn-kernel-hyperspectral.hdr")["cube"])
    npy = tmp_path / "hsi" / "corn.npy"
    npy.parent.mkdir()
    np.save(npy, ref)
    full = _load(hdr, max_bands=1000).arrays["bands"]
    np.testing.assert_array_equal(_load(npy, max_bands=1000).arrays["bands"], full)
    assert full.shape == (1, 580, 16, 16)


# -- ENVI variants --------------------------------------------------------------------------------


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("big_endian,offset", [(False, 0), (True, 128)])
def test_envi_interleaves_byte_orders_offsets_agree(tmp_path, interleave, big_endian, offset):
    a = cube()
    ref = _load(write_envi(tmp_path / "ref.hdr", a)).arrays["bands"]
    p = write_envi(tmp_path / "c.hdr", a, interleave, big_endian, offset, data_ext=".img")
    s = _load(p)
    np.testing.assert_array_equal(s.arrays["bands"], ref)
    assert s.meta["interleave"] == interleave and s.meta["header_offset"] == offset
    assert s.meta["byte_order"] == ("big" if big_endian else "little")


def test_envi_wavelengths_units_and_positions(tmp_path):
    a = cube(b=20)
    um = np.linspace(0.4, 2.5, 20)
    s_um = _load(write_envi(tmp_path / "um.hdr", a, wavelengths=um, units="Micrometers"))
    np.testing.assert_allclose(s_um.arrays["band_pos"][0], um * 1000, rtol=1e-5)
    s_nm = _load(write_envi(tmp_path / "nm.hdr", a, wavelengths=um * 1000))
    np.testing.assert_allclose(s_nm.arrays["band_pos"], s_um.arrays["band_pos"], rtol=1e-5)
    s_none = _load(write_envi(tmp_path / "none.hdr", a))
    assert s_none.meta["band_positions"] == "index"
    np.testing.assert_array_equal(s_none.arrays["band_pos"][0], np.arange(20))
    s_bad = _load(write_envi(tmp_path / "bad.hdr", a, wavelengths=um[:5]))
    assert s_bad.meta["band_positions"] == "index" and "5 wavelengths" in s_bad.meta["wavelengths_ignored"]


def test_envi_data_file_discovery_and_companions(tmp_path):
    mod = get_modality("hyperspectral")
    for ext in (".dat", ".bsq", ""):
        d = tmp_path / ext.strip(".") if ext else tmp_path / "noext"
        d.mkdir()
        p = write_envi(d / "scene.hdr", cube(), data_ext=ext)
        data = p.with_suffix(ext) if ext else p.with_suffix("")
        assert mod.companions(p) == [data]
        assert _load(p).meta["data_file"] == data.name
        assert sniff(p).modality == "hyperspectral"


def test_envi_missing_or_short_data_file_is_a_clear_decode_error(tmp_path):
    p = write_envi(tmp_path / "lost.hdr", cube())
    p.with_suffix(".raw").unlink()
    assert sniff(p).modality == "hyperspectral"
    with pytest.raises(DecodeError, match="data file not found"):
        _load(p)
    q = write_envi(tmp_path / "short.hdr", cube())
    raw = q.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(DecodeError, match="truncated"):
        _load(q)
    r = tmp_path / "broken.hdr"
    r.write_text("ENVI\nsamples = 3\nlines = 4\n")
    with pytest.raises(DecodeError, match="required field"):
        _load(r)


# -- MATLAB ---------------------------------------------------------------------------------------


def test_indian_pines_shaped_mat_gives_201_tokens(tmp_path, b16_model):
    rng = np.random.default_rng(0)
    a = rng.integers(900, 9000, (145, 145, 200)).astype(np.uint16)
    p = tmp_path / "Indian_pines.mat"
    scipy_io.savemat(p, {"indian_pines": a, "labels": np.zeros((145, 145), np.uint8)})
    dec, samples, tokens, hidden = run_modality(b16_model, p)
    assert dec.modality == "hyperspectral" and dec.reason.startswith("refined")
    assert samples[0].meta["variable"] == "indian_pines" and samples[0].meta["band_positions"] == "index"
    assert tokens.x.shape == (1, 201, 768) and hidden.shape == (1, 201, 768)
    mod = get_modality("hyperspectral")
    assert mod.cost(samples[0], b16_model.spec, mod.config()) == 201 and mod.default_pool("seeded") == "mean"


def test_mat_v5_and_v73_agree_and_use_wavelengths(tmp_path):
    a = cube(b=24).astype(np.float32)
    wl = np.linspace(400, 1000, 24)[:, None]
    v5 = tmp_path / "c5.mat"
    scipy_io.savemat(v5, {"small": np.ones((3, 3)), "data": a, "wavelengths": wl})
    v73 = write_mat73(tmp_path / "c73.mat", {"small": np.ones((3, 3)), "data": a, "wavelengths": wl})
    s5, s73 = _load(v5), _load(v73)
    assert s5.meta["format"] == "MATLAB v5" and s73.meta["format"] == "MATLAB v7.3 (HDF5)"
    assert s5.meta["variable"] == s73.meta["variable"] == "data"
    np.testing.assert_array_equal(s5.arrays["bands"], s73.arrays["bands"])
    np.testing.assert_allclose(s73.arrays["band_pos"][0], wl[:, 0], rtol=1e-6)
    assert s73.meta["wavelengths_from"] == "wavelengths"
    assert sniff(v73).modality == "hyperspectral"


def test_mat_key_and_band_axis_options(tmp_path):
    a, b = cube(b=18), cube(b=30, seed=1)
    p = tmp_path / "two.mat"
    scipy_io.savemat(p, {"first": a, "second": b})
    assert _load(p).arrays["bands"].shape[1] == 30  # the largest by default
    big2d = tmp_path / "big2d.mat"
    scipy_io.savemat(big2d, {"huge": np.zeros((200, 200)), "c": a})
    assert _load(big2d).meta["variable"] == "c"  # the largest *3-D* array
    assert _load(p, key="first").arrays["bands"].shape[1] == 18
    with pytest.raises(DecodeError, match="not found"):
        _load(p, key="third")
    bfirst = tmp_path / "bfirst.mat"
    scipy_io.savemat(bfirst, {"c": np.moveaxis(a, -1, 0)})
    np.testing.assert_array_equal(_load(bfirst, band_axis=0).arrays["bands"], _load(p, key="first").arrays["bands"])


def test_mat_without_a_cube(tmp_path):
    p = tmp_path / "table.mat"
    scipy_io.savemat(p, {"x": np.arange(100.0).reshape(10, 10), "y": np.ones(5)})
    dec = sniff(p)
    assert dec.modality == "hyperspectral" and dec.reason.startswith("extension")
    with pytest.raises(DecodeError, match="no 3-D numeric array"):
        _load(p)
    thin = tmp_path / "thin.mat"
    scipy_io.savemat(thin, {"rgb": np.zeros((8, 8, 3))})
    assert sniff(thin).reason.startswith("extension")  # 3 bands is no spectral cube


def test_mat_v4_has_no_cubes_and_says_so(tmp_path):
    p = tmp_path / "old.mat"  # v4 has no text header and holds 2-D arrays only
    scipy_io.savemat(p, {"m": np.ones((4, 5))}, format="4")
    assert sniff(p).modality == "hyperspectral"
    with pytest.raises(DecodeError, match="no 3-D numeric array"):
        _load(p)


def test_envi_spectral_library_is_refused(tmp_path):
    p = write_envi(tmp_path / "lib.hdr", cube(1, 50, 1))
    p.write_text(p.read_text().replace("ENVI Standard", "ENVI Spectral Library"))
    with pytest.raises(DecodeError, match="spectral library"):
        _load(p)


# -- TIFF and NPY ---------------------------------------------------------------------------------


def test_multiband_tiff_beats_image(tmp_path):
    import tifffile

    a = cube(b=8)
    p = tmp_path / "ms.tif"
    tifffile.imwrite(p, a, photometric="minisblack", planarconfig="contig")
    dec = sniff(p)
    assert dec.modality == "hyperspectral" and any(c.modality == "image" for c in dec.candidates)
    s = _load(p)
    assert s.arrays["bands"].shape == (1, 8, 16, 16)
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(a, -1, 0), photometric="minisblack", planarconfig="separate")
    assert sniff(planar).modality == "hyperspectral"
    np.testing.assert_array_equal(_load(planar).arrays["bands"], s.arrays["bands"])
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, a[..., :3].astype(np.uint8), photometric="rgb")
    assert sniff(rgb).modality == "image"


def test_npy_needs_a_hint(tmp_path):
    a = cube(b=16)
    (tmp_path / "hsi").mkdir()
    np.save(tmp_path / "hsi" / "x.npy", a)
    assert sniff(tmp_path / "hsi" / "x.npy").modality == "hyperspectral"
    np.save(tmp_path / "x.npy", a)
    assert get_modality("hyperspectral").sniff(read_head(tmp_path / "x.npy"), tmp_path / "x.npy") is None
    np.save(tmp_path / "hsi" / "few.npy", a[..., :8])
    assert get_modality("hyperspectral").sniff(read_head(tmp_path / "hsi" / "few.npy"),
                                               tmp_path / "hsi" / "few.npy") is None


# -- preprocessing and tokenizer ------------------------------------------------------------------


def test_per_band_robust_minmax_and_area_resize(tmp_path):
    a = np.zeros((32, 32, 16), np.float32)
    a[:16, :, :] = 5.0  # top half bright in every band, at band-dependent levels
    a *= np.arange(1, 17, dtype=np.float32)
    a[..., 3] = 7.0  # a constant band
    a[0, 0, 5] = np.nan
    npy = tmp_path / "hsi" / "c.npy"
    npy.parent.mkdir()
    np.save(npy, a)
    s = _load(npy)
    maps = s.arrays["bands"][0]
    assert maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps[0, :8], 1.0)  # area resize: top half -> top 8 rows
    np.testing.assert_allclose(maps[0, 8:], 0.0)
    np.testing.assert_allclose(maps[10], maps[0])  # per band: levels do not matter
    np.testing.assert_allclose(maps[3], 0.0)
    assert s.meta["normalisation"]["constant_bands"] == 1
    assert s.meta["normalisation"]["nonfinite_values"] == 1


def test_spectral_resampling_averages_bins(tmp_path):
    a = cube(8, 8, 40)
    p = write_envi(tmp_path / "r.hdr", a, wavelengths=np.arange(40) * 10.0 + 400)
    full = _load(p).arrays
    half = _load(p, max_bands=20).arrays
    assert half["bands"].shape == (1, 20, 16, 16)
    np.testing.assert_allclose(half["bands"][0], full["bands"][0].reshape(20, 2, 16, 16).mean(1), atol=1e-6)
    np.testing.assert_allclose(half["band_pos"][0], np.arange(20) * 20.0 + 405)


def test_tokenizer_positions_batching_and_determinism(tmp_path, tiny_model):
    mod = get_modality("hyperspectral")
    a = cube(b=20)
    p1 = write_envi(tmp_path / "a.hdr", a, wavelengths=np.linspace(400, 900, 20))
    p2 = write_envi(tmp_path / "b.hdr", cube(b=20, seed=5))
    s1, s2 = _load(p1), _load(p2)
    assert mod.batch_key(s1) == mod.batch_key(s2)
    assert mod.batch_key(s1) != mod.batch_key(_load(write_envi(tmp_path / "c.hdr", cube(b=21))))
    cfg = mod.config()
    tok = tiny_model.tokenizer("hyperspectral", cfg)
    assert tok.init == "seeded" and tok.seed == mod.seed(tiny_model.spec, cfg)
    with torch.inference_mode():
        both = tok(mod.collate([s1, s2])).x
        one = tok(mod.collate([s1])).x
    assert both.shape == (2, 21, 64)
    torch.testing.assert_close(both[:1], one)
    # The band position term matters: same maps, other wavelengths -> other tokens.
    s1b = _load(write_envi(tmp_path / "d.hdr", a, wavelengths=np.linspace(1000, 2400, 20)))
    np.testing.assert_array_equal(s1b.arrays["bands"], s1.arrays["bands"])
    with torch.inference_mode():
        other = tok(mod.collate([s1b])).x
    assert not torch.allclose(other[:, 1:], one[:, 1:])
