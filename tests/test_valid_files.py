"""Valid files users have that mtx used to refuse (issue #17, items 5-9), generated small and
deterministic by tests/validgen.py: each is sniffed as its modality and loads into samples.

The per-item tests below check what the fix is about (the decoded sound matches the source, the
video's duration is the picture's, the header names the columns, the numbers are numbers...).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import validgen as vg

from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.sniff import sniff
from mtx.weights import get_preset

CASES = sorted(vg.CASES)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every case except the 50 MB CSV (built by its own test), written once."""
    d = tmp_path_factory.mktemp("valid")
    for name in CASES:
        if name != "cell_50mb.csv":
            vg.build(name, d)
    return d


B16 = get_preset("meta-b16")


def load(path: Path, modality: str | None = None, **cfg):
    dec = sniff(path, modality=modality)
    mod = get_modality(dec.modality)
    conf = mod.config(**cfg)
    samples = list(mod.load(path, conf, dec.sniffed))
    return dec, samples, [mod.cost(s, B16, conf) for s in samples]


@pytest.mark.parametrize("name", [n for n in CASES if n != "cell_50mb.csv"])
def test_valid_file_is_sniffed_and_loads(files, name):
    dec, samples, tokens = load(files / name)
    assert dec.modality == vg.CASES[name][1], dec.reason
    assert samples and min(tokens) > 1


# ---------------------------------------------------------------------------------------------
# 5. Audio FFmpeg decodes (AAC, ALAC, Opus in WebM, WMA, AC-3, MP2 in Matroska); raw H.264/H.265
# ---------------------------------------------------------------------------------------------


def _fbank_of_tone(seconds: float, rate: int) -> np.ndarray:
    import soxr

    from mtx.modalities.audio import _normalise, kaldi_fbank

    mono = vg.tone(seconds, rate, 2).mean(axis=0)
    x = soxr.resample(mono, rate, 16000)
    return _normalise(kaldi_fbank(x - x.mean()))


@pytest.mark.parametrize("name,rate", [("aac_in_m4a.m4a", 44100), ("aac_audio_only.mp4", 44100),
                                       ("adts.aac", 44100), ("aac_in_mka.mka", 44100),
                                       ("opus_audio_only.webm", 48000), ("wma_v2.wma", 44100),
                                       ("ac3.ac3", 48000), ("mp2_in_mkv_noext", 44100)])
def test_ffmpeg_audio_decodes_to_the_same_sound(files, name, rate):
    dec, samples, tokens = load(files / name)
    assert dec.reason.startswith("claim:")
    m = samples[0].meta
    assert m["decoder"] == "ffmpeg (PyAV)" and m["sample_rate"] == rate and m["channels"] == 2
    assert abs(m["duration_s"] - 3.0) < 0.1
    ref = _fbank_of_tone(3.0, rate)
    got = samples[0].arrays["fbank"][0]
    n = min(ref.shape[1], got.shape[1]) - 20
    # Lossy codecs (their encoder delay, their low-pass filter) change details, not the picture
    # of the sound below ~5 kHz (the first 80 mel bins).
    r = np.corrcoef(ref[:80, 10:n].ravel(), got[:80, 10:n].ravel())[0, 1]
    assert r > 0.85, r


def test_forced_audio_reads_m4a_and_the_soundtrack_of_a_video(files):
    _, samples, _ = load(files / "aac_in_m4a.m4a", modality="audio")
    assert samples[0].meta["subtype"] == "aac"
    dec, samples, _ = load(files / "video_with_aac.mp4", modality="audio")
    assert dec.modality == "audio" and abs(samples[0].meta["duration_s"] - 2.0) < 0.1


def test_forced_audio_never_follows_a_playlist(tmp_path):
    p = tmp_path / "list.m3u8"  # FFmpeg's HLS demuxer would open what it lists
    p.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(DecodeError, match="cannot decode audio"):
        load(p, modality="audio")


