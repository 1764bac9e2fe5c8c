"""video: sniffing, seek-based uniform sampling, animated GIF/WebP, tubelet tokenizer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_modality
from PIL import Image

from mtx.encoder import pool
from mtx.errors import DecodeError, UsageError
from mtx.modalities import get_modality
from mtx.modalities.video import sample_times
from mtx.sniff import sniff

av = pytest.importorskip("av")


def smooth_frames(n: int, h: int = 96, w: int = 128) -> list[np.ndarray]:
    """A smooth moving pattern (survives palette quantisation and lossy codecs)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        r = (np.sin(xx / 20 + i * 0.15) * 0.5 + 0.5) * 255
        g = (np.cos(yy / 15 - i * 0.1) * 0.5 + 0.5) * 255
        b = (np.sin((xx + yy) / 30 + i * 0.05) * 0.5 + 0.5) * 255
        out.append(np.stack([r, g, b], -1).astype(np.uint8))
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, codec: str = "libx264",
                pix_fmt: str = "yuv420p", options: dict | None = None) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if options:
            s.options = options
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def write_gif(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=1000 // fps, loop=0)
    return path


def write_webp(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=1000 // fps, loop=0, lossless=True)
    return path


def _load(path: Path, **cfg):
    mod = get_modality("video")
    return next(mod.load(path, mod.config(**cfg)))


# -- the acceptance item: MP4 vs GIF ------------------------------------------------------------


def test_mp4_and_gif_of_the_same_frames_agree_at_b16(tmp_path, b16_model):
    frames = smooth_frames(32)
    mp4 = write_video(tmp_path / "clip.mp4", frames, options={"crf": "18"})
    gif = write_gif(tmp_path / "clip.gif", frames)
    vecs = []
    for p in (mp4, gif):
        dec, samples, tokens, hidden = run_modality(b16_model, p)
        assert dec.modality == "video", dec.reason
        assert samples[0].arrays["pixels"].shape == (1, 3, 16, 224, 224)
        assert tokens.x.shape == (1, 1569, 768)  # 1 + 8 x 196
        assert hidden.shape == (1, 1569, 768)
        vecs.append(pool(hidden, tokens, "mean")[0])
    cos = torch.nn.functional.cosine_similarity(vecs[0], vecs[1], dim=0).item()
    assert cos > 0.99, cos
    # Both decoders picked the same frames: the one on screen at each sampled instant.
    s_gif = _load(gif)
    assert s_gif.meta["frame_indices"] == [[2 * i + 1 for i in range(16)]]
    s_mp4 = _load(mp4)
    np.testing.assert_allclose(np.array(s_mp4.meta["frame_times_s"][0]) * 10, [2 * i + 1 for i in range(16)],
                               atol=1e-6)


def test_different_videos_are_not_near_identical(tmp_path, tiny_model):
    a = write_video(tmp_path / "a.mp4", smooth_frames(20))
    b = write_video(tmp_path / "b.mp4", [np.roll(f[::-1], 17, axis=1) for f in smooth_frames(20)])
    va, vb = (pool(h, t, "mean")[0] for _, _, t, h in (run_modality(tiny_model, a), run_modality(tiny_model, b)))
    assert torch.nn.functional.cosine_similarity(va, vb, dim=0).item() < 0.999


# -- sniffing -------------------------------------------------------------------------------------


def test_sniff_containers_and_animations(tmp_path):
    frames = smooth_frames(6, 32, 48)
    assert sniff(write_video(tmp_path / "a.mp4", frames)).modality == "video"
    assert sniff(write_video(tmp_path / "a.mkv", frames, codec="mpeg4")).modality == "video"
    assert sniff(write_video(tmp_path / "a.avi", frames, codec="mpeg4")).modality == "video"
    webm = write_video(tmp_path / "a.webm", frames, codec="libvpx-vp9")
    assert sniff(webm).reason.startswith("claim")
    anim = sniff(write_gif(tmp_path / "anim.gif", frames))
    assert anim.modality == "video" and any(c.modality == "image" for c in anim.candidates)
    assert sniff(write_gif(tmp_path / "still.gif", frames[:1])).modality == "image"
    assert sniff(write_webp(tmp_path / "anim.webp", frames)).modality == "video"
    Image.fromarray(frames[0]).save(tmp_path / "still.webp")
    assert sniff(tmp_path / "still.webp").modality == "image"
    Image.fromarray(frames[0]).save(tmp_path / "photo.jpg")
    assert sniff(tmp_path / "photo.jpg").modality == "image"


# -- sampling -------------------------------------------------------------------------------------


def test_sample_times_are_uniform_centres():
    assert sample_times(8.0, 4, 1) == [[1.0, 3.0, 5.0, 7.0]]
    assert sample_times(8.0, 2, 2) == [[1.0, 3.0], [5.0, 7.0]]


def test_long_video_is_sampled_by_seeking(tmp_path):
    fps, n = 5, 600  # two minutes, keyframe every 10 frames
    frames = smooth_frames(n, 32, 48)
    p = write_video(tmp_path / "long.mp4", frames, fps=fps, options={"g": "10", "preset": "ultrafast"})
    s = _load(p, size=32)
    assert s.meta["seeks"] >= 10
    assert s.meta["frames_decoded"] < n / 3  # not every frame was decoded
    want = [np.floor(((i + 0.5) * n / 16) + 1e-9) / fps for i in range(16)]
    np.testing.assert_allclose(s.meta["frame_times_s"][0], want, atol=1e-6)


def test_frames_and_clips(tmp_path, tiny_model):
    p = write_video(tmp_path / "c.mp4", smooth_frames(40, 48, 64))
    s = _load(p, frames=8, clips=3)
    assert s.arrays["pixels"].shape == (3, 3, 8, 224, 224) and s.n_segments == 3
    times = np.array(s.meta["frame_times_s"])
    assert times.shape == (3, 8) and np.all(np.diff(times.ravel()) > 0)  # clips cover consecutive parts
    dec, samples, tokens, hidden = run_modality(tiny_model, p, frames=8, clips=3)
    assert tokens.x.shape == (3, 1 + 4 * 196, 64)
    assert get_modality("video").cost(samples[0], tiny_model.spec, get_modality("video").config(frames=8)) == 1 + 4 * 196
    with pytest.raises(UsageError):
        get_modality("video").config(frames=7)
    with pytest.raises(UsageError):
        get_modality("video").config(clips=0)


def test_short_video_repeats_frames(tmp_path):
    s = _load(write_video(tmp_path / "s.mp4", smooth_frames(3, 32, 32)))
    assert s.arrays["pixels"].shape == (1, 3, 16, 224, 224)
    assert len(set(s.meta["frame_times_s"][0])) == 3


@pytest.mark.parametrize("codec,ext", [("mpeg4", "avi"), ("cinepak", "avi"), ("libvpx-vp9", "webm"),
                                       ("mpeg4", "mov"), ("ffv1", "mkv")])
def test_codecs_and_containers(tmp_path, codec, ext):
    pix = {"cinepak": "rgb24", "ffv1": "yuv444p"}.get(codec, "yuv420p")
    p = write_video(tmp_path / f"v.{ext}", smooth_frames(12, 48, 64), codec=codec, pix_fmt=pix)
    s = _load(p)
    assert s.arrays["pixels"].shape == (1, 3, 16, 224, 224) and s.arrays["pixels"].dtype == np.uint8
    assert s.meta["codec"] == codec.replace("libvpx-vp9", "vp9")
    assert s.arrays["pixels"].std() > 20


def test_raw_stream_without_duration_or_timestamps(tmp_path):
    p = tmp_path / "raw.h264"
    with av.open(str(p), "w", format="h264") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for f in smooth_frames(50, 48, 64):
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    s = _load(p)  # no header duration: packets are counted, then decoded from the top
    assert s.meta["duration_from"].startswith("packet") and s.meta["seeks"] == 0
    times = s.meta["frame_times_s"][0]
    assert len(set(times)) == 16 and times == sorted(times) and 1.8 < times[-1] < 2.0


def test_display_rotation_is_applied(tmp_path):
    frames = smooth_frames(6, 48, 80)
    rotated = tmp_path / "rot.mp4"
    with av.open(str(rotated), "w") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 80, 48, "yuv444p"
        st.options = {"qp": "0"}
        st.set_display_rotation(90)
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    upright = write_video(tmp_path / "up.mp4", [np.ascontiguousarray(np.rot90(f)) for f in frames],
                          pix_fmt="yuv444p", options={"qp": "0"})
    s = _load(rotated)
    assert s.meta["rotated_ccw_degrees"] == [90]
    diff = np.abs(s.arrays["pixels"].astype(float) - _load(upright).arrays["pixels"].astype(float)).mean()
    assert diff < 2, diff


def test_animated_webp_matches_gif(tmp_path):
    frames = smooth_frames(12, 48, 64)
    g = _load(write_gif(tmp_path / "a.gif", frames)).arrays["pixels"].astype(float)
    w = _load(write_webp(tmp_path / "a.webp", frames)).arrays["pixels"].astype(float)
    assert np.abs(g - w).mean() < 6  # GIF palette quantisation vs lossless WebP


# -- bad input ------------------------------------------------------------------------------------


def test_truncated_mp4_is_a_decode_error(tmp_path):
    p = write_video(tmp_path / "t.mp4", smooth_frames(30, 64, 64))
    data = p.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the moov atom (at the end) is lost
    assert sniff(cut).modality == "video"
    with pytest.raises(DecodeError, match="video"):
        _load(cut)


def test_faststart_mp4_truncated_mid_stream_is_a_decode_error(tmp_path):
    p = tmp_path / "fs.mp4"
    frames = smooth_frames(200, 32, 32)
    with av.open(str(p), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.options = {"g": "10"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    data = p.read_bytes()
    cut = tmp_path / "fs_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    with pytest.raises(DecodeError, match="truncated"):
        _load(cut)


def test_not_a_video_is_a_decode_error(tmp_path):
    p = tmp_path / "x.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    with pytest.raises(DecodeError):
        _load(p)
    q = tmp_path / "audio.mp4"
    with av.open(str(q), "w") as c:
        s = c.add_stream("aac", rate=16000)
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate = 16000
        for pkt in s.encode(fr):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(DecodeError, match="no video stream"):
        _load(q)


# -- tokenizer ------------------------------------------------------------------------------------


def _fake_front(spec, seed: int = 3):
    from mtx.weights import ClipFront

    g = torch.Generator().manual_seed(seed)
    d, p, n = spec.dim, spec.patch, spec.grid ** 2 + 1
    return ClipFront(torch.randn(d, 3, p, p, generator=g) * 0.05, torch.randn(d, generator=g),
                     torch.randn(n, d, generator=g) * 0.1, torch.rand(d, generator=g) + 0.5,
                     torch.randn(d, generator=g) * 0.1)


def test_inflated_tokenizer_reproduces_image_tokens_on_a_still_video():
    from mtx.modalities._base import ImagePatchTokenizer
    from mtx.weights import get_preset

    spec = get_preset("tiny")
    front = _fake_front(spec)
    mod = get_modality("video")
    cfg = mod.config(frames=4)
    vt = mod.tokenizer(spec, front, cfg)
    it = ImagePatchTokenizer(spec, front, 0)
    assert vt.init == "clip" and vt.seed is None
    torch.testing.assert_close(vt.proj.weight.sum(2), front.patch_weight)
    img = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    video = img[:, :, None].expand(-1, -1, 4, -1, -1).contiguous()
    with torch.no_grad():
        vt.time.zero_()  # without the temporal term a still video is the image, tubelet by tubelet
        v = vt({"pixels": video}).x
        i = it({"pixels": img}).x
    assert v.shape == (2, 1 + 2 * 196, 64)
    torch.testing.assert_close(v[:, 0], i[:, 0])
    for t in range(2):
        torch.testing.assert_close(v[:, 1 + t * 196:1 + (t + 1) * 196], i[:, 1:], atol=1e-5, rtol=1e-4)


def test_temporal_term_separates_time_steps_and_pool_is_mean():
    from mtx.weights import get_preset

    spec = get_preset("tiny")
    mod = get_modality("video")
    vt = mod.tokenizer(spec, None, mod.config())
    assert vt.init == "seeded" and vt.seed == mod.seed(spec, mod.config())
    still = torch.full((1, 3, 16, 224, 224), 128, dtype=torch.uint8)
    with torch.no_grad():
        x = vt({"pixels": still}).x
    assert not torch.allclose(x[:, 1:197], x[:, 197:393])
    assert mod.default_pool("clip") == "mean" and mod.default_pool("seeded") == "mean"
    again = mod.tokenizer(spec, None, mod.config())
    torch.testing.assert_close(again.proj.weight, vt.proj.weight)  # deterministic seeded init
