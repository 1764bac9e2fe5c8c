"""FFmpeg (PyAV) helpers shared by audio and video: which streams a container holds, and audio
decoding for the formats libsndfile does not read.

Containers that hold either sound or pictures (MP4/M4A/MOV, Matroska/WebM/MKA, ASF/WMA/WMV,
MPEG-TS/PS) cannot be told apart by their magic bytes. :func:`probe_streams` opens such a
file with the demuxer its magic bytes name and lists its streams from the container header: no
packet is decoded beyond what FFmpeg's stream-info probe reads (bounded by ``probesize`` and
``analyzeduration`` below), so sniffing stays cheap. Cover art (a video stream flagged as an
*attached picture*) is not a video. The answer is cached per (path, size, mtime), because both
audio and video ask about the same file in one sniffing pass.

:class:`AvAudioFile` reads any audio stream FFmpeg decodes (AAC, ALAC, Opus/Vorbis in WebM or
Matroska, WMA, AC-3/E-AC-3, AMR, MP2...) through the small part of ``soundfile.SoundFile``'s
interface that the audio loader uses, so the loader's streaming, mixing, resampling and
filterbank stay one code path.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DecodeError, MissingDependency

# Demuxer options for probing: at most 1 MB read and 1 s of stream time analysed.
PROBE_OPTIONS = {"probesize": "1000000", "analyzeduration": "1000000"}
_CACHE: OrderedDict[tuple, "Streams | None"] = OrderedDict()
_CACHE_MAX = 64


@dataclass(frozen=True)
class Streams:
    """What a container holds, from its header."""

    container: str  # FFmpeg's demuxer name
    video: tuple[str, ...]  # codec names of the real video streams (cover art excluded)
    audio: tuple[str, ...]  # codec names of the audio streams
    pictures: int = 0  # attached pictures (cover art)


_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif",
                 b"avis", b"crx ", b"jp2 ", b"jpx "}
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


def shared_container(head: bytes) -> str | None:
    """The FFmpeg demuxer of a container that may hold sound only or pictures too, named by its
    magic bytes (ISO media / QuickTime, Matroska/WebM, ASF, MPEG-TS/PS), else None."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mov"
    if len(head) >= 8 and head[4:8] in _QT_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:16] == ASF_GUID:
        return "asf"
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "mpegts"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg"
    return None


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - dependency
        raise MissingDependency("PyAV is needed for this audio/video format; pip install av") from None
    return av


def is_picture(stream) -> bool:
    """True for a video stream that is a still attached picture (cover art, a thumbnail)."""
    disp = getattr(stream, "disposition", 0)
    try:
        return bool(int(disp) & 0x400)  # AV_DISPOSITION_ATTACHED_PIC
    except (TypeError, ValueError):  # pragma: no cover - older PyAV
        return False


def real_video_streams(container) -> list:
    """The container's video streams that are moving pictures (cover art left out)."""
    return [s for s in container.streams.video if not is_picture(s)]


