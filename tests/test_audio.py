"""audio: sniffing, Kaldi fbank parity, AST token counts, cross-format agreement, streaming, repairs."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_modality

from mtx.encoder import pool
from mtx.errors import DecodeError
from mtx.modalities import get_modality
from mtx.modalities.audio import EPS, kaldi_fbank, n_tokens
from mtx.sniff import sniff

sf = pytest.importorskip("soundfile")


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced source with a gliding pitch, syllable-rate envelope, noise and a pause."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 30)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    x = 0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)
    n = min(rate // 5, len(x) // 4)
    x[len(x) // 3: len(x) // 3 + n] = 0.001 * rng.standard_normal(n)
    return x.astype(np.float32)


def vector(model, path, **cfg) -> torch.Tensor:
    _, _, tokens, hidden = run_modality(model, path, **cfg)
    return pool(hidden, tokens, "mean").mean(0)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    import soxr

    d = tmp_path_factory.mktemp("audio")
    x48 = speech_like(3.0, 48000)
    sf.write(d / "a48.wav", x48, 48000, subtype="PCM_16")
    sf.write(d / "a16.flac", soxr.resample(x48, 48000, 16000), 16000)
    sf.write(d / "a.ogg", x48, 48000, format="OGG", subtype="VORBIS")
    sf.write(d / "a.opus", x48, 48000, format="OGG", subtype="OPUS")
    sf.write(d / "a.mp3", x48, 48000, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(d / "a.aiff", x48, 48000, format="AIFF", subtype="PCM_16")
    sf.write(d / "adpcm.wav", soxr.resample(x48, 48000, 16000), 16000, subtype="IMA_ADPCM")
    sf.write(d / "float.wav", np.stack([x48, x48], 1), 48000, subtype="FLOAT")
    sf.write(d / "mystery.bin", x48, 48000, format="FLAC")  # content decides, not the name
    return d


@pytest.mark.parametrize("name,fmt", [
    ("a48.wav", "WAV"), ("a16.flac", "FLAC"), ("a.ogg", "Ogg Vorbis"), ("a.opus", "Ogg Opus"),
    ("a.mp3", "MP3"), ("a.aiff", "AIFF"), ("adpcm.wav", "WAV"), ("float.wav", "WAV"),
    ("mystery.bin", "FLAC"),
])
def test_sniff_and_decode_formats(sounds, tiny_model, name, fmt):
    dec, samples, tokens, hidden = run_modality(tiny_model, sounds / name)
    assert dec.modality == "audio" and dec.reason == f"claim: {fmt} header"
    assert samples[0].arrays["fbank"].shape[:2] == (1, 128)
    assert torch.isfinite(hidden).all()


def test_sniff_leaves_video_and_images_alone():
    mod = get_modality("audio")
    avi = b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(100)
    webp = b"RIFF\x00\x10\x00\x00WEBPVP8 " + bytes(100)
    theora = b"OggS\x00\x02" + bytes(22) + b"\x80theora" + bytes(50)
    for head, name in ((avi, "x.avi"), (webp, "x.webp"), (theora, "x.ogv"), (theora, "x.ogg")):
        assert mod.sniff(head, Path(name)) is None
    assert mod.sniff(b"\xff\xd8\xff\xe0" + bytes(100), Path("x.jpg")) is None  # JPEG != MP3 sync
    # An ADTS sync word without valid frames is no evidence (real ADTS AAC: tests/test_valid_files.py)
    assert mod.sniff(b"\xff\xf1" + bytes(100), Path("x.bin")) is None


@pytest.mark.parametrize("bins,low", [(128, 40.0), (80, 20.0), (23, 20.0)])
def test_fbank_matches_kaldi_native_fbank(bins, low):
    knf = pytest.importorskip("kaldi_native_fbank")
    x = speech_like(3.0)
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0
    o.frame_opts.window_type = "hanning"
    o.mel_opts.num_bins = bins
    o.mel_opts.low_freq = low
    o.use_energy = False
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(16000, x)
    fb.input_finished()
    ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    ours = kaldi_fbank(x, bins, low).numpy()
    assert ours.shape == ref.shape == (298, bins)
    assert np.abs(ours - ref).max() <= 1e-3


def test_fbank_128_bins_from_20hz_keeps_the_empty_filter():
    """Kaldi refuses 128 bins from 20 Hz (filter 3 is empty); AST's torchaudio features keep it."""
    knf = pytest.importorskip("kaldi_native_fbank")
    o = knf.FbankOptions()
    o.mel_opts.num_bins = 128
    with pytest.raises(Exception, match="num_mel_bins too large"):
        knf.OnlineFbank(o)
    fb = kaldi_fbank(speech_like(1.0)).numpy()
    assert fb.shape == (98, 128)
    assert np.all(fb[:, 3] == np.float32(np.log(EPS)))
    assert (fb[:, [2, 4]].mean(0) > np.log(EPS) + 1).all()


