"""Farthest-point sampling and kNN grouping: batched torch on any device, plus the loader's numpy FPS.

The file formats, the streaming subsample and mesh surface sampling live in
:mod:`mtx.modalities._pointio`; this module is the sampling arithmetic the point tokenizer and
the loader share. FPS starts from the point farthest from the centroid and ``argmax`` takes the
first index on ties, so given a canonical point order the picks depend only on the content.
"""
from __future__ import annotations

import numpy as np

_FPS_GRAPHS: dict = {}  # (shape, n, dtype, device) -> (graph, static input, static output)
_FPS_GRAPHS_OK = True
_FPS_GRAPHS_MAX = 8


def farthest_point_sample(xyz, n: int):
    """Batched farthest-point sampling: [B, N, 3] -> indices [B, n] (long), on xyz's device.

    Starts at the point farthest from the centroid; ``argmax`` takes the first index on ties,
    so the result depends only on the content given a canonical point order. The loop runs
    over the ``n`` samples, vectorised over batch and points, with preallocated buffers.
    ``n > N`` repeats the last pick. On CUDA the loop (a few tiny kernels per sample, bound by
    launch overhead) is captured once per shape as a CUDA graph and replayed: ~4x faster.
    """
    global _FPS_GRAPHS_OK
    if xyz.is_cuda and _FPS_GRAPHS_OK and n >= 32:
        try:
            return _fps_graph(xyz, n)
        except RuntimeError:  # capture unsupported here (nested capture, old driver...): eager
            _FPS_GRAPHS_OK = False
            _FPS_GRAPHS.clear()
    return _fps_eager(xyz, n)


def _fps_graph(xyz, n: int):
    import torch

    key = (tuple(xyz.shape), n, xyz.dtype, str(xyz.device))
    hit = _FPS_GRAPHS.get(key)
    if hit is None:
        with torch.cuda.device(xyz.device):
            static_in = xyz.detach().clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
                _fps_eager(static_in, n)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = _fps_eager(static_in, n)
        if len(_FPS_GRAPHS) >= _FPS_GRAPHS_MAX:
            _FPS_GRAPHS.pop(next(iter(_FPS_GRAPHS)))
        hit = _FPS_GRAPHS[key] = (graph, static_in, static_out)
    graph, static_in, static_out = hit
    static_in.copy_(xyz)
    graph.replay()
    return static_out.clone()


def _fps_eager(xyz, n: int):
    import torch

    b, npts, _ = xyz.shape
    cols = xyz.transpose(1, 2).contiguous()  # [B, 3, N]: per-coordinate rows vectorise better
    diff = torch.empty_like(cols)
    d = torch.empty(b, npts, dtype=xyz.dtype, device=xyz.device)
    torch.sub(cols, cols.mean(2, keepdim=True), out=diff)
    cur = diff.square_().sum(1).argmax(1)
    mind = torch.full((b, npts), float("inf"), dtype=xyz.dtype, device=xyz.device)
    out = torch.empty(b, n, dtype=torch.long, device=xyz.device)
    for i in range(n):
        out[:, i] = cur
        p = cols.gather(2, cur.view(b, 1, 1).expand(b, 3, 1))  # [B, 3, 1]
        torch.sub(cols, p, out=diff)
        torch.sum(diff.square_(), 1, out=d)
        torch.minimum(mind, d, out=mind)
        cur = mind.argmax(1)
    return out


def fps_numpy(xyz: np.ndarray, n: int) -> np.ndarray:
    """The same FPS for one cloud [N, 3] in numpy (the loader's: no torch threads in workers).

    Identical picks to :func:`farthest_point_sample` for the same float64 input.
    """
    cols = np.ascontiguousarray(xyz.T, dtype=np.float64)
    npts = cols.shape[1]
    d, tmp = np.empty(npts), np.empty(npts)

    def dist_to(q: np.ndarray) -> np.ndarray:
        np.subtract(cols[0], q[0], out=d)
        np.multiply(d, d, out=d)
        for c in (1, 2):
            np.subtract(cols[c], q[c], out=tmp)
            np.multiply(tmp, tmp, out=tmp)
            d.__iadd__(tmp)
        return d

    cur = int(dist_to(cols.mean(axis=1)).argmax())
    mind = np.full(npts, np.inf)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = cur
        np.minimum(mind, dist_to(cols[:, cur]), out=mind)
        cur = int(mind.argmax())
    return out


def knn(points, centres, k: int):
    """Indices [B, G, k] of the ``k`` points nearest to each centre.

    Exact squared distances summed per coordinate (no ``|a|^2 - 2ab + |b|^2`` cancellation),
    the same arithmetic as FPS; memory ~2 x [B, G, N].
    """
    d = None
    for c in range(3):
        diff = centres[:, :, None, c] - points[:, None, :, c]
        d = diff.square_() if d is None else d.add_(diff.square_())
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def gather_points(points, idx):
    """points [B, N, C], idx [B, ...] -> [B, ..., C]."""
    b, c = points.shape[0], points.shape[-1]
    flat = idx.reshape(b, -1)
    out = points.gather(1, flat[..., None].expand(-1, -1, c))
    return out.reshape(*idx.shape, c)
