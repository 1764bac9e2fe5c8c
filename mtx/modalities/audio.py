"""audio: everything libsndfile reads -> Kaldi log-mel fbank -> AST patch tokens (1213 per 10.24 s).

Pipeline (MODALITIES.md "audio"): decode with soundfile in blocks, mix to mono, resample to
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
)
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
    if head[:3] == b"ID3":
        return "MP3 (ID3)"
    n = _mpeg_frame_len(head[:4])
    if n and len(head) >= n + 4 and _mpeg_frame_len(head[n:n + 4]):
        # Two consecutive valid MPEG frame headers. One alone is not evidence: a UTF-16 LE byte
        # order mark (FF FE) also parses as a frame header.
        return "MP3"
    return None


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


MAX_RATE = 1_000_000  # above any real recorder (ultrasonic bat detectors: 384-768 kHz)


# ----------------------------------------------------------------------------------------------
# Decoding and segmentation
# ----------------------------------------------------------------------------------------------


@dataclass
class AudioConfig(ModalityConfig):
    segment_frames: int = 1024  # fbank frames per segment (10.24 s)
    max_segments: int = 64  # pooled mode: more segments -> this many, uniformly spaced; 0 = all
    per_window: bool = False  # one sample per segment (#t=START seconds) instead of one per file
    quality: str = "HQ"  # soxr quality: QQ, LQ, MQ, HQ, VHQ
    block_seconds: float = 4.0  # decode block length


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
    block = max(1, int(sr * cfg.block_seconds))
    decoded = 0
    try:
        while True:
            x = f.read(block, dtype="float32", always_2d=True)
            if x.shape[0] == 0:
                break
            decoded += x.shape[0]
            mono = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
            if not np.isfinite(mono).all():
                mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
                meta["repair_nonfinite"] = "non-finite samples replaced by 0"
            yield rs.resample_chunk(mono, last=False) if rs else mono
    except sf.LibsndfileError as e:
        raise DecodeError(f"audio data is corrupt after {decoded} frames: {e.error_string}") from None
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


def open_audio(path: Path, head: bytes = b""):
    sf = _soundfile()
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        why = (e.error_string.strip() if isinstance(e, sf.LibsndfileError) else "") or str(e)
        if "not a regular file" in why and path.is_file():
            # libsndfile's words when no decoder recognises the data of a regular file
            why = "no decoder recognises the data (corrupt, or not a format libsndfile reads)"
        fmt = _wav_fmt(head)
        if fmt is not None and fmt[0] == 0:
            why = f"the WAV header declares 0 channels ({why})"
        elif fmt is not None and not 1 <= fmt[1] <= MAX_RATE:
            why = f"the WAV header declares a sample rate of {fmt[1]:,} Hz ({why})"
        raise DecodeError(f"cannot decode audio: {why}") from None
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
    name = "audio"
    extensions = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc",
                  ".au", ".snd", ".caf", ".w64", ".rf64")
    summary = "WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF... -> 128-bin Kaldi fbank, AST patches"
    tokens = "1 + 12 x floor((T-16)/10 + 1) per 10.24 s segment (1213; 1 s -> 109)"
    clip_init = True
    Config = AudioConfig

    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        if head[:4] == b"OggS" and (b"\x80theora" in head or b"\x01video" in head):
            return None  # Ogg with a video stream belongs to video
        fmt = audio_format(head)
        if fmt:
            return Evidence(self.name, CLAIM, f"{fmt} header")
        if head[:4] == b"OggS" and path.suffix.lower() in (".ogg", ".oga", ".opus"):
            return Evidence(self.name, HINT, f"Ogg container with extension {path.suffix.lower()}")
        if head[:4] in (b"RIFF", b"OggS") or head[:4] == b"FORM":
            return None  # another RIFF/Ogg/IFF payload (AVI, WebP, Theora...): not ours
        if path.suffix.lower() in self.extensions:
            return Evidence(self.name, EXTENSION, f"extension {path.suffix.lower()}")
        return None

    def load(self, path: Path, cfg: AudioConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        if cfg.segment_frames < PATCH:
            raise DecodeError(f"segment_frames must be >= {PATCH}")
        try:
            with open(path, "rb") as fh:
                head = fh.read(8192)
        except OSError as e:
            raise DecodeError(f"cannot read: {e.strerror or e}") from None
        f = open_audio(path, head)
        with f:
            meta = {"format": f.format, "subtype": f.subtype, "sample_rate": f.samplerate,
                    "channels": f.channels, "frames": int(f.frames)}
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

    def tokenizer(self, spec, front, cfg):
        return AudioPatchTokenizer(spec, front, self.seed(spec, cfg), cfg.segment_frames)

    def default_pool(self, init: str) -> str:
        return "mean"  # MODALITIES.md: mean over tokens, then over segments, for every init
