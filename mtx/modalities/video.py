"""video: MP4/MOV/MKV/WebM/AVI/... and animated GIF/WebP -> 1 + 8x196 = 1569 tubelet tokens (B/16).

Sampling: ``frames`` (16) time points uniformly spaced over the whole clip, each one the frame
on screen at that instant; ``clips`` > 1 splits the clip into K equal parts and samples each
part the same way (one encoder row per part, averaged). PyAV seeks to the keyframe before a
far-away target and decodes forward only from there, so a one-hour video costs about as much
as a short one and only the sampled frames are kept (memory does not grow with length).
Animated GIF/WebP go through Pillow (frame durations give the time axis).

Tokenizer: Conv3d(3, D, (2, p, p)) inflated from the image patch weights (each of the two time
slices gets weight / 2, so a still video gives the image's patch embeddings) + CLS + the
image's spatial positions repeated over time + a fixed sinusoidal temporal term + pre-LN.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtx.errors import DecodeError, MissingDependency, TokenizeError
from mtx.settings import setting

from . import _budget
from ._base import (
    CLAIM,
    REFINED,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    seeded,
    sinusoidal,
    sniffed_or_read,
)
from ._imaging import check_pixels
from ._media import probe_streams, real_video_streams, shared_container
from ._registry import register_modality
from .image import image_format, pixels

TUBELET = 2  # frames per tubelet (time stride of the Conv3d)
# Memory per pixel of the frame size (checked against the per-sample budget before decoding):
# FFmpeg keeps reference and pool frames plus one per frame thread (measured: a 4K H.264 with 3
# frame threads ~17 bytes/pixel), then rgb24, a Pillow image and the resize's intermediates.
FRAME_POOL = 8
FRAME_WORK = 12
ANIMATED_WORK = 32  # Pillow GIF/WebP: the canvas, the previous frame, RGBA compositing, RGB
SEEK_GAP_S = 3.0  # seek instead of decoding forward when the next target is further than this
_EPS = 1e-6
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}


# ---------------------------------------------------------------------------------------------
# Sniffing helpers
# ---------------------------------------------------------------------------------------------


def gif_frames(path: Path, stop_at: int = 2) -> int:
    """Count a GIF's image descriptors by walking its blocks (no LZW decoding), up to ``stop_at``."""
    n = 0
    with open(path, "rb") as f:
        hdr = f.read(13)
        if len(hdr) < 13:
            return 0
        if hdr[10] & 0x80:
            f.seek(3 * (2 << (hdr[10] & 7)), 1)
        while n < stop_at:
            b = f.read(1)
            if not b or b == b";":
                break
            if b == b"!":
                f.read(1)
                _skip_sub_blocks(f)
            elif b == b",":
                desc = f.read(9)
                if len(desc) < 9:
                    break
                n += 1
                if desc[8] & 0x80:
                    f.seek(3 * (2 << (desc[8] & 7)), 1)
                f.read(1)  # LZW minimum code size
                _skip_sub_blocks(f)
            else:
                break
    return n


def _skip_sub_blocks(f) -> None:
    while True:
        b = f.read(1)
        if not b or b[0] == 0:
            return
        f.seek(b[0], 1)


def webp_frames(path: Path, stop_at: int = 2) -> int:
    """Count ANMF chunks of an animated WebP by walking RIFF chunk headers (0 if not animated)."""
    n = 0
    with open(path, "rb") as f:
        f.seek(12)
        while n < stop_at:
            h = f.read(8)
            if len(h) < 8:
                break
            tag, size = h[:4], struct.unpack("<I", h[4:])[0]
            if tag == b"ANMF":
                n += 1
            f.seek(size + (size & 1), 1)
    return n