def _wav(path: Path, seconds: float, rate: int = 16000, seed: int = 0) -> Path:
    sf.write(path, speech_like(seconds, rate, seed), rate, subtype="PCM_16")
    return path


def test_token_counts_b16(b16_model, tmp_path):
    mod = get_modality("audio")
    cfg = mod.config()
    full = _wav(tmp_path / "full.wav", (1023 * 160 + 400) / 16000)  # exactly 1024 frames
    s = list(mod.load(full, cfg))
    assert s[0].arrays["fbank"].shape == (1, 128, 1024)
    tok = b16_model.tokenizer("audio", cfg)
    with torch.inference_mode():
        t = tok(mod.collate(s))
    assert t.x.shape == (1, 1213, 768) and t.pad_mask is None and n_tokens(1024) == 1213
    _, samples, tokens, hidden = run_modality(b16_model, _wav(tmp_path / "one.wav", 1.0))
    assert samples[0].arrays["fbank"].shape == (1, 128, 98)
    assert tokens.x.shape == (1, 109, 768) and hidden.shape == (1, 109, 768)
    assert tok.init == "seeded" and mod.default_pool(tok.init) == "mean"


def test_same_sound_as_wav_flac_ogg_agrees(sounds, b16_model):
    ref = vector(b16_model, sounds / "a48.wav")
    for name in ("a16.flac", "a.ogg"):
        cos = torch.nn.functional.cosine_similarity(ref, vector(b16_model, sounds / name), dim=0)
        assert cos > 0.98, (name, float(cos))


def test_short_clips_are_padded_and_masked(tmp_path, tiny_model):
    mod = get_modality("audio")
    cfg = mod.config()
    tiny = _wav(tmp_path / "tiny.wav", 0.02)  # 320 samples: less than one 25 ms frame
    _, samples, tokens, hidden = run_modality(tiny_model, tiny)
    assert samples[0].arrays["fbank"].shape == (1, 128, 16)
    assert "padded_samples" in samples[0].meta and "padded_frames" in samples[0].meta
    assert tokens.x.shape[1] == 13 and torch.isfinite(hidden).all()
    # Padding in a mixed batch must not change any vector.
    paths = [tiny, _wav(tmp_path / "short.wav", 0.7, seed=1), _wav(tmp_path / "long.wav", 2.3, seed=2)]
    loaded = [list(mod.load(p, cfg))[0] for p in paths]
    tok = tiny_model.tokenizer("audio", cfg)
    with torch.inference_mode():
        batch = tok(mod.collate(loaded))
        together = pool(tiny_model.encode_tokens(batch), batch, "mean")
        assert batch.pad_mask is not None and batch.pad_mask.sum() > 0
        for i, s in enumerate(loaded):
            alone_t = tok(mod.collate([s]))
            alone = pool(tiny_model.encode_tokens(alone_t), alone_t, "mean")
            assert torch.allclose(alone[0], together[i], atol=1e-5)
    assert {mod.batch_key(s) for s in loaded} == {("fbank", 16), ("fbank", 128), ("fbank", 256)}


