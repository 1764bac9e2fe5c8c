"""audio: what libsndfile or FFmpeg reads -> Kaldi log-mel fbank -> AST patch tokens (1213 per 10.24 s).

Pipeline (MODALITIES.md "audio"): decode with soundfile (FFmpeg through PyAV for the formats
libsndfile does not read: AAC/ALAC in M4A/MP4, MKA/WebM, WMA, AC-3, AMR) in blocks, mix to mono, resample to
16 kHz with soxr's streaming band-limited resampler, cut the 16 kHz stream into segments of
1024 fbank frames (10.24 s), compute a Kaldi-compatible log-mel filterbank per segment in torch,
normalise with the AudioSet statistics used by AST. The whole file is never held in memory:
at most two segments of 16 kHz samples plus the fbank of the segments kept.

Segments: a file longer than one segment gives segments at 0, 10.24, 20.48 s, ... and a last
one that *ends at the end of the file* (it overlaps its neighbour), so every segment is full and
nothing is dropped or padded. A clip shorter than one segment stays at its own length T (>= 16
frames; a shorter clip is padded with zeros in the normalised domain, which the bias-free patch
projection ignores) and its tokens are ``1 + 12 * floor((T - 16) / 10 + 1)``. Files with more than
``max_segments`` segments are covered by ``max_segments`` segments spaced uniformly over the
whole file (recorded in meta), which bounds memory and compute; ``per_window=True`` instead
yields every segment as its own sample ``#t=START`` (streamed, memory bounded).
"""
from __future__ import annotations

import math
import struct
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DecodeError, MissingDependency
from ..settings import setting
from . import _budget
from ._base import (
    CLAIM,
    EXTENSION,
    HINT,
    Evidence,
    Modality,
    ModalityConfig,
    Sample,
    Sniffed,
    Tokenizer,
    Tokens,
    pinned,
    resize_pos_grid,
    seeded,
    sniffed_or_read,
)
from ._media import probe_streams, shared_container
from ._registry import register_modality

RATE = 16000
WIN = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
N_FFT = 512  # window rounded up to a power of two (Kaldi round_to_power_of_two)
N_MELS = 128
PATCH, PATCH_STRIDE = 16, 10
AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AudioSet statistics (AST)
EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor: std::numeric_limits<float>::epsilon()


# ----------------------------------------------------------------------------------------------
# Kaldi-compatible log-mel filterbank (torch)
# ----------------------------------------------------------------------------------------------


def _mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(f / 700.0)