def annexb_kind(head: bytes) -> str | None:
    """'H.264' or 'H.265' for a raw Annex B elementary stream (start codes + NAL unit headers), else None.

    The stream must open with a start code and a parameter set, access-unit delimiter or SEI, and
    at least two more NAL units in the head must carry valid headers of the same codec.
    """
    if head.startswith(b"\x00\x00\x00\x01"):
        first = 4
    elif head.startswith(b"\x00\x00\x01"):
        first = 3
    else:
        return None
    if len(head) < first + 2:
        return None
    starts, i = [], first
    while len(starts) < 8:
        j = head.find(b"\x00\x00\x01", i)
        if j < 0 or j + 5 > len(head):
            break
        starts.append(j + 3)
        i = j + 3
    b0, b1 = head[first], head[first + 1]
    h264_ok = b0 & 0x80 == 0 and (b0 & 0x1F) in (6, 7, 9)  # SEI, SPS, AUD
    h265_ok = b0 & 0x81 == 0 and (b0 >> 1) in (32, 33, 34, 35, 39) and b1 & 0x07 != 0  # VPS/SPS/PPS/AUD/SEI
    if len(starts) >= 2:
        if h265_ok and all(head[k] & 0x81 == 0 and (head[k] >> 1) <= 47 and head[k + 1] & 7 for k in starts[:4]):
            return "H.265"
        if h264_ok and all(head[k] & 0x80 == 0 and 1 <= (head[k] & 0x1F) <= 20 for k in starts[:4]):
            return "H.264"
    return None


def container_kind(head: bytes, path: Path) -> tuple[str | None, int, str]:
    """(what the magic bytes say, strength, format id) for the video containers, else (None, 0, '').

    Containers that may hold sound only (MP4/M4A, Matroska/WebM, ASF, MPEG-TS/PS) are decided by
    their stream list (:func:`~mtx.modalities._media.probe_streams`: the header, nothing decoded):
    with a moving-picture stream they are video, with audio only they are audio's. A container
    FFmpeg cannot open stays a video claim when its magic bytes say video, so the loader explains.
    """
    demuxer = shared_container(head)
    if demuxer:
        streams = probe_streams(path, demuxer)
        if streams is not None and streams.audio and not streams.video:
            return None, 0, ""  # sound only (cover art is not a video): audio's
        what = _what_container(head, demuxer)
        if streams is None and (what is None or path.suffix.lower() in _AUDIO_EXTS):
            return None, 0, ""
        if streams is not None and streams.video:
            what = (what or demuxer) + f" with a video stream ({', '.join(streams.video)})"
        strength = REFINED if demuxer == "mpegts" else CLAIM
        return what, strength, _FORMAT_ID[demuxer]
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "RIFF AVI", CLAIM, "avi"
    if head[:3] == b"FLV" and len(head) > 4 and head[4] & 0x01:
        return "FLV with a video stream", CLAIM, "flv"
    if head[:4] == b"\x00\x00\x01\xb3":
        return "MPEG-1/2 video elementary stream", CLAIM, "mpeg-ps"
    if head[:4] == b"OggS" and b"\x80theora" in head:
        # Beats audio's Ogg claim: the Ogg holds a Theora video stream.
        return "Ogg with a Theora video stream", CLAIM + 1, "ogg-theora"
    codec = annexb_kind(head)
    if codec:
        return f"raw {codec} Annex B elementary stream", CLAIM, codec.lower().replace(".", "")
    return None, 0, ""


_AUDIO_EXTS = (".m4a", ".m4b", ".mka", ".weba", ".wma")
_FORMAT_ID = {"mov": "isobmff", "matroska": "matroska", "asf": "asf", "mpegts": "mpeg-ts", "mpeg": "mpeg-ps"}


def _what_container(head: bytes, demuxer: str) -> str | None:
    """The container as its magic bytes name it; None where they point to sound (audio brands)."""
    if demuxer == "mov":
        if head[4:8] == b"ftyp":
            brand = head[8:12]
            if brand in _AUDIO_BRANDS:
                return None
            return f"ISO media 'ftyp' (brand {brand.decode('latin-1').strip()!r})"
        return f"QuickTime '{head[4:8].decode()}' atom"
    if demuxer == "matroska":
        return "Matroska/WebM EBML header"
    if demuxer == "asf":
        return "ASF/WMV header"
    if demuxer == "mpegts":
        return "MPEG transport stream sync bytes"
    return "MPEG program stream"


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def sample_times(duration: float, frames: int, clips: int) -> list[list[float]]:
    """``clips`` lists of ``frames`` instants: centres of equal sub-intervals of each clip."""
    seg = duration / clips
    return [[k * seg + (i + 0.5) * seg / frames for i in range(frames)] for k in range(clips)]


