"""The modality contract and the tokenizer pieces that several modalities share.

A modality is one class in one file, registered with ``@register_modality``. It declares what
it accepts (``extensions``), how it recognises a file (``sniff``), how a file becomes samples
(``load``, CPU only, in worker processes) and how samples become encoder tokens
(``tokenizer``, an ``nn.Module`` that runs on the device).

Data contract:
- ``load`` yields :class:`Sample` objects whose arrays all share a leading *segment* axis
  ``S >= 1`` (video clips, audio segments, text windows, IMU windows). Every segment becomes one
  encoder row; the rows of one sample are pooled and averaged into one vector.
- ``collate`` turns samples that share a ``batch_key`` into a dict of tensors with the segments
  of all samples concatenated along axis 0.
- The tokenizer maps that dict to :class:`Tokens` ``[R, N, D]`` (+ key-padding mask).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DecodeError
from ..settings import OptionError, setting

if TYPE_CHECKING:
    from ..weights import ClipFront, EncoderSpec

# Evidence strengths, strongest first (see mtx/sniff.py for the precedence rules). A modality
# may add a small documented offset (e.g. REFINED + 2) to order refinements of one container.
CLAIM = 40  # exclusive content: magic bytes of a one-modality format, a FLIR segment, DICM
REFINED = 35  # a shared container refined by its structure or a path hint (1-channel 16-bit
#               PNG under thermal/, a CSV with accelerometer columns, a TIFF with >= 5 bands)
STRUCTURE = 30  # a shared container in its generic reading (a JPEG is a picture, a CSV a table)
HINT = 20  # a path hint alone (``velodyne/`` for a .bin)
EXTENSION = 10  # only the file extension speaks for it

STRENGTH_NAMES = {CLAIM: "claim", REFINED: "refined", STRUCTURE: "structure", HINT: "hint",
                  EXTENSION: "extension"}


@dataclass(frozen=True)
class Evidence:
    """Why a modality claims a file. Higher ``strength`` wins; equal top strengths are ambiguous."""


    modality: str
    strength: int
    reason: str
    format: str = ""  # the container/format the check recognised ("pcd", "csv", "flir-app1"...)

    @property
    def strength_name(self) -> str:
        base = max((s for s in STRENGTH_NAMES if s <= self.strength), default=EXTENSION)
        return STRENGTH_NAMES[base]


@dataclass(frozen=True)
class Sniffed:
    """What sniffing learned about a file, handed to ``Modality.load`` so it need not re-detect.

    Attributes:
        head: the first bytes of the file (``mtx.sniff.HEAD_BYTES``, fewer for a short file).
        format: the format the winning evidence named ('' when unknown, e.g. forced by
            ``--modality`` and the modality's own check did not recognise the bytes).
    """

    head: bytes = b""
    format: str = ""


def sniffed_or_read(path: Path, sniffed: Sniffed | None) -> Sniffed:
    """``sniffed`` when sniffing ran; called directly (``sniffed`` None), the head read here.

    The format stays '' when sniffing did not name one: the loader then detects it from
    ``head``, which needs no second open.
    """
    if sniffed is not None and sniffed.head:
        return sniffed
    from ..sniff import read_head

    return Sniffed(read_head(path), sniffed.format if sniffed is not None else "")


@dataclass
class Sample:
    """One unit that becomes one vector.

    Attributes:
        key: fragment inside the file ('' for the whole file, ``row=3``, ``line=2``, ``t=10``);
            the sample id is ``<path relative to its input root>`` + ``#key`` when not empty.
        arrays: numpy arrays with a shared leading segment axis (S >= 1).
        meta: JSON-able facts (original shape, sample rate, frames used, what was resampled).
    """

    key: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_segments(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])


class BufferPool:
    """Batch buffers used again once the encoder is done with them.

    A fresh 40 MB batch costs ten thousand page faults (zeroed pages) every time; on CUDA
    torch's pinned-memory cache does this job. ``empty`` runs in the collating thread,
    ``give_back`` in the compute thread (list append/pop are atomic); only buffers this pool
    issued are taken back.
    """

    def __init__(self, keep: int = 4):
        import weakref

        self.keep = keep
        self.free: dict[tuple, list[torch.Tensor]] = {}
        self.issued: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        with contextlib.suppress(KeyError, IndexError):
            return self.free[(tuple(shape), dtype)].pop()
        t = torch.empty(shape, dtype=dtype)
        self.issued[id(t)] = t
        return t

    def give_back(self, tensors) -> None:
        """Return buffers nothing refers to any more (the caller guarantees it)."""
        for t in tensors:
            if self.issued.get(id(t)) is t:
                free = self.free.setdefault((tuple(t.shape), t.dtype), [])
                if len(free) < self.keep:
                    free.append(t)


def pinned(tensors: dict[str, torch.Tensor], pin: bool) -> dict[str, torch.Tensor]:
    """``tensors`` page-locked when ``pin`` (what a ``collate`` override returns)."""
    return {k: v.pin_memory() for k, v in tensors.items()} if pin else tensors


@dataclass
class Tokens:
    """Encoder input. ``pad_mask`` is True where a position is padding."""

    x: torch.Tensor
    pad_mask: torch.Tensor | None = None
    has_cls: bool = True
    # True where mean/max pooling may use a token (graph: node tokens only); None = all tokens.
    pool_mask: torch.Tensor | None = None


@dataclass
class ModalityConfig:
    """Base class of every modality's preprocessing config (recorded in the output).

    Fields declare their allowed values with :func:`mtx.settings.setting`; every value is coerced
    to its field's type and checked when a config is made (``-O``, the API, a recorded config),
    before any work. Relations between fields go in :meth:`check`.
    """

    owner: ClassVar[str] = ""  # the modality's name, for messages (set by @register_modality)

    def __post_init__(self) -> None:
        from ..settings import check_fields

        check_fields(self, self.owner or type(self).__name__)
        self.check()

    def check(self) -> None:
        """Refuse combinations of valid values that do not work together (UsageError)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


class Modality:
    """Base class: subclass, set the class attributes, implement ``sniff``, ``load``, ``tokenizer``.

    Class attributes:
        name: registry key, equal to the module name.
        extensions: lower-case extensions with the dot that suggest this modality.
        summary: one line for ``mtx modalities`` and the docs.
        tokens: the token count at B/16 defaults, as text for the docs (``"197"``, ``"1 + |V| + |E|"``).
        clip_init: True when the tokenizer can take weights from a CLIP vision tower.
        Config: the dataclass of preprocessing options (fields with defaults).
    """

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    tokens: ClassVar[str] = ""
    clip_init: ClassVar[bool] = False
    Config: ClassVar[type[ModalityConfig]] = ModalityConfig

    # -- discovery -------------------------------------------------------------------------
    def sniff(self, head: bytes, path: Path) -> Evidence | None:
        """Return evidence that ``path`` is of this modality, or None. Cheap: ``head`` is the
        first 8 KiB; open the file again only for a bounded structure check."""
        if path.suffix.lower() in self.extensions:
            return Evidence(self.name, EXTENSION, f"extension {path.suffix.lower()}")
        return None

    def companions(self, path: Path) -> list[Path]:
        """Files consumed together with ``path`` that must not be embedded on their own."""
        return []

    # -- examples ----------------------------------------------------------------------------
    def synth(self, d: Path, n: int, **kw: Any) -> list[Path]:
        """Write ``n`` small, valid example files of this modality under the directory ``d`` and
        return their paths: deterministic, in its most common format, with the path hints its
        ``sniff`` expects. ``mtx bench``, benchmarks/ and the contract test use them."""
        raise NotImplementedError(f"{self.name} has no synthetic examples")

    def degenerate(self, d: Path) -> list[Path]:
        """Write files under ``d`` that parse as this modality but hold **no content** (no
        decoded element, or no finite one): ``load`` must refuse each with a DecodeError, never
        yield a sample. The contract test runs them (docs/reliability.md, "No content")."""
        raise NotImplementedError(f"{self.name} has no degenerate examples")

    # -- CPU side --------------------------------------------------------------------------
    def load(self, path: Path, cfg: ModalityConfig, sniffed: Sniffed | None = None) -> Iterator[Sample]:
        """Decode and preprocess ``path`` into samples. CPU only, deterministic, picklable.

        ``sniffed`` carries the head bytes and detected format from :func:`mtx.sniff.sniff`
        (None when called directly: detect the format yourself). Raise
        :class:`mtx.errors.DecodeError` with a one-line reason for bad input.

        Every subclass's ``load`` is wrapped (``__init_subclass__``) so that, for every modality
        alike: warnings and library log records raised while decoding become the sample's
        ``decoder_warnings`` facts instead of stderr lines, and each sample passes
        :meth:`check_sample` (content present, values finite) before it is yielded. Memory:
        check declared sizes with :mod:`mtx.modalities._budget` before allocating."""
        raise NotImplementedError

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        load = cls.__dict__.get("load")
        if load is not None and not getattr(load, "_guarded", False):
            cls.load = _guarded_load(load)

    def check_sample(self, sample: Sample) -> None:
        """Refuse a sample with no content, the same rule for every modality: every array holds
        at least one segment and one element, float arrays are finite (a documented fill must
        happen in ``load`` and be recorded), and :meth:`content_reason` finds content.

        Raises:
            DecodeError: "no content: ..." or "non-finite values ...".
        """
        if not sample.arrays:
            raise DecodeError("no content: the decoder produced no arrays")
        for k, a in sample.arrays.items():
            if a.ndim == 0 or a.size == 0 or a.shape[0] == 0:
                raise DecodeError(f"no content: the decoded {k!r} array is empty {tuple(a.shape)}")
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                raise DecodeError(f"non-finite values (NaN/inf) in the decoded {k!r} array; "
                                  f"{self.name} documents no fill for them")
        why = self.content_reason(sample)
        if why:
            raise DecodeError(f"no content: {why}")

    def content_reason(self, sample: Sample) -> str | None:
        """Why a sample whose arrays are not empty still holds nothing (padding only: 0 valid
        samples, frames or tokens), or None. Constant content is content: an all-black picture,
        a flat line and a still sensor are measurements; an empty resample is not."""
        return None

    def batch_key(self, sample: Sample) -> Hashable:
        """Samples with equal keys can be collated together (default: equal trailing shapes)."""
        return tuple((k, a.shape[1:], a.dtype.str) for k, a in sorted(sample.arrays.items()))

    def collate(self, samples: list[Sample], pin: bool = False,
                buffers: BufferPool | None = None) -> dict[str, torch.Tensor]:
        """Concatenate the segments of ``samples`` into one dict of tensors.

        With ``pin`` the tensors are page-locked (for an asynchronous copy to a GPU): the
        segments are copied straight into a buffer from torch's pinned-memory cache, one copy.
        Otherwise ``buffers`` (if given) supplies reused buffers. Collates that pad ragged
        samples ignore ``buffers``.
        """
        out = {}
        for k in samples[0].arrays:
            parts = [s.arrays[k] for s in samples]
            shape = (sum(a.shape[0] for a in parts), *parts[0].shape[1:])
            dtype = torch.from_numpy(np.empty(0, parts[0].dtype)).dtype
            if buffers is not None and not pin:
                t = buffers.empty(shape, dtype)
            else:
                t = torch.empty(shape, dtype=dtype, pin_memory=pin)
            np.concatenate(parts, out=t.numpy())
            out[k] = t
        return out

    def cost(self, sample: Sample, spec: "EncoderSpec", cfg: ModalityConfig) -> int:
        """Encoder tokens of each row (segment) of ``sample``, CLS included, before any batch
        padding: what the tokenizer emits at ``spec``'s geometry with ``cfg`` (for a sample
        whose rows differ, the longest). The batcher sizes batches by it."""
        raise NotImplementedError

    # -- device side -----------------------------------------------------------------------
    def tokenizer(
        self, spec: "EncoderSpec", front: "ClipFront | None", cfg: ModalityConfig
    ) -> "Tokenizer":
        raise NotImplementedError

    def default_pool(self, init: str) -> str:
        return "cls" if init in ("clip", "file") else "mean"

    # -- helpers ---------------------------------------------------------------------------
    def config(self, **overrides: Any) -> ModalityConfig:
        return self.Config(**overrides)

    def seed(self, spec: "EncoderSpec", cfg: ModalityConfig) -> int:
        """The deterministic seed of this modality's seeded tokenizer."""
        text = canonical_json({"modality": self.name, "dim": spec.dim, "patch": spec.patch,
                               "config": cfg.to_dict()})
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)

    def __repr__(self) -> str:
        return f"<modality {self.name}>"


