"""The frozen shared encoder: timm Block stack, key-padding mask, final LayerNorm, pooling.

The encoder knows nothing about modalities. :class:`Model` bundles it with the weights'
provenance and builds (once, cached) each modality's tokenizer.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import nn

from .errors import DeviceError, UsageError, WeightsError
from .modalities import get_modality
from .modalities._base import ModalityConfig, Tokenizer, Tokens, state_sha256
from .weights import EncoderSpec, LoadedWeights, check_blocks, get_preset, resolve, weights_digest

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
POOLS = ("cls", "mean", "max")


class Encoder(nn.Module):
    """``nn.Sequential`` of timm Blocks (the official layout) + a final LayerNorm.

    ``norm`` is CLIP's ``ln_post`` when the weights carry it, else a unit LayerNorm, as the
    paper's ``y = LN(z_L)``.
    """

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.blocks = nn.Sequential(*[
            Block(spec.dim, spec.heads, spec.mlp_ratio, qkv_bias=True,
                  norm_layer=nn.LayerNorm, act_layer=nn.GELU)
            for _ in range(spec.depth)
        ])
        self.norm = nn.LayerNorm(spec.dim, eps=spec.eps)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N, D] tokens (+ [B, N] bool padding mask) -> [B, N, D] hidden after the final LN."""
        attn_mask = None
        if pad_mask is not None and bool(pad_mask.any()):
            # SDPA boolean mask: True = may attend. Shape [B, 1, 1, N] broadcasts over heads/queries.
            attn_mask = (~pad_mask)[:, None, None, :]
        return self.stack(x, attn_mask)

    def stack(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """The blocks and the final LN: the part ``Model.compile`` hands to ``torch.compile``
        (the data-dependent mask check above stays eager, so the graph never breaks)."""
        for blk in self.blocks:
            x = blk(x, attn_mask=attn_mask)
        return self.norm(x)


def pool(hidden: torch.Tensor, tokens: Tokens, mode: str) -> torch.Tensor:
    """[R, N, D] hidden -> [R, D]: CLS, or mean/max over non-padding, non-CLS tokens."""
    if mode == "cls":
        if not tokens.has_cls:
            raise UsageError("--pool cls needs a CLS token, which this tokenizer does not emit")
        return hidden[:, 0]
    start = 1 if tokens.has_cls and hidden.shape[1] > 1 else 0
    h = hidden[:, start:]
    keep = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
    if tokens.pad_mask is not None:
        keep = ~tokens.pad_mask[:, start:]
    if tokens.pool_mask is not None:
        keep = keep & tokens.pool_mask[:, start:]
    if mode == "mean":
        w = keep.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp_min(1)
    if mode == "max":
        return h.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1)
    raise UsageError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLS)}")