def _rgb_of(img) -> np.ndarray:
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _load_animated(path: Path, fmt: str, cfg: "VideoConfig") -> tuple[np.ndarray, dict]:
    """Animated GIF/WebP through Pillow: one sequential pass, only sampled frames converted."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DecodeError(f"cannot open {fmt}: {e}") from None
    with img:
        check_pixels(*img.size)
        w, h = img.size
        _budget.check(w * h, f"pixels per {fmt} frame ({w}x{h}; Pillow composes each on a full canvas)",
                      ANIMATED_WORK)
        try:
            n = int(getattr(img, "n_frames", 1) or 1)
            starts, t = [], 0.0
            for i in range(n):
                img.seek(i)
                starts.append(t)
                d = img.info.get("duration") or 0
                t += (d if d > 0 else 100) / 1000.0  # browsers show 0-delay frames for 100 ms
            duration = t
            targets = sample_times(duration, cfg.frames, cfg.clips)
            wanted = sorted({int(np.searchsorted(starts, x + _EPS, side="right") - 1)
                             for clip in targets for x in clip})
            cache: dict[int, np.ndarray] = {}
            for i in wanted:
                img.seek(i)
                cache[i] = pixels(_rgb_of(img), cfg.size)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise DecodeError(f"corrupt or truncated {fmt} animation: {e}") from None
    idx = [[int(np.searchsorted(starts, x + _EPS, side="right") - 1) for x in clip] for clip in targets]
    arr = np.stack([np.stack([cache[i] for i in clip], axis=1) for clip in idx])
    meta = {"decoder": "pillow", "format": fmt, "frames_total": n, "duration_s": round(duration, 6),
            "size": list(img.size), "frame_indices": idx}
    return arr, meta


_RAW_DEMUXERS = {"h264": "h264", "h265": "hevc"}  # raw elementary streams: no container to probe


def _open_container(path: Path, demuxer: str | None = None):
    try:
        import av
    except ImportError:  # pragma: no cover - dependency
        raise MissingDependency("PyAV is needed for video; pip install av") from None
    try:
        try:
            return av.open(str(path), mode="r", format=demuxer, metadata_errors="ignore")
        except TypeError:  # PyAV >= 19 dropped the argument (and no longer raises on bad metadata)
            return av.open(str(path), mode="r", format=demuxer)
    except av.error.FFmpegError as e:
        problem = _isobmff_problem(path)
        raise DecodeError(f"cannot open video: {problem or e}") from None


def _stream_timing(container, stream) -> tuple[float, float, str, bool]:
    """(start s, duration s, where the duration came from, whether frames carry timestamps).

    The duration is the *video stream's*: its header, else its Matroska ``DURATION`` tag, else
    the container's when the video is its only stream. A container that also holds other streams
    (a soundtrack that outlasts the picture, subtitles) gives only an upper bound, so the video's
    last packets are found by seeking near the end and demuxing from there (no decoding).
    """
    import av

    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    if stream.duration and tb:
        return start, float(stream.duration * tb), "stream header", True
    tagged = _duration_tag(stream)
    if tagged:
        return start, tagged, "stream DURATION tag (header)", True
    if container.duration:
        if stream.start_time is None and container.start_time:
            start = container.start_time / av.time_base
        others = [s for s in container.streams if s.index != stream.index and s.type in ("audio", "video",
                                                                                       "subtitle", "data")]
        if not others:
            return start, container.duration / av.time_base, "container header", True
        end = _last_video_time(container, stream, container.duration / av.time_base)
        if end is not None and end > start:
            return start, end - start, ("the video's last packets (the container's duration covers "
                                        "its longest stream)"), True
        return start, container.duration / av.time_base, "container header", True
    # No duration anywhere (raw elementary streams, some AVI/MKV): demux the packets (no
    # decoding). The caller reopens the file afterwards: such inputs often cannot seek.
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    first, last, n = None, None, 0
    for pkt in container.demux(stream):
        if pkt.size == 0:
            continue
        n += 1
        if pkt.pts is not None and tb:
            t = float(pkt.pts * tb)
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
    if n == 0:
        raise DecodeError("video stream holds no packets (empty or truncated)")
    if last is None:
        return 0.0, n / fps, f"packet count ({n}) at {fps:g} fps", False
    return first or 0.0, last - (first or 0.0) + 1.0 / fps, "packet timestamps", True


def _duration_tag(stream) -> float | None:
    """Seconds in a stream's ``DURATION`` tag ('HH:MM:SS.fffffffff', as Matroska muxers write)."""
    text = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if not text:
        return None
    try:
        h, m, sec = text.strip().split(":")
        value = int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None
    return value if value > 0 else None