# ----------------------------------------------------------------------------------------------
# The load guard: decoder warnings become facts, every sample is checked for content
# ----------------------------------------------------------------------------------------------

# Warnings about the code rather than the data: not facts about a file, and not shown either.
_CODE_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning,
                  ResourceWarning, SyntaxWarning)
MAX_NOTES = 8  # distinct decoder warnings kept per sample (each with its count)


class DecoderNotes(logging.Handler):
    """Collects the warnings and WARNING+ log records raised while decoding: distinct messages
    (bounded), each with a count."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: dict[str, int] = {}

    def add(self, text: str) -> None:
        text = " ".join(text.split())[:300]
        if text in self.seen or len(self.seen) < MAX_NOTES:
            self.seen[text] = self.seen.get(text, 0) + 1

    def emit(self, record: logging.LogRecord) -> None:  # logging.Handler
        with contextlib.suppress(Exception):
            self.add(f"{record.name}: {record.getMessage()}")

    def take(self) -> list[str]:
        out = [t if n == 1 else f"{t} (x{n})" for t, n in self.seen.items()]
        self.seen.clear()
        return out

    @contextlib.contextmanager
    def capture(self):
        """Warnings and log records inside the block go here instead of stderr."""
        root = logging.getLogger()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            for cat in _CODE_WARNINGS:
                warnings.simplefilter("ignore", cat)
            warnings.showwarning = lambda message, category, *a, **k: self.add(
                f"{category.__name__}: {message}")
            root.addHandler(self)
            try:
                yield self
            finally:
                root.removeHandler(self)


@contextlib.contextmanager
def quiet():
    """Drop warnings and library log records raised inside the block: for sniffing, which opens
    decoders (tifffile, scipy.io) but has no sample to record them on."""
    with DecoderNotes().capture():
        yield


def _guarded_load(fn):
    """Wrap a modality's ``load``: decode step by step under :class:`DecoderNotes`, attach what
    they caught to the sample (``decoder_warnings``), and check every sample for content."""

    @functools.wraps(fn)
    def load(self, path, cfg, sniffed=None):
        notes = DecoderNotes()
        gen = fn(self, path, cfg, sniffed)
        try:
            while True:
                with notes.capture():
                    try:
                        sample = next(gen)
                    except StopIteration:
                        return
                self.check_sample(sample)
                caught = notes.take()
                if caught:
                    sample.meta.setdefault("decoder_warnings", []).extend(caught)
                yield sample
        finally:
            gen.close()

    load._guarded = True
    return load


# ----------------------------------------------------------------------------------------------
# Tokenizer base and shared pieces
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int):
    """Build modules under a fixed CPU RNG state without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes), in a stable order."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # no copy
    return h.hexdigest()