def resolve_device(device: str | None) -> torch.device:
    """``auto`` = CUDA when present; asking for CUDA without it is an error, never a fallback."""
    name = (device or os.environ.get("MTX_DEVICE") or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine "
                              "(no GPU or a CPU-only torch); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str | None, dev: torch.device) -> str:
    """``auto`` = bfloat16 on CUDA and on CPUs with native bf16 (AVX-512 BF16 / AMX), else float32.

    On such CPUs bf16 runs the B/16 encoder ~2.4x faster than float32 with pooled vectors at
    cosine >= 0.9999 (benchmarks/RESULTS.md); the resolved dtype is recorded in every output.
    """
    name = (dtype or "auto").lower()
    if name == "auto":
        fast = dev.type == "cuda" and torch.cuda.is_bf16_supported() or dev.type == "cpu" and cpu_has_fast_bf16()
        return "bfloat16" if fast else "float32"
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; choose auto or one of {', '.join(DTYPES)}")
    return name


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: bfloat16 matmuls run natively on this CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class Model:
    """A loaded encoder with its provenance, ready to tokenize and encode on one device."""

    spec: EncoderSpec
    encoder: Encoder
    weights: LoadedWeights
    device: torch.device
    dtype: torch.dtype
    tokenizers: dict[tuple[str, str], Tokenizer] = field(default_factory=dict)
    _encoder_sha: str | None = None

    @property
    def weights_source(self) -> str:
        return self.weights.source

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def tokenizer(self, modality: str, cfg: ModalityConfig) -> Tokenizer:
        """The modality's tokenizer for ``cfg``, built once, frozen, on the model's device."""
        from .modalities._base import canonical_json

        key = (modality, canonical_json(cfg.to_dict()))
        tok = self.tokenizers.get(key)
        if tok is None:
            mod = get_modality(modality)
            front = self.weights.front if mod.clip_init else None
            tok = mod.tokenizer(self.spec, front, cfg)
            state = self.weights.tokenizers.get(modality)
            if state is not None:
                try:
                    tok.load_state_dict(state, strict=True)
                except RuntimeError as e:
                    raise WeightsError(f"tokenizer weights for {modality} do not fit: "
                                       f"{str(e).splitlines()[0]}") from None
                tok.init, tok.seed = "file", None
                tok.file_info = self.weights.tokenizer_files.get(modality)
            tok.requires_grad_(False).eval().to(self.device)
            self.tokenizers[key] = tok
        return tok

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> torch.Tensor:
        """[R, N, D] tokens -> [R, N, D] float32 hidden states after the final LayerNorm.

        The encoder's weights are stored in the compute dtype (cast once at load): on CPUs with
        native bf16 this is ~1.3x faster than autocast, which re-casts 85M weights every call.
        """
        return self.encoder(tokens.x.to(self.dtype), tokens.pad_mask).float()

    def compile(self, backend: str = "inductor", mode: str | None = None) -> "Model":
        """Compile the block stack with ``torch.compile`` (``mtx embed --compile``).

        Shapes are dynamic (batch size and token count vary), so a run compiles a few graphs
        at most. The first batches pay the compile time (tens of seconds for B/16); the values
        are those of the eager encoder up to floating-point reassociation.
        """
        if getattr(self.encoder, "_mtx_compiled", False):
            return self
        self.encoder.stack = torch.compile(self.encoder.stack, backend=backend, mode=mode, dynamic=True)
        self.encoder._mtx_compiled = True
        return self

    def encoder_sha256(self) -> str:
        if self._encoder_sha is None:  # hashing 85M weights takes a while: once per model
            self._encoder_sha = state_sha256(self.encoder)
        return self._encoder_sha

    def describe(self) -> dict[str, Any]:
        return {
            "preset": self.spec.name,
            "geometry": self.spec.geometry(),
            "weights_source": self.weights.source,
            "weights_sha256": weights_digest(self.weights),
            "weights_files": self.weights.files,
            "encoder_sha256": self.encoder_sha256(),
            "device": self.device.type,
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def build_encoder(spec: EncoderSpec, lw: LoadedWeights) -> Encoder:
    """The frozen encoder for ``spec`` with ``lw``'s blocks (strict), or seeded blocks."""
    from .modalities._base import seeded

    if lw.blocks is not None:
        check_blocks(lw.blocks, spec, lw.files[0]["path"] if lw.files else "weights")
        # No random init of 85M weights only to overwrite them: build on the meta device and
        # take the checkpoint's tensors (strict: every key must be there).
        with torch.device("meta"):
            enc = Encoder(spec)
        enc.blocks.load_state_dict(lw.blocks, strict=True, assign=True)
        enc.norm.to_empty(device="cpu")
    else:
        with seeded(0x6D7478):  # "mtx": the seeded encoder is the same on every machine
            enc = Encoder(spec)
    if lw.norm is not None:
        with torch.no_grad():
            enc.norm.weight.copy_(lw.norm[0])
            enc.norm.bias.copy_(lw.norm[1])
    else:
        nn.init.ones_(enc.norm.weight)
        nn.init.zeros_(enc.norm.bias)
    return enc.requires_grad_(False).eval()


def load_model(
    model: str = "meta-b16",
    weights: str | list[str] | None = None,
    device: str | None = None,
    dtype: str = "float32",
    tokenizers: list[str] | None = None,
) -> Model:
    """Load a preset's encoder on a device.

    Args:
        model: preset name (``meta-b16``, ``meta-l14``, ``clip-b16``, ``clip-l14``, ``tiny``).
        weights: a path (or list of paths), ``"seeded"`` for an explicitly random, not
            pretrained encoder, or None to use ``MTX_WEIGHTS`` / the Hugging Face cache.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: compute dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (bf16 where the
            hardware runs it natively, else float32).
        tokenizers: fitted tokenizer files (``mtx fit``) to use instead of the built-in ones
            (the same as adding them to ``weights``).

    Returns:
        A :class:`Model`.

    Raises:
        WeightsError: weights missing, unsafe, corrupt or of another geometry; a tokenizer
            file trained against other encoder weights.
        DeviceError: the device or dtype is not available.

    Example:
        >>> m = load_model("tiny", weights="seeded", device="cpu")
        >>> m.spec.dim
        64
    """
    spec = get_preset(model)
    dev = resolve_device(device)
    dtype = resolve_dtype(dtype, dev)
    if dtype == "float16" and dev.type == "cpu":
        raise DeviceError("--dtype float16 needs a CUDA device; on CPU use bfloat16 or float32")
    wl = [weights] if isinstance(weights, str) else list(weights or [])
    lw = resolve(spec, [*wl, *(tokenizers or [])])
    enc = build_encoder(spec, lw).to(dev, DTYPES[dtype])
    m = Model(spec, enc, lw, dev, DTYPES[dtype])
    if lw.tokenizer_files:
        from .fit.bundle import check_encoder

        check_encoder(m)
    return m
