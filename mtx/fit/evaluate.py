"""Validation of a tokenizer being fitted: its vectors exactly as ``embed --tokenizer`` computes
them, the per-epoch metric, and the final report in ``mtx probe``'s terms."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import TokenizeError
from ..modalities._base import Sample


def embed_samples(emb, modality: str, samples: Sequence[Sample]) -> tuple[np.ndarray, dict[int, str]]:
    """Vectors [n, D] of ``samples`` in order, batched as ``mtx embed`` batches them (the
    :class:`mtx.pipeline.Embedder`'s batcher: batch keys, rows and token budget). Returns the
    vectors and {index: "stage: message"} for samples that failed (their rows stay zero)."""
    out = np.zeros((len(samples), emb.model.spec.dim), np.float32)
    failed: dict[int, str] = {}
    for res in emb.embed_stream((i, modality, s) for i, s in enumerate(samples)):
        for entries, vecs, _, _ in res.rows:
            out[[i for i, _ in entries]] = vecs
        failed.update({i: f"{stage}: {message}" for i, stage, message in res.errors})
    return out, failed


class EvalVectors:
    """The embed path (:class:`mtx.pipeline.Embedder`) with the tokenizer being trained installed
    in the model, so validation vectors are what ``embed --tokenizer`` will give."""

    def __init__(self, model, tok, modality: str, cfg, cfg_over: dict, pool_mode: str, batch_size: int):
        from ..modalities._base import canonical_json
        from ..pipeline import Embedder, EmbedOptions

        self.key = (modality, canonical_json(cfg.to_dict()))
        self.model, self.before = model, model.tokenizers.get(self.key)
        model.tokenizers[self.key] = tok
        self.emb = Embedder(model, EmbedOptions(pool=pool_mode, options={modality: cfg_over}, batch_size=batch_size))
        self.modality = modality

    def uninstall(self) -> None:
        """Give the model back its own tokenizer for this modality."""
        if self.before is None:
            self.model.tokenizers.pop(self.key, None)
        else:
            self.model.tokenizers[self.key] = self.before

    def vectors(self, samples: Sequence[Sample]) -> np.ndarray:
        x, failed = embed_samples(self.emb, self.modality, samples)
        if failed:  # decoded samples the tokenizer cannot take: the training would fail on them too
            i, why = next(iter(failed.items()))
            raise TokenizeError(f"a validation sample failed ({why})")
        return x


def retrieval(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 accuracy of finding each sample's other view among all second views: cosine of
    the vectors standardised together (the pooled vectors share a large common component)."""
    both = np.concatenate([a, b])
    mu, sd = both.mean(0), both.std(0) + 1e-6
    a, b = (a - mu) / sd, (b - mu) / sd
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((np.argmax(an @ bn.T, axis=1) == np.arange(len(a))).mean())


def loo_knn(x: np.ndarray, y: list[str], k: int = 5) -> float:
    """Leave-one-out cosine k-NN accuracy (the contrastive objective's validation metric)."""
    if len(x) < 2:
        return 0.0
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    kk = min(k, len(x) - 1)
    nn_idx = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
    ya = np.array(y)
    hits = 0
    for i in range(len(x)):
        vals, counts = np.unique(ya[nn_idx[i]], return_counts=True)
        hits += vals[np.argmax(counts)] == ya[i]
    return float(hits / len(x))


def r2_score(y, pred) -> float:
    """R² of ``pred`` for ``y`` (numpy arrays or torch tensors)."""
    ss = float(((y - y.mean()) ** 2).sum()) or 1.0
    return 1 - float(((y - pred) ** 2).sum()) / ss


def info_metric(tr) -> dict[str, Any]:
    """The validation metric (higher is better), its name and the loss, for the tokenizer and
    head of ``tr`` (a :class:`mtx.fit.loop.Trainer`, in eval mode): accuracy or R² of the head
    (supervised); k-NN accuracy when there are labels, else the retrieval of each sample's
    other augmented view (contrastive)."""
    import torch
    import torch.nn.functional as F

    from .augment import augment
    from .heads import info_nce

    d, dev, seed = tr.data, tr.dev, tr.opts.seed
    vs = [d.cache.get(i) for i in d.val]
    x = tr.ev.vectors(vs)
    with torch.no_grad():
        if tr.supervised:
            out = tr.head(torch.from_numpy(x).to(dev)).float()
            y = tr.targets(d.val)
            if tr.regression:
                return {"metric": r2_score(y, out[:, 0]), "name": "r2", "loss": float(F.mse_loss(out[:, 0], y))}
            return {"metric": float((out.argmax(1) == y).float().mean()), "name": "accuracy",
                    "loss": float(F.cross_entropy(out, y))}
        if d.has_labels and all(d.labels[i] is not None for i in d.val):
            return {"metric": loo_knn(x, [d.labels[i] for i in d.val]), "name": "knn_accuracy", "loss": None}
        a = tr.ev.vectors(augment(tr.opts.modality, vs, np.random.default_rng([seed, 10**6, 1])))
        b = tr.ev.vectors(augment(tr.opts.modality, vs, np.random.default_rng([seed, 10**6, 2])))
        za, zb = tr.head(torch.from_numpy(a).to(dev)), tr.head(torch.from_numpy(b).to(dev))
        return {"metric": retrieval(a, b), "name": "view_retrieval", "loss": float(info_nce(za, zb, tr.opts.temperature))}


def final_report(tr, xv: np.ndarray) -> dict[str, Any] | None:
    """The validation split reported as ``mtx probe`` reports a store: the head (supervised), a
    linear probe and k-NN fitted on the training vectors, with the chance level. ``tr`` is the
    :class:`mtx.fit.loop.Trainer` holding the best tokenizer and head."""
    import torch

    from ..probe import _scores, probe_split

    d = tr.data
    if not d.val or not d.has_labels:
        return None
    if tr.regression:
        with torch.no_grad():
            pred = tr.head(torch.from_numpy(xv).to(tr.dev))[:, 0].cpu().numpy()
        pred = pred * tr.target_stats["std"] + tr.target_stats["mean"]
        y = np.array([float(d.labels[i]) for i in d.val])
        return {"protocol": "train/validation split", "n": len(d.val),
                "head": {"r2": r2_score(y, pred), "mae": float(np.abs(y - pred).mean())}}
    xt = tr.ev.vectors([d.cache.get(i) for i in d.train])
    out = probe_split(xt, [d.labels[i] for i in d.train], xv, [d.labels[i] for i in d.val], seed=tr.opts.seed)
    if tr.supervised:
        with torch.no_grad():
            pred = tr.head(torch.from_numpy(xv).to(tr.dev)).argmax(1).cpu().numpy()
        acc, f1 = _scores(np.array([d.classes.index(d.labels[i]) for i in d.val]), pred)
        out = {**out, "head": {"accuracy": acc, "macro_f1": f1}}
    return out