def test_cover_art_is_not_a_video(tmp_path):
    import av

    p = tmp_path / "with_cover.m4a"
    with av.open(str(p), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=44100)
        a.layout = "stereo"
        v = c.add_stream("mjpeg")
        v.width = v.height = 32
        v.pix_fmt = "yuvj420p"
        v.disposition = av.stream.Disposition.attached_pic
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for pkt in [*v.encode(frame.reformat(format="yuvj420p")), *v.encode(None)]:
            c.mux(pkt)
        vg._encode_audio(c, a, 2.0, 44100, 2)
    dec, samples, _ = load(p)
    assert dec.modality == "audio" and "cover" in dec.reason
    with pytest.raises(DecodeError, match="no video stream"):
        list(get_modality("video").load(p, get_modality("video").config()))


def test_raw_elementary_streams_are_video(files):
    for name, codec in (("raw_stream.h264", "h264"), ("raw_stream.h265", "hevc")):
        dec, samples, tokens = load(files / name)
        assert dec.modality == "video" and "Annex B" in dec.reason and tokens == [1569]
        assert samples[0].meta["codec"] == codec and samples[0].meta["frames_decoded"] >= 8


def test_annexb_sniffing_needs_real_nal_units():
    from mtx.modalities.video import annexb_kind

    assert annexb_kind(b"\x00\x00\x01\x00" + bytes(200)) is None  # ICO-like: NAL type 0
    assert annexb_kind(b"\x00\x00\x00\x01\x67" + bytes(200)) is None  # one start code only
    assert annexb_kind(b"\x00\x00\x01\xba" + bytes(100)) is None  # MPEG-PS pack header
    assert annexb_kind(b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce") == "H.264"


# ---------------------------------------------------------------------------------------------
# 6. Matroska/WebM whose soundtrack outlasts the picture
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["audio_outlasts_video.mkv", "audio_outlasts_video.webm"])
@pytest.mark.parametrize("tags", [True, False])
def test_video_duration_is_the_pictures(files, name, tags, monkeypatch):
    import mtx.modalities.video as video

    if not tags:  # files from muxers that write no per-track DURATION tag
        monkeypatch.setattr(video, "_duration_tag", lambda stream: None)
    _, samples, tokens = load(files / name)
    m = samples[0].meta
    assert tokens == [1569] and m["duration_s"] == pytest.approx(2.0, abs=0.15)
    assert ("DURATION tag" in m["duration_from"]) == tags
    times = [t for clip in m["frame_times_s"] for t in clip]
    assert max(times) < 2.0 and len(set(times)) == 16


# ---------------------------------------------------------------------------------------------
# 7. UTF-16/32 without a byte-order mark, GML with UTF-8 labels, XYZ headers, NPY records
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["utf16le_nobom.txt", "utf16be_nobom", "utf32le_nobom.txt"])
def test_bomless_utf16_32_reads_as_the_same_text(files, tmp_path, name):
    _, samples, _ = load(files / name)
    utf8 = vg.utf_text(tmp_path / "same.txt", "utf-8")
    _, ref, _ = load(utf8)
    assert samples[0].meta["encoding"].startswith(("utf-16", "utf-32"))
    assert "without a byte-order mark" in samples[0].meta["encoding_reason"]
    np.testing.assert_array_equal(samples[0].arrays["ids"], ref[0].arrays["ids"])


def test_bomless_utf16_with_accents_and_binary_stays_binary(files, tmp_path):
    dec, samples, _ = load(files / "utf16le_accents_nobom")
    assert dec.modality == "text" and "UTF-16 LE" in dec.reason
    assert samples[0].meta["bpe_tokens"] > 100
    # Little-endian int16 samples / uint8 images with NULs are not text.
    for i, data in enumerate((np.arange(0, 3000, 7, dtype="<i2").tobytes(),
                              np.random.default_rng(0).integers(0, 4, 4000, dtype=np.uint8).tobytes(),
                              (np.arange(2000) % 20).astype("<u2").tobytes())):
        p = tmp_path / f"blob{i}"
        p.write_bytes(data)
        assert get_modality("text").sniff(data[:8192], p) is None


