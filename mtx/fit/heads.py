"""Task heads, losses and the differentiable tokenizer -> frozen encoder -> pooled vector path.

The encoder's parameters never receive a gradient (``requires_grad`` False, eval mode), but
the graph runs through it, so the tokenizer learns what the frozen blocks make of its tokens.
:func:`pooled` computes exactly what :class:`mtx.pipeline.Embedder` computes (tokenizer under
the model's autocast, the block stack in the model's dtype, pooling after the final LayerNorm,
segments of a sample averaged), with autograd on and optional gradient checkpointing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

HEAD_KINDS = ("linear", "projection")


class LinearHead(nn.Module):
    """Linear classifier (``out`` = classes) or regressor (``out`` = 1) on the pooled vector,
    behind a BatchNorm without affine parameters (as MAE's linear probe): pooled vectors of a
    frozen encoder share a large common component and differ in a small one, which a plain
    linear layer (and the gradient it sends back to the tokenizer) would see only faintly."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.fc = nn.Linear(dim, out)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(v))


class ProjectionHead(nn.Module):
    """The contrastive objective's small projection head: BatchNorm (no affine, as in
    :class:`LinearHead`) then Linear(D, out). InfoNCE runs on its output; the pooled vector
    before it is what embed stores. A linear head (rather than SimCLR's two-layer one) leaves
    the invariances the objective teaches in the pooled vector, where k-NN search sees them."""

    def __init__(self, dim: int, out: int = 128):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.fc = nn.Linear(dim, out)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(v))


def make_head(kind: str, dim: int, out: int) -> nn.Module:
    return LinearHead(dim, out) if kind == "linear" else ProjectionHead(dim, out)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric NT-Xent over 2B views: each view's positive is the other view of its sample,
    the other 2B - 2 views are negatives."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def encode(encoder, x: torch.Tensor, pad_mask: torch.Tensor | None, checkpoint: bool) -> torch.Tensor:
    """The frozen encoder with autograd: the same mask rule as ``Encoder.forward``; with
    ``checkpoint`` each block's activations are recomputed in the backward pass instead of kept."""
    if not checkpoint:
        return encoder(x, pad_mask)
    attn_mask = None
    if pad_mask is not None and bool(pad_mask.any()):
        attn_mask = (~pad_mask)[:, None, None, :]
    for blk in encoder.blocks:
        x = _checkpoint(blk, x, use_reentrant=False, attn_mask=attn_mask)
    return encoder.norm(x)


def pooled(model, tok, inputs: dict[str, torch.Tensor], segments: list[int], pool_mode: str,
           checkpoint: bool = False) -> torch.Tensor:
    """[n samples, D] float32 vectors with autograd through ``tok`` (the encoder is frozen)."""
    from ..encoder import pool

    with model.autocast():
        tokens = tok(inputs)
    hidden = encode(model.encoder, tokens.x.to(model.dtype), tokens.pad_mask, checkpoint).float()
    rows = pool(hidden, tokens, pool_mode).float()
    if len(segments) == rows.shape[0]:
        return rows
    segs = torch.tensor(segments, device=rows.device)
    owner = torch.repeat_interleave(torch.arange(len(segments), device=rows.device), segs)
    vecs = torch.zeros(len(segments), rows.shape[1], device=rows.device, dtype=rows.dtype).index_add(0, owner, rows)
    return vecs / segs[:, None].to(vecs.dtype)