def test_long_file_streams_in_segments(tmp_path):
    import soxr

    mod = get_modality("audio")
    x = speech_like(25.3, 22050)
    p = tmp_path / "long.wav"
    sf.write(p, x, 22050, subtype="FLOAT")
    (s,) = mod.load(p, mod.config())
    assert s.arrays["fbank"].shape == (3, 128, 1024) and s.meta["segment_starts_s"] == [0.0, 10.24, 15.04]
    assert s.meta["last_segment_overlap_frames"] == 544
    # Streamed segments equal the fbank of the whole file resampled at once.
    from mtx.modalities.audio import _normalise

    whole = _normalise(kaldi_fbank(soxr.resample(x, 22050, 16000, quality="HQ")))
    assert np.abs(s.arrays["fbank"][1] - whole[:, 1024:2048]).max() < 1e-2
    assert np.abs(s.arrays["fbank"][2] - whole[:, -1024:]).max() < 1e-2
    (two,) = mod.load(p, mod.config(max_segments=2))
    assert two.arrays["fbank"].shape[0] == 2 and "segments_subsampled" in two.meta
    keys = [w.key for w in mod.load(p, mod.config(per_window=True))]
    assert keys == ["t=0", "t=10.24", "t=15.04"]


def test_lying_header_is_repaired_and_recorded(tmp_path, tiny_model):
    good = _wav(tmp_path / "good.wav", 1.0)
    raw = bytearray(good.read_bytes())
    i = raw.find(b"data")
    struct.pack_into("<I", raw, i + 4, 10**8)  # claims ~50 minutes of data
    struct.pack_into("<I", raw, 4, 10**8 + 36)
    lying = tmp_path / "lying.wav"
    lying.write_bytes(bytes(raw))
    _, samples, _, hidden = run_modality(tiny_model, lying)
    assert "declares 50000000 frames" in samples[0].meta["repair"]
    assert samples[0].meta["duration_s"] == 1.0 and torch.isfinite(hidden).all()


def test_bad_audio_fails_clearly(tmp_path):
    mod = get_modality("audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(DecodeError, match="no samples"):
        list(mod.load(empty, mod.config()))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(40))
    assert sniff(junk).modality == "audio"
    with pytest.raises(DecodeError, match="cannot decode audio"):
        list(mod.load(junk, mod.config()))


def test_clip_front_initialises_from_image_patches():
    from mtx.modalities.audio import AudioPatchTokenizer
    from mtx.weights import ClipFront, EncoderSpec

    for patch in (16, 14):
        spec = EncoderSpec("t", 32, 1, 2, patch)
        g = spec.grid
        w = torch.randn(32, 3, patch, patch)
        front = ClipFront(w, torch.randn(32), torch.randn(1 + g * g, 32), torch.ones(32), torch.zeros(32))
        tok = AudioPatchTokenizer(spec, front, seed=1, segment_frames=1024)
        assert tok.init == "clip" and tok.proj.weight.shape == (32, 1, 16, 16)
        sums = torch.stack([tok.proj.weight.sum((1, 2, 3)), w.sum((1, 2, 3))])
        if patch == 16:  # exactly the RGB sum; resized kernels keep their response to flat input
            assert torch.allclose(tok.proj.weight, w.sum(1, keepdim=True))
        assert torch.corrcoef(sums)[0, 1] > 0.98
        assert torch.equal(tok.pos[0], front.pos[0]) and tok.pos.shape == (1 + 12 * 101, 32)
        out = tok({"fbank": torch.randn(2, 128, 98), "frames": torch.tensor([98, 40])})
        assert out.x.shape == (2, 109, 32) and out.pad_mask[1].sum() == 12 * (9 - 3)
