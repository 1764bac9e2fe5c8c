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

CASES = sorted(vg.CASES)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every case except the 50 MB CSV (built by its own test), written once."""
    d = tmp_path_factory.mktemp("valid")
    for name in CASES:
        if name != "cell_50mb.csv":
            vg.build(name, d)
    return d


def load(path: Path, modality: str | None = None, **cfg):
    dec = sniff(path, modality=modality)
    mod = get_modality(dec.modality)
    samples = list(mod.load(path, mod.config(**cfg), dec.sniffed))
    return dec, samples, [mod.cost(s) for s in samples]


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