def _last_video_time(container, stream, bound: float) -> float | None:
    """End time (s) of the video stream's last packet, by seeking to its last keyframe before
    ``bound`` and demuxing forward from there; None when it cannot be found."""
    import av

    tb = stream.time_base
    if not tb:
        return None
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    try:
        container.seek(int(bound / float(tb)), stream=stream, backward=True, any_frame=False)
        end = None
        for pkt in container.demux(stream):
            if pkt.size == 0 or pkt.pts is None:
                continue
            t = float(pkt.pts * tb) + (float(pkt.duration * tb) if pkt.duration else 1.0 / fps)
            end = t if end is None else max(end, t)
    except av.error.FFmpegError:
        return None
    return end


def _isobmff_problem(path: Path) -> str | None:
    """What is structurally wrong with an MP4/MOV (top-level boxes only), or None."""
    boxes: list[bytes] = []
    cut = None  # the top-level box that runs past the end of the file
    try:
        total = path.stat().st_size
        with open(path, "rb") as f:
            pos = 0
            while pos + 8 <= total and len(boxes) < 64:
                f.seek(pos)
                hdr = f.read(16)
                size, kind = int.from_bytes(hdr[:4], "big"), hdr[4:8]
                if size == 1 and len(hdr) == 16:
                    size = int.from_bytes(hdr[8:16], "big")
                elif size == 0:
                    size = total - pos
                if size < 8 or not kind.isalnum():
                    break
                boxes.append(kind)
                if pos + size > total:
                    cut = kind.decode("latin-1")
                    break
                pos += size
    except OSError:
        return None
    if boxes[:1] != [b"ftyp"]:
        return None
    if cut:
        return (f"truncated MP4/MOV: its '{cut}' box runs past the end of the file"
                + ("" if b"moov" in boxes else " and there is no 'moov' index"))
    if b"moov" not in boxes:
        return "MP4/MOV without its 'moov' index (truncated, or the recording was never finalised)"
    return None


def _no_video_stream(path: Path, container) -> str:
    kinds = sorted({s.type for s in container.streams})
    have = f"only {', '.join(kinds)} streams" if kinds else "no streams"
    problem = _isobmff_problem(path)
    if problem:
        return f"{problem} ({have})"
    return f"file has no video stream ({have}; 0 frames?)"


def _load_av(path: Path, cfg: "VideoConfig", demuxer: str | None = None) -> tuple[np.ndarray, dict]:
    """Seek-and-decode sampling with PyAV; holds one decoded frame plus the sampled pixels."""
    import av

    container = _open_container(path, demuxer)
    try:
        streams = real_video_streams(container)
        if not streams:
            raise DecodeError(_no_video_stream(path, container))
        first = streams[0]
        index = first.index
        check_pixels(int(first.codec_context.width or 1), int(first.codec_context.height or 1))
        _fit_frames(first, first.codec_context)  # refuse oversized frames before any is read
        try:
            timing = _stream_timing(container, streams[0])
        except av.error.FFmpegError as e:
            raise DecodeError(f"cannot read the video's timing: {e}") from None
        if "header" not in timing[2]:  # packets were read: start again from the top
            container.close()
            container = _open_container(path, demuxer)
        return _sample_av(container, container.streams[index], timing, cfg)
    finally:
        container.close()