def mel_banks(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE,
              low_freq: float = 20.0, high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi's triangular HTK-mel filters: [n_mels, n_fft // 2] (float64; the Nyquist bin is unused)."""
    nyquist = rate / 2
    high = high_freq if high_freq > 0 else nyquist + high_freq
    mel_low, mel_high = _mel(torch.tensor(low_freq, dtype=torch.float64)), _mel(
        torch.tensor(high, dtype=torch.float64))
    delta = (mel_high - mel_low) / (n_mels + 1)
    b = torch.arange(n_mels, dtype=torch.float64)[:, None]
    left = mel_low + b * delta
    center, right = left + delta, left + 2 * delta
    m = _mel(torch.arange(n_fft // 2, dtype=torch.float64) * (rate / n_fft))[None]
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0)


_BANKS: dict[tuple[int, float], torch.Tensor] = {}
_WINDOW = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(WIN, dtype=torch.float64) / (WIN - 1))


def kaldi_fbank(wave: np.ndarray | torch.Tensor, n_mels: int = N_MELS, low_freq: float = 20.0
                ) -> torch.Tensor:
    """Kaldi ``compute-fbank-feats`` for 16 kHz float audio: [frames, n_mels] float32 log-mel energies.

    Options (as AST's ``torchaudio.compliance.kaldi.fbank`` call): 25 ms Hanning window, 10 ms
    shift, snip_edges, per-frame DC removal, pre-emphasis 0.97, power spectrum of a 512-point FFT,
    HTK-mel bins from ``low_freq`` to Nyquist, dither 0, energy off, log floored at float epsilon.
    Computed in float64. Fewer than 400 samples give zero frames.

    With 128 bins from 20 Hz, filter 3 covers no FFT bin. Kaldi itself refuses that setting
    ("num_mel_bins too large"); like torchaudio (and so AST's training features) we keep the
    empty filter, whose output is the log floor, log(eps).
    """
    banks = _BANKS.get((n_mels, low_freq))
    if banks is None:
        banks = _BANKS[(n_mels, low_freq)] = mel_banks(n_mels, low_freq=low_freq)
    x = torch.as_tensor(np.asarray(wave), dtype=torch.float64).reshape(-1)
    if x.numel() < WIN:
        return torch.zeros(0, n_mels)
    frames = x.unfold(0, WIN, HOP)  # [F, 400], snip_edges=True
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - 0.97 * prev) * _WINDOW
    power = torch.fft.rfft(frames, n=N_FFT).abs().square()[:, : N_FFT // 2]
    return torch.log(torch.clamp(power @ banks.T, min=EPS)).float()


def n_frames(n_samples: int) -> int:
    return 0 if n_samples < WIN else 1 + (n_samples - WIN) // HOP


def n_tokens(frames: int) -> int:
    """Tokens of one segment of ``frames`` fbank frames (CLS included)."""
    return 1 + ((N_MELS - PATCH) // PATCH_STRIDE + 1) * ((max(frames, PATCH) - PATCH) // PATCH_STRIDE + 1)


# ----------------------------------------------------------------------------------------------
# Sniffing
# ----------------------------------------------------------------------------------------------

_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
# Bitrate tables keyed by the header's layer bits (3 = Layer I, 2 = Layer II, 1 = Layer III).
_MPEG1_KBPS = {3: (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
               2: (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
               1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)}
_MPEG2_KBPS = {3: (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
               2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
               1: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}


def _mpeg_frame_len(h: bytes) -> int | None:
    """Length of the MPEG audio frame whose 4-byte header is ``h``, or None if not a header."""
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version, layer = (h[1] >> 3) & 3, (h[1] >> 1) & 3  # layer bits: 3 = I, 2 = II, 1 = III
    br_i, sr_i, padding = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer == 0 or br_i in (0, 15) or sr_i == 3:
        return None  # reserved values (layer 0 is AAC ADTS, not ours)
    rate = _MPEG_RATES[version][sr_i]
    kbps = (_MPEG1_KBPS if version == 3 else _MPEG2_KBPS)[layer][br_i] * 1000
    if layer == 3:
        return (12 * kbps // rate + padding) * 4
    per = 144 if (layer == 2 or version == 3) else 72
    return per * kbps // rate + padding


def _adts_frame_len(h: bytes) -> int | None:
    """Length of the AAC ADTS frame whose header starts ``h``, or None if not an ADTS header."""
    if len(h) < 7 or h[0] != 0xFF or (h[1] & 0xF6) != 0xF0 or (h[2] >> 2) & 0xF > 12:
        return None
    n = ((h[3] & 3) << 11) | (h[4] << 3) | (h[5] >> 5)
    return n if n >= 7 else None


# AC-3 frame sizes in 16-bit words by frmsizecod, for 48, 44.1 and 32 kHz (ATSC A/52 table 5.18).
_AC3_48 = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1152, 1280)
_AC3_WORDS = {0: [w for w in _AC3_48 for _ in (0, 1)],
              1: [69, 70, 87, 88, 104, 105, 121, 122, 139, 140, 174, 175, 208, 209, 243, 244, 278, 279,
                  348, 349, 417, 418, 487, 488, 557, 558, 696, 697, 835, 836, 975, 976, 1114, 1115,
                  1253, 1254, 1393, 1394],
              2: [w * 3 // 2 for w in _AC3_48 for _ in (0, 1)]}


def _ac3_frame_len(h: bytes) -> tuple[str, int] | None:
    """('AC-3' | 'E-AC-3', frame length in bytes) for a sync frame starting ``h``, or None."""
    if len(h) < 6 or h[:2] != b"\x0b\x77":
        return None
    bsid = h[5] >> 3
    if bsid <= 10:
        fscod, code = h[4] >> 6, h[4] & 0x3F
        if fscod == 3 or code >= 38:
            return None
        return "AC-3", 2 * _AC3_WORDS[fscod][code]
    if bsid <= 16:
        return "E-AC-3", 2 * ((((h[2] & 7) << 8) | h[3]) + 1)
    return None


def _id3_end(head: bytes) -> int:
    """Where the audio after a leading ID3v2 tag starts (0 without a tag)."""
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _frames_follow(head: bytes, at: int, frame_len) -> bool:
    """Two consecutive frames (by ``frame_len``) at ``at`` of ``head``; one when the head ends first."""
    n = frame_len(head[at:at + 8])
    if not n:
        return False
    n = n[1] if isinstance(n, tuple) else n
    if len(head) < at + n + 8:
        return len(head) >= at + 8  # the second header lies past the head: one frame must do
    return bool(frame_len(head[at + n:at + n + 8]))


def audio_format(head: bytes) -> str | None:
    """The audio container named by exclusive magic bytes, or None (RIFF AVI and Ogg Theora too)."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"riff" and head[24:28] == b"wave":  # Sony Wave64 GUIDs
        return "W64"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] == b"caff":
        return "CAF"
    if head[:4] == b".snd":
        return "AU"
    if head[:4] == b"OggS":
        if b"\x80theora" in head or b"\x01video" in head:
            return None  # Ogg with a video stream belongs to video
        for ident, name in ((b"\x01vorbis", "Ogg Vorbis"), (b"OpusHead", "Ogg Opus"),
                            (b"\x7fFLAC", "Ogg FLAC"), (b"Speex   ", "Ogg Speex")):
            if ident in head:
                return name
        return None
    if head.startswith(b"#!AMR\n"):
        return "AMR"
    if head.startswith(b"#!AMR-WB\n"):
        return "AMR-WB"
    if head[:3] == b"ID3":
        end = _id3_end(head)
        if end + 7 <= len(head) and _frames_follow(head, end, _adts_frame_len):
            return "AAC ADTS (ID3)"
        return "MP3 (ID3)"
    if _frames_follow(head, 0, _adts_frame_len):
        return "AAC ADTS"
    if _frames_follow(head, 0, _ac3_frame_len):
        return _ac3_frame_len(head[:8])[0]
    n = _mpeg_frame_len(head[:4])
    if n and len(head) >= n + 4 and _mpeg_frame_len(head[n:n + 4]):
        # Two consecutive valid MPEG frame headers. One alone is not evidence: a UTF-16 LE byte
        # order mark (FF FE) also parses as a frame header.
        return "MP3"
    return None


def format_id(name: str) -> str:
    """``Evidence.format`` for an :func:`audio_format` name: 'Ogg Vorbis' -> 'ogg-vorbis'."""
    return name.split(" (")[0].lower().replace(" ", "-")


def _wav_declared_frames(head: bytes) -> int | None:
    """Frames a RIFF/WAVE header declares (data chunk size / block align), from the head bytes."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, align = 12, None
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt " and pos + 22 <= len(head):
            align = struct.unpack_from("<H", head, pos + 20)[0]
            fmt_tag = struct.unpack_from("<H", head, pos + 8)[0]
            if fmt_tag not in (1, 3, 0xFFFE):  # compressed (ADPCM...): frames != bytes / align
                return None
        if cid == b"data":
            return size // align if align else None
        pos += 8 + size + (size & 1)
    return None


def _wav_fmt(head: bytes) -> tuple[int, int] | None:
    """(channels, sample rate) a RIFF/WAVE ``fmt `` chunk declares, from the head bytes."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt " and pos + 16 <= len(head):
            return struct.unpack_from("<H", head, pos + 10)[0], struct.unpack_from("<I", head, pos + 12)[0]
        pos += 8 + size + (size & 1)
    return None


_CONTAINERS = {"mov": "MP4/M4A container", "matroska": "Matroska/WebM container", "asf": "ASF container",
               "mpegts": "MPEG transport stream", "mpeg": "MPEG program stream"}
_FORMAT_OF = {"mov": "isobmff", "matroska": "matroska", "asf": "asf", "mpegts": "mpeg-ts", "mpeg": "mpeg-ps"}


MAX_RATE = 1_000_000  # above any real recorder (ultrasonic bat detectors: 384-768 kHz)


# ----------------------------------------------------------------------------------------------
# Decoding and segmentation
# ----------------------------------------------------------------------------------------------


@dataclass
class AudioConfig(ModalityConfig):
    segment_frames: int = setting(1024, lo=16)  # fbank frames per segment (10.24 s)
    max_segments: int = setting(64, lo=0)  # pooled mode: more segments -> this many, uniformly spaced; 0 = all
    per_window: bool = setting(False)  # one sample per segment (#t=START seconds) instead of one per file
    quality: str = setting("HQ", choices=("QQ", "LQ", "MQ", "HQ", "VHQ"))  # soxr quality: QQ, LQ, MQ, HQ, VHQ
    block_seconds: float = setting(4.0, above=0)  # decode block length


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError) as e:  # pragma: no cover - dependency
        raise MissingDependency(f"soundfile/libsndfile is needed for audio ({e}); "
                                "pip install soundfile") from None
    return soundfile


def _mono_16k(f, cfg: AudioConfig, meta: dict) -> Iterator[np.ndarray]:
    """Stream ``f`` (an open SoundFile) as 16 kHz mono float32 chunks."""
    sf = _soundfile()
    sr = f.samplerate
    rs = None
    if sr != RATE:
        import soxr

        rs = soxr.ResampleStream(sr, RATE, 1, dtype="float32", quality=cfg.quality)
        meta["resampled"] = f"soxr {cfg.quality} {sr} Hz -> {RATE} Hz (streaming)"
    # A block holds channels x frames float32 plus the mixdown: at most 1/8 of the per-sample budget.
    block = max(1, min(int(sr * cfg.block_seconds), _budget.allowed(f.channels * 4 + 8, 1 / 8)))
    decoded = nonfinite = 0
    try:
        while True:
            x = f.read(block, dtype="float32", always_2d=True)
            if x.shape[0] == 0:
                break
            decoded += x.shape[0]
            mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
            if not np.isfinite(mono).all():
                bad = ~np.isfinite(mono)
                nonfinite += int(bad.sum())
                mono = np.where(bad, np.float32(0), mono)
                meta["repair_nonfinite"] = f"{nonfinite} non-finite samples (NaN/inf) replaced by 0 (silence)"
            yield rs.resample_chunk(mono, last=False) if rs else mono
    except sf.LibsndfileError as e:
        raise DecodeError(f"audio data is corrupt after {decoded} frames: {e.error_string}") from None
    if decoded and nonfinite == decoded:
        raise DecodeError(f"no finite samples: all {decoded:,} decoded frames are NaN/inf; nothing to embed")
    meta["decoded_frames"] = decoded
    if rs is not None:
        yield rs.resample_chunk(np.zeros(0, np.float32), last=True)


def _normalise(fb: torch.Tensor) -> np.ndarray:
    """[F, 128] log-mel -> [128, F] AST-normalised float32."""
    return ((fb.T + (-AST_MEAN)) / (2 * AST_STD)).numpy().astype(np.float32)


def _segments(chunks: Iterator[np.ndarray], seg: int, want, meta: dict
              ) -> Iterator[tuple[int, np.ndarray, int]]:
    """Cut a 16 kHz stream into segments: yields (start frame, fbank [128, T], valid frames)."""
    length = (seg - 1) * HOP + WIN  # samples under `seg` frames
    hop = seg * HOP
    buf, buf0, k = np.zeros(0, np.float32), 0, 0
    for chunk in chunks:
        if chunk.size:
            buf = np.concatenate([buf, chunk])
        while buf0 + buf.size >= k * hop + length:
            if want(k):
                s = k * hop - buf0
                w = buf[s:s + length]
                yield k * seg, _normalise(kaldi_fbank(w - w.mean(dtype=np.float64))), seg
            k += 1
        keep = max(buf0, buf0 + buf.size - length - HOP)  # the last segment ends near the file end
        buf, buf0 = buf[keep - buf0:], keep
    n = buf0 + buf.size
    meta["samples_16k"] = n
    meta["duration_s"] = round(n / RATE, 4)
    if n == 0:
        raise DecodeError("audio has no samples (0 frames); nothing to embed")
    total = n_frames(n)
    meta["fbank_frames"] = total
    if k == 0:  # one clip shorter than a segment: keep its own length
        w = buf.astype(np.float64)
        if w.size < WIN:
            meta["padded_samples"] = f"{w.size} samples zero-padded to one 25 ms frame ({WIN})"
            w = np.pad(w, (0, WIN - w.size))
        fb = _normalise(kaldi_fbank(w - w.mean()))
        valid = fb.shape[1]
        if valid < PATCH:
            meta["padded_frames"] = f"{valid} frames padded to {PATCH} (zeros, ignored by the projection)"
            fb = np.pad(fb, ((0, 0), (0, PATCH - valid)))
        yield 0, fb, valid
    elif total > k * seg and want(k):
        start = total - seg
        meta["last_segment_overlap_frames"] = k * seg - start
        s = start * HOP - buf0
        w = buf[s:s + length]
        yield start, _normalise(kaldi_fbank(w - w.mean(dtype=np.float64))), seg


# Formats libsndfile reads itself: their failures are reported as libsndfile sees them (FFmpeg
# would decode a corrupt file of these leniently). Formats only FFmpeg reads skip libsndfile.
_SNDFILE_FORMATS = {"w64", "flac", "aiff", "au", "ogg-vorbis", "ogg-opus", "ogg-flac", "ogg", "mp3"}
FFMPEG_FORMATS = {"aac-adts", "ac-3", "e-ac-3", "amr", "amr-wb", "isobmff", "matroska", "asf",
                  "mpeg-ts", "mpeg-ps"}


_DEMUXERS = {"aac-adts": "aac", "ac-3": "ac3", "e-ac-3": "eac3", "amr": "amr", "amr-wb": "amr", "isobmff": "mov",
             "matroska": "matroska", "asf": "asf", "mpeg-ts": "mpegts", "mpeg-ps": "mpeg"}


def open_audio(path: Path, head: bytes = b"", fmt: str = ""):
    """An open audio file: ``soundfile.SoundFile`` for what libsndfile reads, else
    :class:`~mtx.modalities._media.AvAudioFile` (FFmpeg through PyAV) with the same interface.

    ``fmt`` is the format sniffing named (``Evidence.format``): FFmpeg-only formats go straight
    to PyAV; libsndfile's own formats never fall back (their errors are libsndfile's); anything
    else (a CAF, a WAV with a codec libsndfile lacks, a forced ``--modality audio``) tries
    libsndfile first, then FFmpeg.
    """
    from ._media import AvAudioFile

    if not fmt and head:
        name = audio_format(head)
        fmt = format_id(name) if name else ""
    if fmt in FFMPEG_FORMATS:
        return _checked(AvAudioFile(path, _DEMUXERS.get(fmt)))
    sf = _soundfile()
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        why = (e.error_string.strip() if isinstance(e, sf.LibsndfileError) else "") or str(e)
        if "not a regular file" in why and path.is_file():
            # libsndfile's words when no decoder recognises the data of a regular file
            why = "no decoder recognises the data (corrupt, or not a format libsndfile reads)"
        wav = _wav_fmt(head)
        if wav is not None and wav[0] == 0:
            why = f"the WAV header declares 0 channels ({why})"
        elif wav is not None and not 1 <= wav[1] <= MAX_RATE:
            why = f"the WAV header declares a sample rate of {wav[1]:,} Hz ({why})"
        elif fmt not in _SNDFILE_FORMATS and (fmt != "wav" or wav is not None):
            try:  # a codec libsndfile lacks (AAC/ALAC in CAF, MP3 in WAV...), or a forced modality
                return _checked(AvAudioFile(path))
            except DecodeError as av_error:
                why = f"{why}; FFmpeg: {av_error.message.removeprefix('cannot decode audio: ')}"
        raise DecodeError(f"cannot decode audio: {why}") from None
    return _checked(f)


def _checked(f):
    if not 1 <= f.samplerate <= MAX_RATE:
        f.close()
        raise DecodeError(f"the header declares a sample rate of {f.samplerate:,} Hz, outside 1 Hz to "
                          f"{MAX_RATE:,} Hz: a corrupt header")
    return f


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


class AudioPatchTokenizer(Tokenizer):
    """AST front end: Conv2d(1, D, 16, stride 10) over (mel, time) + CLS + positions + pre-LN.

    Inputs: ``fbank`` [R, 128, T] (normalised log-mel), ``frames`` [R] (valid frames per row).
    Tokens are laid out time-major (all 12 frequency patches of column 0, then column 1...), so a
    shorter clip's padding sits at the tail; columns past a row's valid frames are masked.
    Positions: the image table (CLIP's, or a seeded one of the same shape) resized bilinearly to
    the 12 x T' grid of a *full* segment (T' = 101); shorter clips use its first columns, so a
    token's position never depends on what it is batched with. With a CLIP front the projection
    is the image patch kernel summed over RGB (the AST trick; resized to 16 x 16 with its sum
    preserved when the preset's patch differs), and CLS / ln_pre are CLIP's.
    """

    def __init__(self, spec, front, seed: int, segment_frames: int):
        super().__init__()
        d, g = spec.dim, spec.grid
        self.fgrid = (N_MELS - PATCH) // PATCH_STRIDE + 1
        self.tgrid = (segment_frames - PATCH) // PATCH_STRIDE + 1
        with seeded(seed):
            self.proj = nn.Conv2d(1, d, PATCH, PATCH_STRIDE, bias=False)
            cls = torch.randn(d) * 0.02
            image_pos = torch.randn(1 + g * g, d) * 0.02
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        if front is not None:
            with torch.no_grad():
                w = front.patch_weight.float().sum(dim=1, keepdim=True)
                if w.shape[-1] != PATCH:
                    w = F.interpolate(w, size=(PATCH, PATCH), mode="bilinear", align_corners=False)
                    w = w * (front.patch_weight.shape[-1] / PATCH) ** 2  # keep the kernel's sum
                self.proj.weight.copy_(w)
                self.norm_pre.weight.copy_(front.ln_pre_weight)
                self.norm_pre.bias.copy_(front.ln_pre_bias)
            cls, image_pos = front.cls.float().reshape(d), front.pos.float().reshape(-1, d)
            self.init, self.seed = "clip", None
        else:
            self.init, self.seed = "seeded", seed
        grid = resize_pos_grid(image_pos[1:], (g, g), (self.fgrid, self.tgrid))
        grid = grid.reshape(self.fgrid, self.tgrid, d).transpose(0, 1).reshape(-1, d)  # time-major
        self.cls = nn.Parameter(cls.clone())
        self.pos = nn.Parameter(torch.cat([image_pos[:1], grid]).contiguous())

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        fb = inputs["fbank"].to(self.proj.weight.dtype)
        x = self.proj(fb[:, None])  # [R, D, 12, T']
        r, d, nf, nt = x.shape
        x = x.permute(0, 3, 2, 1).reshape(r, nt * nf, d) + self.pos[1:1 + nt * nf]
        cls = (self.cls + self.pos[0]).expand(r, 1, d)
        x = self.norm_pre(torch.cat([cls, x], dim=1))
        frames = inputs["frames"].to(x.device).long().clamp_min(PATCH)
        valid_cols = (frames - PATCH) // PATCH_STRIDE + 1
        pad_cols = torch.arange(nt, device=x.device)[None] >= valid_cols[:, None]
        if not bool(pad_cols.any()):
            return Tokens(x, None, True)
        mask = torch.cat([torch.zeros(r, 1, dtype=torch.bool, device=x.device),
                          pad_cols.repeat_interleave(nf, dim=1)], dim=1)
        return Tokens(x, mask, True)


# ----------------------------------------------------------------------------------------------
# The modality
# ----------------------------------------------------------------------------------------------


@register_modality
class audio(Modality):  # noqa: N801 - class name == registry key == module name
    """Sound becomes the **AST** (Audio Spectrogram Transformer) input: a 128-bin Kaldi log-mel
    filterbank cut into 16 × 16 patches with stride 10 — **1213 tokens** for a full 10.24 s
    segment at B/16 (1 + 12 × 101), `1 + 12 × ⌊(T − 16)/10 + 1⌋` for a shorter clip of T frames
    (1 s → 109).

    ## Which files

    Everything libsndfile reads: WAV (PCM, float, ADPCM, WAVE_FORMAT_EXTENSIBLE, RF64/W64), FLAC,
    OGG/Vorbis/Opus, MP3, AIFF/AIFC, AU, CAF. Container magic bytes are exclusive claims; MP3 needs
    **two consecutive** valid MPEG frame headers (one alone is not evidence: a UTF-16 byte-order mark
    also parses as one). Headerless raw PCM is not sniffed.

    And what only FFmpeg reads, decoded through PyAV: AAC and ALAC in M4A/MP4, raw AAC (ADTS,
    two consecutive frame headers), Opus/Vorbis/AAC/MP2... in MKA/WebM, WMA (ASF), AC-3/E-AC-3
    (two consecutive sync frames), AMR, and CAF or WAV payloads libsndfile lacks. MP4, Matroska/WebM,
    ASF and MPEG-TS/PS containers hold sound or pictures alike: their **stream list** decides (the
    container header read by FFmpeg, nothing decoded) — audio streams and no video stream make a
    claim for audio (cover art is not a video), a video stream makes it [video](video.md)'s.
    `--modality audio` on a video embeds its (first) soundtrack. Decoding, mixing, resampling and
    the filterbank are the same for both decoders (`decoder` in the sample meta says which ran).

    ## From file to filterbank

    1. Decode with soundfile (or FFmpeg) in blocks (4 s), mix to mono, **resample to 16 kHz** with soxr's
       streaming band-limited resampler (quality `HQ`): naive decimation would alias high
       frequencies into the mel bins.
    2. Kaldi-compatible fbank, exactly as AST computed its training features
       (`torchaudio.compliance.kaldi.fbank`): 25 ms Hanning window, 10 ms shift, DC removal,
       pre-emphasis 0.97, 512-point power spectrum, 128 HTK-mel bins from 20 Hz, dither 0, energy
       off, log floored at float epsilon (checked against kaldi-native-fbank in the tests).
    3. AudioSet normalisation `(x + 4.2677393) / (2 × 4.5689974)`, as AST.
    4. **Segments** of 1024 frames (10.24 s, AST's input length): a longer file gives segments at
       0, 10.24, 20.48 s, ... and a last one that *ends at the end of the file* (overlapping its
       neighbour), so nothing is dropped or padded. A clip shorter than one segment keeps its own
       length (≥ 16 frames). More than 64 segments are replaced by 64 spaced uniformly over the file
       (recorded), which bounds memory and compute. The file is never held whole: at most two
       segments of samples plus the kept filterbanks.

    ## Tokens

    `AudioPatchTokenizer`: Conv2d(1, D, 16, stride 10) over (mel, time), tokens laid out time-major,
    + CLS + positions + pre-LayerNorm. Positions are the image table resized bilinearly to the
    12 × 101 grid of a *full* segment; shorter clips use its first columns, so a token's position
    never depends on what it is batched with, and padding columns are masked.

    ## Weights and pooling

    With a CLIP front end the projection is the image patch kernel **summed over RGB** — the AST
    trick for starting audio from image weights — and CLS / `ln_pre` are CLIP's (`init=clip`);
    otherwise seeded. Pooling is the **mean** over tokens, then over segments, in both cases (CLIP's
    CLS never saw a spectrogram).

    ## Try it

    ```
    mtx tokenize examples/tone.wav
    ```
    """

    name = "audio"
    extensions = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
                  ".au", ".snd", ".caf", ".w64", ".rf64", ".m4a", ".m4b", ".aac", ".adts", ".mka", ".weba",
                  ".wma", ".ac3", ".eac3", ".amr", ".awb", ".mp2")
    summary = "WAV, FLAC, OGG/Opus, MP3, AIFF, M4A/AAC, MKA/WebM, WMA, AC-3... -> 128-bin Kaldi fbank, AST patches"
    tokens = "1 + 12 x floor((T-16)/10 + 1) per 10.24 s segment (1213; 1 s -> 109)"
    clip_init = True
    Config = AudioConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        if head[:4] == b"OggS" and (b"\x80theora" in head or b"\x01video" in head):
            return None  # Ogg with a video stream belongs to video
        fmt = audio_format(head)
        if fmt:
            return Evidence(self.name, CLAIM, f"{fmt} header", format_id(fmt))
        demuxer = shared_container(head)
        if demuxer:
            # MP4/M4A, Matroska/WebM/MKA, ASF/WMA, MPEG-TS/PS hold sound or pictures: the
            # container's stream list (header only, nothing decoded) decides.
            streams = probe_streams(path, demuxer)
            if streams is not None and streams.audio and not streams.video:
                cover = f" and {streams.pictures} cover picture(s)" if streams.pictures else ""
                return Evidence(self.name, CLAIM, f"{_CONTAINERS[demuxer]} with audio only "
                                f"({', '.join(streams.audio)}{cover})", _FORMAT_OF[demuxer])
            if streams is None and path.suffix.lower() in self.extensions:
                return Evidence(self.name, EXTENSION, f"extension {path.suffix.lower()} (FFmpeg cannot "
                                "open the container)", _FORMAT_OF[demuxer])
            return None
        if head[:4] == b"OggS" and path.suffix.lower() in (".ogg", ".oga", ".opus"):
            return Evidence(self.name, HINT, f"Ogg container with extension {path.suffix.lower()}", "ogg")
        if head[:4] in (b"RIFF", b"OggS") or head[:4] == b"FORM":
            return None  # another RIFF/Ogg/IFF payload (AVI, WebP, Theora...): not ours
        if path.suffix.lower() in self.extensions:
            return Evidence(self.name, EXTENSION, f"extension {path.suffix.lower()}", path.suffix.lower()[1:])
        return None

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, seconds: float = 5.0, sr: int = 16000) -> list[Path]:
        """``n`` mono 16-bit WAV tones with a little noise."""
        import wave

        rng, out = np.random.default_rng(4), []
        t = np.arange(int(seconds * sr)) / sr
        for i in range(n):
            f0 = 200 + 40 * i % 600
            sig = 0.3 * np.sin(2 * math.pi * f0 * t) + 0.05 * rng.standard_normal(len(t))
            p = d / f"sound{i:05d}.wav"
            with wave.open(str(p), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(sr)
                w.writeframes((np.clip(sig, -1, 1) * 32767).astype("<i2").tobytes())
            out.append(p)
        return out

    def degenerate(self, d: Path) -> list[Path]:
        """A WAV of 0 frames, and a float WAV whose every sample is NaN."""
        import struct
        import wave

        empty = d / "empty.wav"
        with wave.open(str(empty), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
        nan = d / "nan.wav"
        data = np.full(1600, np.nan, "<f4").tobytes()
        fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
        nan.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
                        + b"data" + struct.pack("<I", len(data)) + data)
        return [empty, nan]

    def load(self, path: Path, cfg: AudioConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        if cfg.segment_frames < PATCH:
            raise DecodeError(f"segment_frames must be >= {PATCH}")
        known = sniffed_or_read(path, sniffed)
        head = known.head  # libsndfile and FFmpeg find the format themselves
        f = open_audio(path, head, known.format)
        with f:
            meta = {"format": f.format, "subtype": f.subtype, "sample_rate": f.samplerate,
                    "channels": f.channels, "frames": int(f.frames),
                    "decoder": getattr(f, "decoder", "libsndfile")}
            if getattr(f, "streams", 1) > 1:
                meta["audio_stream"] = f"the first of {f.streams} audio streams"
            if f.channels > 1:
                meta["mixdown"] = f"mean of {f.channels} channels"
            declared = _wav_declared_frames(head)
            if declared is not None and declared != f.frames:
                meta["repair"] = (f"WAV header declares {declared} frames, the file holds {f.frames}; "
                                  "decoded the frames present")
            seg = cfg.segment_frames
            n16 = math.ceil(max(int(f.frames), 0) * RATE / f.samplerate)
            n_seg = max(1, math.ceil(n_frames(n16) / seg))
            chosen: set[int] | None = None
            if not cfg.per_window and 0 < cfg.max_segments < n_seg:
                chosen = {int(i) for i in np.round(np.linspace(0, n_seg - 1, cfg.max_segments))}
                meta["segments_subsampled"] = (f"{n_seg} segments -> {len(chosen)} spaced uniformly "
                                               f"(max_segments={cfg.max_segments})")
            last_chosen = max(chosen) if chosen else 0
            if not cfg.per_window:  # every chosen segment's fbank is held until the sample is built
                _budget.check(len(chosen) if chosen else n_seg, f"segments of {seg} fbank frames (a pooled sample "
                              "keeps each; set max_segments to cap them)", N_MELS * seg * 4 * 2)

            def want(k: int) -> bool:
                return chosen is None or k in chosen or k > last_chosen

            segs = _segments(_mono_16k(f, cfg, meta), seg, want, meta)
            meta["mean_removed"] = ("per segment; equivalent to AST's clip mean because the fbank "
                                    "removes each frame's DC offset")
            if cfg.per_window:
                for start, fb, valid in segs:
                    m = dict(meta, segment_start_s=start / 100, valid_frames=valid)
                    yield Sample(f"t={start / 100:g}", {"fbank": fb[None],
                                                        "frames": np.array([valid], np.int32)}, m)
                return
            starts, fbs, valid = [], [], []
            for start, fb, v in segs:
                starts.append(start / 100)
                fbs.append(fb)
                valid.append(v)
        meta["segment_starts_s"] = starts
        yield Sample("", {"fbank": np.stack(fbs), "frames": np.array(valid, np.int32)}, meta)

    def batch_key(self, sample: Sample) -> Hashable:
        # Power-of-two length buckets: full segments (1024) batch together with clips of 513..1024
        # frames; collate pads to the longest in the batch and the tokenizer masks the padding.
        t = int(sample.arrays["fbank"].shape[-1])
        return ("fbank", 1 << max(4, (t - 1).bit_length()))

    def collate(self, samples: list[Sample], pin: bool = False, buffers=None) -> dict[str, torch.Tensor]:
        t = max(s.arrays["fbank"].shape[-1] for s in samples)
        rows = sum(s.n_segments for s in samples)
        out = np.zeros((rows, N_MELS, t), np.float32)
        i = 0
        for s in samples:
            a = s.arrays["fbank"]
            out[i:i + a.shape[0], :, :a.shape[-1]] = a
            i += a.shape[0]
        frames = np.concatenate([s.arrays["frames"] for s in samples]).astype(np.int64)
        return pinned({"fbank": torch.from_numpy(out), "frames": torch.from_numpy(frames)}, pin)

    def cost(self, sample: Sample, spec, cfg) -> int:
        return n_tokens(int(sample.arrays["fbank"].shape[-1]))

    def content_reason(self, sample: Sample) -> str | None:
        if (sample.arrays["frames"] <= 0).any():
            return "a segment holds no fbank frame (only padding)"
        return None

    def tokenizer(self, spec, front, cfg):
        return AudioPatchTokenizer(spec, front, self.seed(spec, cfg), cfg.segment_frames)

    def default_pool(self, init: str) -> str:
        return "mean"  # MODALITIES.md: mean over tokens, then over segments, for every init