def test_gml_with_utf8_labels_and_entities(files, tmp_path):
    from mtx.modalities.graph import read_graph

    g = read_graph(files / "labels_utf8.gml")
    labels = [a.get("label") for a in g.node_attrs]
    assert labels[:2] == ["Zürich", "Genève"] and labels[-1] == "Züg & Baar"
    assert len(g.nodes) == 7 and len(g.edges) == 8
    latin = tmp_path / "latin1.gml"  # the GML spec's character set, ISO-8859-1
    latin.write_bytes((files / "labels_utf8.gml").read_text("utf-8").encode("latin-1"))
    assert [a.get("label") for a in read_graph(latin).node_attrs] == labels


@pytest.mark.parametrize("name,columns", [("header_xyz.xyz", ["x", "y", "z"]),
                                          ("header_XYZRGB.xyz", ["X", "Y", "Z"]),
                                          ("header_rgb_first.xyz", ["X", "Y", "Z"])])
def test_xyz_header_names_the_coordinates(files, name, columns):
    from mtx.modalities import _pointio as pio

    with pio.open_reader(files / name) as r:
        pts = np.concatenate(list(r.points()))
        assert r.meta["xyz_columns"] == columns
    np.testing.assert_allclose(pts, vg.cloud(), atol=1e-6)


@pytest.mark.parametrize("name", ["fields_xyzi.npy", "fields_XYZ.npy"])
def test_npy_records_with_xyz_fields(files, tmp_path, name):
    from mtx.modalities import _pointio as pio

    dec, samples, tokens = load(files / name)
    assert dec.modality == "point_cloud" and "records" in dec.reason and tokens == [257]
    with pio.open_reader(files / name) as r:
        np.testing.assert_allclose(np.concatenate(list(r.points())), vg.cloud(), atol=1e-6)
    # the same records inside an .npz
    z = tmp_path / "cloud.npz"
    np.savez(z, scan=np.load(files / name))
    dec, _, tokens = load(z)
    assert dec.modality == "point_cloud" and tokens == [257]
    # records without x/y/z are not points
    other = tmp_path / "other.npy"
    np.save(other, np.zeros(10, dtype=[("a", "<f4"), ("b", "<f4"), ("c", "<f4")]))
    assert get_modality("point_cloud").sniff(other.read_bytes()[:8192], other) is None


# ---------------------------------------------------------------------------------------------
# 8. CSVs: a header over 64 KiB, a 50 MB cell, decimal commas, month names, newest first
# ---------------------------------------------------------------------------------------------


def test_header_over_64kib_is_read_whole(files):
    dec, samples, tokens = load(files / "wide_5000_columns.csv")
    table = samples[0].meta["table"]
    assert dec.modality == "tabular" and len(samples) == 4 and "note" not in samples[0].meta
    assert "5000 columns" in table["column_selection"] and tokens == [2048] * 4
    assert table["columns"][-1]["name"] == "measurement_04999" and table["columns"][-1]["type"] == "numeric"


def test_header_longer_than_the_limit_fails_clearly(files):
    mod = get_modality("tabular")
    with pytest.raises(DecodeError, match=r"first line is longer than 65,536 .*max_record_bytes"):
        list(mod.load(files / "wide_5000_columns.csv", mod.config(max_record_bytes=1 << 16)))


def test_50mb_cell_loads_or_fails_in_one_line(tmp_path):
    p = vg.big_cell_csv(tmp_path / "cell_50mb.csv")
    dec, samples, tokens = load(p)
    assert dec.modality == "tabular" and len(samples) == 3 and tokens == [4, 4, 4]
    table = samples[0].meta["table"]
    assert [c["type"] for c in table["columns"]] == ["numeric", "numeric", "categorical"]
    assert "a record longer than" in table["block_bytes"]
    mod = get_modality("tabular")
    with pytest.raises(DecodeError) as e:
        list(mod.load(p, mod.config(max_record_bytes=4 << 20)))
    assert "longer than 4,194,304 bytes (max_record_bytes)" in e.value.message
    assert "straddl" not in e.value.message and "\n" not in e.value.message