def _sample_av(container, stream, timing: tuple[float, float, str, bool], cfg: "VideoConfig"
               ) -> tuple[np.ndarray, dict]:
    """Decode the frames on screen at the sampled instants: seek when the next one is far ahead."""
    import av

    start, duration, dsrc, timed = timing
    scanned = dsrc.startswith("packet")  # a raw stream read to its end: it may not seek
    stream.thread_type = "AUTO"
    cc = stream.codec_context
    check_pixels(int(cc.width or 1), int(cc.height or 1))
    threads = _fit_frames(stream, cc)
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    if duration <= 0:
        raise DecodeError(f"video duration is {duration:.3f} s")
    targets = sample_times(duration, cfg.frames, cfg.clips)
    flat = sorted({x for clip in targets for x in clip})
    chosen: dict[float, np.ndarray] = {}
    shown: dict[float, float] = {}  # instant -> time of the frame used
    it, cur, nxt, pos = None, None, None, -1.0
    seeks, decoded, ended = 0, 0, False
    late = max(1.0, 2.0 / fps)
    last: list = [None, None]  # (frame, its pixels): one frame can be on screen at several instants

    rotations: set[int] = set()

    def convert(fr) -> np.ndarray:
        if last[0] is not fr:
            rgb = fr.to_ndarray(format="rgb24")
            k = round((fr.rotation or 0) / 90) % 4  # display matrix: counter-clockwise degrees
            if k:
                rgb = np.rot90(rgb, k)
                rotations.add(90 * k)
            last[:] = [fr, pixels(np.ascontiguousarray(rgb), cfg.size)]
        return last[1]

    try:
        for x in flat:
            if it is None or (x - max(pos, 0.0) > SEEK_GAP_S and not scanned):
                if x > SEEK_GAP_S and not scanned:  # to the keyframe before x, decode from there
                    ts = int((start + x) / float(stream.time_base)) if stream.time_base else 0
                    container.seek(ts, stream=stream, backward=True, any_frame=False)
                    seeks += 1
                it, cur, nxt, ended = container.decode(stream), None, None, False
            while not ended:  # decode up to the first frame after x
                if nxt is None:
                    nxt = next(it, None)
                    if nxt is None:
                        ended = True
                        break
                    decoded += 1
                # Without timestamps (raw streams, never seeked) the frame count is the clock.
                ft = nxt.time - start if timed and nxt.time is not None else (decoded - 1) / fps
                if ft > x + _EPS:
                    break
                cur, nxt, pos = nxt, None, ft
            frame = cur if cur is not None else nxt  # on screen at x (or the first one after)
            if frame is None or (ended and x - pos > late):
                end_s = f"{pos:.2f} s" if pos >= 0 else "its start"
                raise DecodeError(f"video stream ends at {end_s} but its header says {duration:.2f} s "
                                  "(truncated file?)")
            chosen[x] = convert(frame)
            shown[x] = round(pos if frame is cur else ft, 6)
    except av.error.FFmpegError as e:
        raise DecodeError(f"corrupt video stream after {len(chosen)} sampled frames: {e}") from None
    arr = np.stack([np.stack([chosen[x] for x in clip], axis=1) for clip in targets])
    meta = {
        "decoder": "pyav", "container": container.format.name, "codec": cc.name,
        "size": [int(cc.width), int(cc.height)], "pix_fmt": cc.format.name if cc.format else None,
        "fps": float(stream.average_rate) if stream.average_rate else None,
        "frames_in_header": int(stream.frames or 0), "duration_s": round(duration, 6),
        "duration_from": dsrc, "seeks": seeks, "frames_decoded": decoded,
        "frame_times_s": [[shown[x] for x in clip] for clip in targets],
    }
    if rotations:
        meta["rotated_ccw_degrees"] = sorted(rotations)
    if threads:
        meta["decoder_threads"] = threads
    return arr, meta