class Tokenizer(nn.Module):
    """Base of every Data2Seq tokenizer: ``forward(inputs) -> Tokens``.

    ``init`` is ``clip`` (taken from a CLIP vision tower), ``seeded`` (deterministic random init
    from ``seed``) or ``file`` (a tokenizer checkpoint the user passed).
    """

    init: str = "seeded"
    seed: int | None = None
    # init=file: the fitted tokenizer file's path, sha256, training metadata and pooling (mtx.fit)
    file_info: dict[str, str] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "tokenizer": type(self).__name__,
            "init": self.init,
            "seed": -1 if self.seed is None else int(self.seed),
            "sha256": state_sha256(self),
            **(self.file_info or {}),
        }


def sinusoidal(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Fixed sinusoidal embedding of (possibly fractional) positions: [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    ang = positions.float()[..., None] * freqs.to(positions.device)
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def resize_pos_grid(pos: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a [H*W, D] positional table laid on a grid to [h*w, D]."""
    d = pos.shape[-1]
    grid = pos.reshape(1, old_hw[0], old_hw[1], d).permute(0, 3, 1, 2)
    if tuple(new_hw) != tuple(old_hw):
        grid = F.interpolate(grid, size=tuple(new_hw), mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(new_hw[0] * new_hw[1], d)


class ImagePatchTokenizer(Tokenizer):
    """ViT front end: Conv2d(3, D, p, p, bias=False) + CLS + learned positions + pre-LN.

    Takes ``pixels`` [R, 3, S, S] (uint8 0..255 or float 0..1) and normalises with the encoder
    preset's mean/std on the device. With a CLIP front the weights are CLIP's (``init=clip``).
    Image, infrared and X-ray share it (and so share the CLIP weights).
    """

    def __init__(self, spec: "EncoderSpec", front: "ClipFront | None", seed: int):
        super().__init__()
        d, p, g = spec.dim, spec.patch, spec.img_size // spec.patch
        self.grid = g
        with seeded(seed):
            self.proj = nn.Conv2d(3, d, p, p, bias=False)
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.pos = nn.Parameter(torch.randn(1 + g * g, d) * 0.02)
            self.norm_pre = nn.LayerNorm(d, eps=spec.eps)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        if front is not None:
            front.load_into(self)
            self.init, self.seed = "clip", None
        else:
            self.init, self.seed = "seeded", seed

    def normalize(self, px: torch.Tensor) -> torch.Tensor:
        x = px.float() / 255.0 if px.dtype == torch.uint8 else px.float()
        return (x - self.mean) / self.std

    def embed_patches(self, px: torch.Tensor) -> torch.Tensor:
        """[R, 3, S, S] pixels -> [R, g*g, D] patch tokens (no CLS, no positions)."""
        return self.proj(self.normalize(px)).flatten(2).transpose(1, 2)

    def positions(self, h: int, w: int) -> torch.Tensor:
        """[1 + h*w, D] positions: the table itself at the preset's grid, else resized bilinearly."""
        if (h, w) == (self.grid, self.grid):
            return self.pos
        grid = resize_pos_grid(self.pos[1:], (self.grid, self.grid), (h, w))
        return torch.cat([self.pos[:1], grid])

    def forward(self, inputs: dict[str, torch.Tensor]) -> Tokens:
        px = inputs["pixels"]
        p = self.proj.kernel_size[0]
        x = self.embed_patches(px)
        cls = self.cls.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positions(px.shape[-2] // p, px.shape[-1] // p)
        return Tokens(self.norm_pre(x), None, True)


@dataclass
class GreyFrameConfig(ModalityConfig):
    """Preprocessing of single-channel frames (thermal, radiographs) for the image front end."""

    size: int = setting(224, lo=16, hi=4096)  # resize short side, centre-crop to size x size
    lo_percentile: float = setting(1.0, lo=0, hi=100)  # robust min-max: this percentile maps to 0...
    hi_percentile: float = setting(99.0, lo=0, hi=100)  # ... and this one to 1

    def check(self) -> None:
        check_percentiles(self)


def check_percentiles(cfg) -> None:
    """``lo_percentile`` must be below ``hi_percentile`` (UsageError)."""
    if cfg.lo_percentile >= cfg.hi_percentile:
        raise OptionError(f"{cfg.owner}.lo_percentile ({cfg.lo_percentile:g}) must be below "
                          f"{cfg.owner}.hi_percentile ({cfg.hi_percentile:g})")


class PatchImageModality(Modality):
    """Base of the picture-like modalities (image, infrared, xray): they end in ``pixels``
    [S, 3, size, size] and share the CLIP-initialisable :class:`ImagePatchTokenizer`."""

    clip_init = True

    def cost(self, sample: Sample, spec, cfg) -> int:
        h, w = sample.arrays["pixels"].shape[-2:]
        return 1 + (h // spec.patch) * (w // spec.patch)

    def tokenizer(self, spec, front, cfg):
        return ImagePatchTokenizer(spec, front, self.seed(spec, cfg))

    @staticmethod
    def grey_sample(scaled, stats: dict, size: int, meta: dict) -> Sample:
        """A [0, 1] single-channel frame (robust-scaled) -> one sample of 3-channel pixels."""
        from ._imaging import float_to_pixels

        meta["normalisation"] = stats
        meta["preprocess"] = (f"robust min-max, grey -> 3 channels, short side {size} bicubic, "
                              f"centre crop {size}")
        return Sample("", {"pixels": float_to_pixels(scaled, size)[None]}, meta)