def test_european_numbers_are_numbers(files):
    dec, samples, _ = load(files / "european.csv")
    table = samples[0].meta["table"]
    assert table["decimal"] == ","
    types = {c["name"]: c["type"] for c in table["columns"]}
    assert types == {"Stadt": "categorical", "Einwohner": "numeric", "Fläche_km2": "numeric",
                     "Dichte": "numeric", "Anteil": "numeric"}
    first = (files / "european.csv").read_text().splitlines()[1].split(";")
    pop = float(first[1].replace(".", ""))
    assert samples[0].arrays["cat"][0, 1] == -1  # a number, not a category
    std = table["columns"][1]
    assert samples[0].arrays["num"][0, 1] == pytest.approx((pop - std["mean"]) / std["std"], rel=1e-5)


def test_european_series_and_ambiguous_dots():
    from mtx.modalities import _columns as cols

    t = cols.sniff_table(b"Datum;Wert\n01.02.2023;3,5\n02.02.2023;1.234,5\n")
    assert t.decimal == "," and t.numeric == [False, True] and t.rows[1][1] == "1234.5"
    assert cols.sniff_table(b"a;b\n1;3.14\n2;2,5\n").decimal == "."  # 3.14 says dots are decimals
    assert cols.sniff_table(b"a,b\n1,3\n2,4\n").decimal == "."


@pytest.mark.parametrize("name,fmt", [("stock_dd-Mon-yy.csv", "%d-%b-%y"), ("stock_Mon_dd_yyyy.csv", "%b %d %Y"),
                                      ("stock_dd_Month_yyyy.csv", "%d %B %Y"), ("stock_iso_newest_first.csv", "iso")])
def test_stock_prices_are_a_time_series(files, name, fmt):
    dec, samples, tokens = load(files / name)
    m = samples[0].meta
    assert dec.modality == "time_series" and m["time_format"] == fmt
    assert m["time_reversed"].startswith("rows run newest first") and "sorted_by_time" not in m
    assert m["channels"] == ["Open", "High", "Low", "Close", "Volume"] and tokens == [1 + 5 * 14]
    # oldest first for the model: the first step is the file's last row
    close = [float(r.split(",")[4]) for r in (files / name).read_text().splitlines()[1:]]
    z = m["zscore"]
    assert samples[0].arrays["series"][0, 3, 0] * z["std"][3] + z["mean"][3] == pytest.approx(close[-1], abs=1e-3)


def test_descending_numeric_time(files):
    dec, samples, _ = load(files / "epoch_newest_first.csv")
    assert dec.modality == "time_series" and "monotonic" in dec.reason
    assert "time_reversed" in samples[0].meta


@pytest.mark.parametrize("text,fmt", [("19-Sep-03", "%d-%b-%y"), ("Sep 19 2003", "%b %d %Y"),
                                      ("19 September 2003", "%d %B %Y"), ("September 19, 2003", "%B %d, %Y"),
                                      ("9/19/2003 2:30 PM", "%m/%d/%Y %I:%M %p"),
                                      ("19.09.2003 14:30", "%d.%m.%Y %H:%M"),
                                      ("Fri, 19 Sep 2003", "%a, %d %b %Y"),
                                      ("2003/09/19 10:00:00.25", "%Y/%m/%d %H:%M:%S.%f"),
                                      ("10:30", None), ("2003", None), ("12 kg", None), ("Q1 2003", None),
                                      ("A12", None), ("2-3", None)])
def test_datetime_format_inference(text, fmt):
    from mtx.modalities._columns import datetime_format, infer_datetime_format, parse_datetimes

    assert infer_datetime_format(text) == fmt
    if fmt:
        assert datetime_format([text]) == fmt
        got = parse_datetimes([text], fmt)[0]
        from dateutil import parser

        assert got == pytest.approx(parser.parse(text).replace(tzinfo=None).timestamp()
                                    - parser.parse("1970-01-01").timestamp(), abs=1e-3)