def _pixel_bytes(cc) -> float:
    """Bytes per pixel of the decoder's frames (yuv420p 1.5, 10-bit 4:4:4 6...); 3 if unknown."""
    fmt = cc.format
    if fmt is None or not fmt.components or not fmt.width:
        return 3.0
    area = fmt.width * fmt.height
    return sum(-(-c.bits // 8) * c.width * c.height for c in fmt.components) / area


def _fit_frames(stream, cc) -> str:
    """Fit the frame size to the per-sample budget before decoding: with too many frame threads'
    buffers, decode with one thread (recorded); still too large: OverBudget."""
    import os

    w, h = int(cc.width or 1), int(cc.height or 1)
    pix = _pixel_bytes(cc)
    auto = min(16, (os.cpu_count() or 1) + 1)  # FFmpeg's automatic frame threads
    if _budget.fits(w * h, pix * (FRAME_POOL + auto) + FRAME_WORK):
        return ""
    stream.thread_type = "SLICE"
    cc.thread_count = 1
    _budget.check(w * h, f"pixels per video frame ({w}x{h} {cc.format.name if cc.format else ''}; the decoder "
                  f"holds ~{FRAME_POOL} frames)", pix * (FRAME_POOL + 1) + FRAME_WORK)
    return f"1 (frames of {w}x{h} with {auto} frame threads are over the per-sample memory budget)"


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


class VideoTubeletTokenizer(Tokenizer):
    """Conv3d tubelets (2 x p x p) + CLS + spatial positions x time + sinusoidal time + pre-LN.

    ``pixels``: [R, 3, F, S, S] uint8 (or float in [0, 1]) -> Tokens [R, 1 + F/2 * (S/p)^2, D].
    The temporal term is a fixed sinusoid of the tubelet index scaled to the RMS of the spatial
    position table, so it marks time without drowning the (CLIP) positions.
    """

    def __init__(self, spec, front, seed: int, frames: int):
        super().__init__()
        d, p, g = spec.dim, spec.patch, spec.grid
        self.grid, self.steps = g, frames // TUBELET
        with seeded(seed):
            self.proj = nn.Conv3d(3, d, (TUBELET, p, p), stride=(TUBELET, p, p), bias=False)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.pos = nn.Parameter(torch.randn(1 + g * g, d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1, 1), persistent=False)
        if front is not None:
            self._inflate(front)
            self.init, self.seed = "clip", None
        else:
            self.init, self.seed = "seeded", seed
        self.register_buffer("time", sinusoidal(torch.arange(self.steps), d), persistent=False)

    def _inflate(self, front) -> None:
        from mtx.errors import WeightsError

        w = front.patch_weight
        want = self.proj.weight.shape
        if tuple(w.shape) != (want[0], want[1], want[3], want[4]) or tuple(front.pos.shape) != tuple(self.pos.shape):
            raise WeightsError(f"CLIP patch weights {tuple(w.shape)} / positions {tuple(front.pos.shape)} do not "
                               f"fit the video tokenizer {tuple(want)}; pass weights that match --model")
        with torch.no_grad():
            self.proj.weight.copy_(w[:, :, None].expand(-1, -1, TUBELET, -1, -1) / TUBELET)
            self.cls.copy_(front.cls)
            self.pos.copy_(front.pos)
            self.norm_pre.weight.copy_(front.ln_pre_weight)
            self.norm_pre.bias.copy_(front.ln_pre_bias)

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        px = inputs["pixels"]
        x = px.float() / 255.0 if px.dtype == torch.uint8 else px.float()
        x = self.proj((x - self.mean) / self.std)  # [R, D, T', g, g]
        r, d, t = x.shape[:3]
        if t != self.steps:
            raise TokenizeError(f"video tokenizer built for {self.steps * TUBELET} frames got {t * TUBELET}")
        x = x.flatten(3).permute(0, 2, 3, 1)  # [R, T', g*g, D]
        pos = self.pos[1:]
        if x.shape[2] != pos.shape[0]:
            raise TokenizeError(f"video frames give {x.shape[2]} patches per frame, the positions {pos.shape[0]}; "
                             "use size = the encoder's image size")
        # Scaled at run time so that it follows the position table of loaded (clip/file) weights.
        time = self.time * pos.detach().pow(2).mean().sqrt()
        x = x + pos[None, None] + time[None, :, None]
        x = x.reshape(r, t * pos.shape[0], d)
        cls = (self.cls + self.pos[0]).expand(r, 1, d)
        return Tokens(self.norm_pre(torch.cat([cls, x], dim=1)), None, True)


# ---------------------------------------------------------------------------------------------


@dataclass
class VideoConfig(ModalityConfig):
    frames: int = setting(16, lo=TUBELET, multiple_of=TUBELET, flag="--frames")  # sampled frames per clip (even: tubelets span 2 frames) (--frames)
    clips: int = setting(1, lo=1, flag="--clips")  # K clips over the video, one encoder row each, averaged (--clips)
    size: int = setting(224, lo=16, hi=4096)  # resize short side, centre-crop to size x size


@register_modality
class video(Modality):  # noqa: N801 - class name == registry key == module name
    """A video becomes **1569 tokens** at B/16: a CLS token + 8 time steps × 196 spatial patches of
    2-frame tubelets, from 16 frames spread over the whole clip.

    ## Which files

    MP4/MOV/M4V (`ftyp`), MKV/WebM (EBML), AVI (RIFF AVI), MPEG-PS/TS, FLV, ASF/WMV, Ogg Theora
    (beats audio's Ogg claim when the stream is video), raw H.264/H.265 Annex B elementary streams
    (`.h264`, `.264`, `.h265`: start codes and valid NAL unit headers) and more — anything FFmpeg
    decodes, through PyAV. MP4, Matroska/WebM, ASF and MPEG-TS/PS may hold sound only: their stream
    list (the container header, nothing decoded) decides — with a moving-picture stream the file is
    a video, with audio streams only (cover art is not a video) it is [audio](audio.md)'s. Animated GIF and WebP count as video when they have **more than one frame** (frames are
    counted by walking the container's blocks, without decoding); a single-frame GIF stays an
    [image](image.md).

    ## From file to frames

    - **Sampling**: 16 time points uniformly spaced over the *whole* clip — the centres of 16 equal
      intervals — and, at each, the frame on screen at that instant. Uniform coverage of the whole
      clip (rather than the first seconds) is what video-level embeddings need; the first and last
      frames (often black or a title card) are avoided by taking interval centres.
    - **Duration** is the video stream's own: its header, its Matroska `DURATION` tag, or — when the
      container's duration also covers a longer soundtrack — the end of its last packet (found by
      seeking near the end and demuxing from there), so a soundtrack that outlasts the picture
      neither stretches the sampling nor looks like a truncated file.
    - **Seek and decode**: PyAV seeks to the keyframe before a far-away target and decodes forward
      from there, keeping only the sampled frames, so a one-hour video costs about as much as a
      short one and memory does not grow with length. Files without a usable duration are demuxed
      once (no decoding) to count packets; without timestamps the frame count is the clock.
    - `--clips K` splits the clip into K equal parts sampled the same way: one encoder row per part,
      averaged into one vector (more temporal coverage for long videos).
    - Each frame: short side 224 (bicubic), centre crop, the preset's normalisation — the image
      path, so a still video looks like its image.

    ## Tokens

    `VideoTubeletTokenizer`: Conv3d(3, D, (2, 16, 16), stride (2, 16, 16)) — each tubelet spans two
    frames — + CLS + the image's spatial position table repeated over the 8 time steps + a fixed
    sinusoidal temporal term + pre-LayerNorm. The temporal term is scaled to the RMS of the spatial
    position table, so it marks time without drowning the (CLIP) positions.

    ## Weights and pooling

    With a CLIP front end the 3-D kernel is **inflated** from the image patch kernel: each of the two
    time slices gets weight / 2, so a video of a still picture gives exactly that picture's patch
    embeddings (`init=clip`); otherwise seeded. Pooling is the **mean** of the tokens after the final
    LayerNorm in both cases: CLIP's CLS was trained to summarise one image, not 1568 tubelets.

    ## Try it

    ```
    mtx tokenize clip.mp4 -O video.frames=32
    ```
    """

    name = "video"
    extensions = (".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg",
                  ".m2ts", ".mts", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".gif", ".webp", ".h264", ".264",
                  ".avc", ".h265", ".265", ".hevc")
    summary = "MP4/MOV/MKV/WebM/AVI/... (any FFmpeg codec) and animated GIF/WebP"
    tokens = "1569 = 1 + 8x196 (16 frames, 2x16x16 tubelets)"
    clip_init = True
    Config = VideoConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        fmt = image_format(head)
        if fmt == "GIF":
            return Evidence(self.name, REFINED, "animated GIF (more than one frame)", "gif") \
                if gif_frames(path) > 1 else None
        if fmt == "WebP":
            animated = len(head) > 20 and head[12:16] == b"VP8X" and head[20] & 0x02
            return Evidence(self.name, REFINED, "animated WebP (more than one frame)", "webp") \
                if animated and webp_frames(path) > 1 else None
        if fmt is not None:
            return None
        reason, strength, fid = container_kind(head, path)
        if reason:
            return Evidence(self.name, strength, reason, fid)
        if path.suffix.lower() in (".gif", ".webp"):
            return None
        return super().sniff(head, path)

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, seconds: float = 2.0, fps: int = 8, size: int = 96) -> list[Path]:
        """``n`` MPEG-4 clips (``seconds`` at ``fps``, ``size`` px square, a scrolling texture)."""
        import av

        rng, out = np.random.default_rng(3), []
        for i in range(n):
            p = d / f"clip{i:05d}.mp4"
            with av.open(str(p), "w") as c:
                s = c.add_stream("mpeg4", rate=fps)
                s.width = s.height = size
                s.pix_fmt = "yuv420p"
                base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                for t in range(int(seconds * fps)):
                    frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * t, axis=1), format="rgb24")
                    for pkt in s.encode(frame):
                        c.mux(pkt)
                for pkt in s.encode():
                    c.mux(pkt)
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """An MP4 with a video stream and no frame."""
        import av

        p = d / "empty.mp4"
        with av.open(str(p), "w", format="mp4") as c:
            s = c.add_stream("mpeg4", rate=8)
            s.width = s.height = 32
            s.pix_fmt = "yuv420p"
            c.start_encoding()
            for pkt in s.encode():
                c.mux(pkt)
        return [p]

    def load(self, path: Path, cfg: VideoConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        known = sniffed_or_read(path, sniffed)
        # Animated GIF/WebP go through Pillow, every other container through FFmpeg.
        fmt = {"gif": "GIF", "webp": "WebP"}.get(known.format) if known.format else image_format(known.head)
        if fmt in ("GIF", "WebP"):
            arr, meta = _load_animated(path, fmt, cfg)
        else:
            arr, meta = _load_av(path, cfg, _RAW_DEMUXERS.get(known.format))
        meta.update(frames=cfg.frames, clips=cfg.clips,
                    sampling="uniform: centres of equal sub-intervals of each clip",
                    preprocess=f"short side {cfg.size} bicubic, centre crop {cfg.size}")
        yield Sample("", {"pixels": arr}, meta)

    def cost(self, sample: Sample, spec, cfg) -> int:
        _, _, f, h, w = sample.arrays["pixels"].shape
        return 1 + (f // TUBELET) * (h // spec.patch) * (w // spec.patch)

    def default_pool(self, init: str) -> str:
        return "mean"

    def tokenizer(self, spec, front, cfg: VideoConfig):
        return VideoTubeletTokenizer(spec, front, self.seed(spec, cfg), cfg.frames)