def probe_streams(path: Path, demuxer: str | None = None) -> Streams | None:
    """The streams of ``path`` (opened with ``demuxer``, e.g. 'mov', 'matroska', 'asf'), or None
    when FFmpeg cannot open it (a truncated or corrupt file: the loader then says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns, demuxer)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    av = _av()
    result = None
    try:
        with av.open(str(path), "r", format=demuxer, options=dict(PROBE_OPTIONS)) as c:
            video = tuple(s.codec_context.name or "?" for s in real_video_streams(c))
            audio = tuple(s.codec_context.name or "?" for s in c.streams.audio)
            pictures = sum(1 for s in c.streams.video if is_picture(s))
            result = Streams(c.format.name, video, audio, pictures)
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError):
        result = None
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
    return result


# ----------------------------------------------------------------------------------------------
# Audio through FFmpeg
# ----------------------------------------------------------------------------------------------

_PRETTY = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/M4A", "matroska,webm": "Matroska/WebM", "asf": "ASF/WMA",
           "aac": "AAC (ADTS)", "ac3": "AC-3", "eac3": "E-AC-3", "amr": "AMR", "mpegts": "MPEG-TS",
           "mpeg": "MPEG-PS", "ogg": "Ogg", "wav": "WAV", "caf": "CAF"}


# The demuxers an audio file may be read with: no playlist, concat or network demuxer (an HLS
# playlist handed over as audio would make FFmpeg open the files and URLs it lists).
AUDIO_DEMUXERS = ("mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,asf,aac,ac3,eac3,amr,amrnb,amrwb,mpegts,mpeg,caf,"
                  "wav,w64,flac,ogg,mp3,aiff,au,wv,ape,tak,dts,truehd,mlp,xwma,rm,voc,dsf,mpc,mpc8,loas,"
                  "oma,tta,shn,alac,mp2")


class AvAudioFile:
    """The first audio stream of a file, decoded by FFmpeg, read like a ``soundfile.SoundFile``.

    Attributes: ``samplerate``, ``channels``, ``frames`` (from the header: an estimate for
    formats without an index, such as ADTS), ``format`` (the container), ``subtype`` (the codec).
    ``read(n)`` returns up to ``n`` frames as float32 [n, channels]; memory holds at most one
    decoded frame beyond the requested block.
    """

    def __init__(self, path: Path, demuxer: str | None = None):
        av = _av()
        opts = {"format_whitelist": AUDIO_DEMUXERS}
        try:
            try:
                self._c = av.open(str(path), "r", format=demuxer, options=opts, metadata_errors="ignore")
            except TypeError:  # PyAV >= 19 dropped the argument
                self._c = av.open(str(path), "r", format=demuxer, options=opts)
        except (av.error.FFmpegError, ValueError) as e:
            raise DecodeError(f"cannot decode audio: FFmpeg cannot open it ({_why(e)})") from None
        try:
            streams = list(self._c.streams.audio)
            if not streams:
                kinds = sorted({s.type for s in self._c.streams}) or ["no"]
                raise DecodeError(f"no audio stream (the file holds {', '.join(kinds)} streams)")
            self._stream = s = streams[0]
            cc = s.codec_context
            self.samplerate = int(cc.sample_rate or 0)
            self.channels = int(getattr(cc, "channels", 0) or (cc.layout.nb_channels if cc.layout else 0))
            if self.samplerate <= 0 or self.channels <= 0:
                raise DecodeError(f"the {cc.name} stream declares {self.samplerate} Hz and "
                                  f"{self.channels} channels: a corrupt header")
            self.format = _PRETTY.get(self._c.format.name, self._c.format.name)
            self.subtype = cc.name
            self.frames = self._estimate_frames(s, path)
            self.streams = len(streams)
        except BaseException:
            self._c.close()
            raise
        s.thread_type = "AUTO"
        self._frames = self._c.decode(s)
        self._resampler = av.AudioResampler(format="fltp", layout=self._layout(s), rate=self.samplerate)
        self._buf: list[np.ndarray] = []
        self._have = 0
        self._eof = False
        self.decoded = 0
        self.decoder = "ffmpeg (PyAV)"

    @staticmethod
    def _layout(s) -> str | None:
        layout = s.codec_context.layout
        return layout.name if layout is not None and layout.nb_channels else None

    def _estimate_frames(self, s, path: Path) -> int:
        """Frames from the stream or container duration, else from the file size and bit rate
        (the long-file segment selection needs an estimate)."""
        if s.duration and s.time_base:
            return int(round(float(s.duration * s.time_base) * self.samplerate))
        if self._c.duration:
            return int(round(self._c.duration / 1_000_000 * self.samplerate))
        rate = s.codec_context.bit_rate or self._c.bit_rate
        if rate:
            try:
                return int(os.path.getsize(path) * 8 / rate * self.samplerate)
            except OSError:
                return 0
        return 0

    def _pull(self) -> bool:
        """Decode the next frame into the buffer; False at the end of the stream."""
        av = _av()
        try:
            fr = next(self._frames, None)
            outs = self._resampler.resample(fr)
        except av.error.FFmpegError as e:
            raise DecodeError(f"audio data is corrupt after {self.decoded} frames: {_why(e)}") from None
        except ValueError as e:  # a stream whose layout or rate changes mid-way
            raise DecodeError(f"audio stream changes format after {self.decoded} frames: {e}") from None
        for out in outs:
            a = out.to_ndarray()  # [channels, n] float32 (planar)
            if a.shape[0] != self.channels:  # pragma: no cover - the resampler fixes the layout
                a = np.resize(a, (self.channels, a.shape[1]))
            self._buf.append(a)
            self._have += a.shape[1]
        if fr is None:
            self._eof = True
        return not self._eof

    def read(self, n: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        while self._have < n and not self._eof:
            self._pull()
        if not self._buf:
            return np.zeros((0, self.channels), np.float32)
        a = np.concatenate(self._buf, axis=1) if len(self._buf) > 1 else self._buf[0]
        out, rest = a[:, :n], a[:, n:]
        self._buf = [rest] if rest.shape[1] else []
        self._have = rest.shape[1]
        self.decoded += out.shape[1]
        return np.ascontiguousarray(out.T, dtype=np.float32)

    def close(self) -> None:
        self._c.close()

    def __enter__(self) -> AvAudioFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _why(e: BaseException) -> str:
    return " ".join(str(getattr(e, "strerror", None) or e).split())[:160]