def test_day_first_is_decided_by_the_whole_column():
    from mtx.modalities._columns import datetime_format

    assert datetime_format(["01/02/2003", "05/02/2003", "13/02/2003"]) == "%d/%m/%Y"
    assert datetime_format(["01/02/2003", "05/02/2003", "02/13/2003"]) == "%m/%d/%Y"
    assert datetime_format(["Berlin", "Lagos"]) is None


# ---------------------------------------------------------------------------------------------
# 9. A float64 planar multi-page TIFF; a PNG with megabytes of text metadata
# ---------------------------------------------------------------------------------------------


def test_float64_planar_multipage_tiff(files):
    dec, samples, tokens = load(files / "float64_planar_2page.tif")
    m = samples[0].meta
    assert dec.modality == "image" and tokens == [197]
    assert m["reader"] == "tifffile" and m["page_used"] == "the first of 2 pages" and "planar" in m
    assert m["value_scale"].startswith("scaled from [0, 979.167]")
    px = samples[0].arrays["pixels"][0]
    assert px.dtype == np.float32 and 0 <= px.min() and px.max() <= 1
    # the planes are the channels: red rises left to right, green top to bottom
    assert px[0, 100, -10] > px[0, 100, 10] + 0.5 and px[1, -10, 100] > px[1, 10, 100] + 0.5


def test_float_images_in_unit_range_are_kept(tmp_path):
    import tifffile

    a = np.linspace(0.2, 0.6, 64 * 64).reshape(64, 64).astype(np.float32)
    tifffile.imwrite(tmp_path / "unit.tif", np.stack([a, a, a]), photometric="rgb", planarconfig="separate")
    _, samples, _ = load(tmp_path / "unit.tif")
    px = samples[0].arrays["pixels"][0]
    assert "used as they are" in samples[0].meta["value_scale"]
    assert 0.19 < px.min() < 0.25 and 0.55 < px.max() < 0.61


@pytest.mark.parametrize("mb,compressed,after", [(2.0, True, False), (2.0, True, True), (70.0, False, False)])
def test_png_with_megabytes_of_text(tmp_path, mb, compressed, after):
    from PIL import Image

    p = vg.png_with_text(tmp_path / "meta.png", text_mb=mb, compressed=compressed, after_pixels=after)
    dec, samples, tokens = load(p)
    assert dec.modality == "image" and tokens == [197]
    assert "left out" in samples[0].meta["png_text_ignored"]
    clean = tmp_path / "clean.png"  # the same picture without the text
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(clean)
    np.testing.assert_array_equal(samples[0].arrays["pixels"], load(clean)[1][0].arrays["pixels"])


def test_png_text_limits_keep_guarding_memory():
    from PIL import PngImagePlugin

    assert PngImagePlugin.MAX_TEXT_CHUNK <= 1 << 20 and PngImagePlugin.MAX_TEXT_MEMORY <= 64 << 20


# ---------------------------------------------------------------------------------------------
# End to end: `mtx embed` over all of them embeds every file, no failure
# ---------------------------------------------------------------------------------------------


def test_embed_all_valid_files(files, tmp_path, capsys):
    """Through the pipeline (worker processes): every file embedded as its modality, no failure."""
    import h5py

    from mtx.cli import main
    from mtx.store import _modality_list, read_files

    out = tmp_path / "valid.h5"
    code = main(["embed", str(files), "-o", str(out), "-m", "tiny", "-w", "seeded", "--workers", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        assert len(f["failures/path"]) == 0
        by_file = {Path(r.path).name: r.modality for r in read_files(f)}
        assert len(_modality_list(f)) == len(f["embeddings"])
    assert by_file == {n: vg.CASES[n][1] for n in CASES if n != "cell_50mb.csv"}
