"""The training loop of ``mtx fit``: batches, schedule, steps, validation, checkpoints, the file.

Batches come from the pipeline's :class:`mtx.pipeline.Batcher` (the same (modality, batch key)
buckets as ``mtx embed``), sized for the optimizer: exactly ``--batch-size`` rows, no token
budget. Inputs are collated by the :class:`mtx.pipeline.Embedder` that also computes the
validation vectors, so training and ``embed --tokenizer`` see the same tensors.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import EvalVectors, info_metric
from .options import FitInterrupted, FitOptions, ProgressFn
from .prepare import FitData

MIN_BATCH = 2  # contrastive negatives; the head's BatchNorm


@dataclass
class RunInfo:
    """What a run is, beyond its options: where it writes and what it trains against."""

    output: Path
    work: Path
    run_sha: str
    enc_sha: str
    start_init: str  # "clip" or "seeded"
    pool_mode: str
    dtype_name: str
    cfg: Any  # the modality config
    cfg_over: dict[str, Any]
    hyper: dict[str, Any]


def plan(data: FitData, keys: list, batcher_of, modality: str, batch_size: int, seed: int, epoch: int
         ) -> list[list[int]]:
    """This epoch's batches, the same for the same seed: the training samples in a seeded order
    through a :class:`~mtx.pipeline.Batcher` (one bucket per batch key, closed at
    ``batch_size`` rows); what is left of a key with fewer than :data:`MIN_BATCH` samples (series
    of a rare length, say) goes into mixed batches, which a step runs as one sub-batch per key.
    Batch order shuffled."""
    rng = np.random.default_rng([seed, epoch, 1])
    batcher = batcher_of(len(data.train))
    batches: list[list[int]] = []
    for j in rng.permutation(len(data.train)):
        i = data.train[j]
        if (b := batcher.add(i, modality, data.cache.get(i), keys[i])) is not None:
            batches.append([o for o, _ in b.entries])
    rest: list[int] = []
    for b in batcher.drain():
        owners = [o for o, _ in b.entries]
        if len(owners) >= MIN_BATCH:
            batches.append(owners)
        else:
            rest.extend(owners)
    if rest:
        mixed = _cut(rest, [data.cache.get(i).n_segments for i in rest], batch_size)
        if len(mixed[-1]) < MIN_BATCH and (len(mixed) > 1 or batches):
            (mixed[-2] if len(mixed) > 1 else batches[-1]).extend(mixed.pop())
        batches += [m for m in mixed if len(m) >= MIN_BATCH]
    return [batches[j] for j in rng.permutation(len(batches))]


def _cut(order: list[int], segs: list[int], rows: int) -> list[list[int]]:
    """``order`` in consecutive groups of about ``rows`` rows (the leftovers of several keys)."""
    out: list[list[int]] = [[]]
    n = 0
    for i, k in zip(order, segs, strict=True):
        if out[-1] and n + k > rows and len(out[-1]) >= MIN_BATCH:
            out.append([])
            n = 0
        out[-1].append(i)
        n += k
    return out


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# The head's learning rate is --lr x min(1, HEAD_LR_WIDTH / D). The head is a linear layer on D
# BatchNorm-standardised coordinates, zero at the start: one AdamW step moves each weight by about
# the learning rate, so each logit by about lr x D (the output-layer rule of muP: Adam's rate for a
# readout goes as 1 / fan-in). At the width the defaults were set on (the tiny encoder, 64) that is
# the tokenizer's rate; at B/16 (768) the full rate let the head memorise a small training set in a
# few steps, its gradient then told the tokenizer nothing about the classes, and the fitted
# tokenizer probed no better than the seeded one (benchmarks/RESULTS.md 7a).
HEAD_LR_WIDTH = 64


def head_lr_scale(dim: int) -> float:
    return min(1.0, HEAD_LR_WIDTH / dim)


def optimizer(tok, head, dim: int, lr: float, weight_decay: float):
    """AdamW over the tokenizer (at ``lr``) and the head (at ``lr`` x :func:`head_lr_scale`); each
    group's ``lr_scale`` is what the schedule multiplies."""
    groups = [{**g, "lr_scale": 1.0} for g in param_groups([tok], weight_decay)]
    groups += [{**g, "lr_scale": head_lr_scale(dim)} for g in param_groups([head], weight_decay)]
    return adamw([g for g in groups if g["params"]], lr)


def param_groups(modules, weight_decay: float) -> list[dict[str, Any]]:
    """Decay the weights of linear and convolution layers; not norms, biases, embedding tables,
    positions or CLS vectors (decaying a table decays every row a batch did not use)."""
    from torch import nn

    decay, keep = [], []
    for mod in modules:
        decayed = {id(m.weight) for m in mod.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))}
        for p in mod.parameters():
            if p.requires_grad:
                (decay if id(p) in decayed else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def adamw(groups: list[dict[str, Any]], lr: float):
    """AdamW, fused where torch has the kernel (7x faster on CPU for a 49k-row token table)."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), foreach=True)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


class Trainer:
    """One fit: the tokenizer and head, the optimizer, the epoch state and its checkpoint."""

    def __init__(self, opts: FitOptions, model, mod, data: FitData, info: RunInfo, front=None):
        import torch

        from ..modalities._base import seeded
        from .heads import make_head

        self.opts, self.model, self.mod, self.data, self.info = opts, model, mod, data, info
        self.supervised = opts.objective == "supervised"
        self.regression = self.supervised and opts.task == "regression"
        self.target_stats = data.target_stats
        self.dev = dev = model.device
        self.tok = mod.tokenizer(model.spec, front, info.cfg).to(dev).train().requires_grad_(True)
        self.head_kind = "linear" if self.supervised else "projection"
        self.head_out = (1 if self.regression else len(data.classes)) if self.supervised else opts.proj_dim
        with seeded(opts.seed):
            self.head = make_head(self.head_kind, model.spec.dim, self.head_out).to(dev)
        self.optim = optimizer(self.tok, self.head, model.spec.dim, opts.lr, opts.weight_decay)
        # float16 (CUDA) gradients through the frozen blocks can underflow: scale the loss. A no-op otherwise.
        self.scaler = torch.amp.GradScaler(dev.type, enabled=model.dtype == torch.float16)
        self.ev = EvalVectors(model, self.tok, opts.modality, info.cfg, info.cfg_over, info.pool_mode, opts.batch_size)
        self.emb = self.ev.emb
        self.cls_index = {c: i for i, c in enumerate(data.classes)}
        self.keys = [mod.batch_key(data.cache.get(i)) for i in range(len(data.decoded))]
        self.total = sum(len(self.plan(e)) for e in range(opts.epochs)) if data.train else 0
        self.warm = max(1, int(round(opts.warmup * self.total)))
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "best": None, "history": [], "bad": 0}

    def batcher(self, n: int):
        """The pipeline's batcher with the optimizer's limits: a bucket closes at exactly
        ``--batch-size`` rows (no token budget: the batch size is a hyperparameter here), and
        never early for a full buffer (all ``n`` samples of an epoch are planned at once)."""
        from ..pipeline import Batcher, BatchLimits

        b = self.opts.batch_size
        return Batcher(BatchLimits(rows=b, tokens=0, max_rows=b, queue=n + 1, queue_tokens=0), self.emb.cost)

    def plan(self, epoch: int) -> list[list[int]]:
        o = self.opts
        return plan(self.data, self.keys, self.batcher, o.modality, o.batch_size, o.seed, epoch)

    # -- forward and loss ------------------------------------------------------------------
    def targets(self, batch: list[int]):
        import torch

        lab = self.data.labels
        if self.regression:
            t = self.target_stats
            return torch.tensor([(float(lab[i]) - t["mean"]) / t["std"] for i in batch], dtype=torch.float32,
                                device=self.dev)
        return torch.tensor([self.cls_index[lab[i]] for i in batch], dtype=torch.long, device=self.dev)

    def forward(self, samples: list) -> Any:
        """Pooled vectors of ``samples`` in order: one tokenizer/encoder pass per batch key."""
        import torch

        from .heads import pooled

        parts: dict[Any, list[int]] = {}
        for j, s in enumerate(samples):
            parts.setdefault(self.mod.batch_key(s), []).append(j)
        outs, order = [], []
        for idx in parts.values():
            sub = [samples[j] for j in idx]
            inputs = self.emb.prepare(self.opts.modality, sub)
            outs.append(pooled(self.model, self.tok, inputs, [s.n_segments for s in sub], self.info.pool_mode,
                               self.opts.grad_checkpointing))
            order += idx
        v = outs[0] if len(outs) == 1 else torch.cat(outs)
        if order != sorted(order):
            v = v[torch.argsort(torch.tensor(order, device=v.device))]
        return v

    def loss_of(self, batch: list[int], epoch: int, step: int):
        import torch.nn.functional as F

        from .augment import augment
        from .heads import info_nce

        samples = [self.data.cache.get(i) for i in batch]
        if self.supervised:
            out = self.head(self.forward(samples))
            if self.regression:
                return F.mse_loss(out[:, 0], self.targets(batch))
            return F.cross_entropy(out, self.targets(batch))
        seed = self.opts.seed
        v1 = augment(self.opts.modality, samples, np.random.default_rng([seed, epoch, step, 1]))
        v2 = augment(self.opts.modality, samples, np.random.default_rng([seed, epoch, step, 2]))
        z = self.head(self.forward(v1 + v2))
        return info_nce(z[:len(batch)], z[len(batch):], self.opts.temperature)

    def step(self, batch: list[int], epoch: int, bi: int) -> tuple[float, float]:
        """One optimizer step on ``batch``; (loss, learning rate)."""
        import torch

        lr = lr_at(self.state["step"], self.total, self.warm, self.opts.lr)
        for g in self.optim.param_groups:
            g["lr"] = lr * g["lr_scale"]
        loss = self.loss_of(batch, epoch, bi)
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optim)
        torch.nn.utils.clip_grad_norm_([p for g in self.optim.param_groups for p in g["params"]], 1.0, foreach=True)
        self.scaler.step(self.optim)
        self.scaler.update()
        self.state["step"] += 1
        return loss.item(), lr

    def evaluate(self) -> dict[str, Any]:
        """The validation metric (higher is better) and loss of the current tokenizer."""
        self.tok.eval()
        self.head.eval()
        try:
            return info_metric(self) if self.data.val else {"metric": None, "loss": None}
        finally:
            self.tok.train()
            self.head.train()

    # -- epochs ----------------------------------------------------------------------------
    def run(self, emit: ProgressFn) -> None:
        """Epochs until ``--epochs`` or early stopping; Ctrl-C writes the best so far and raises."""
        self.model.encoder.eval()
        try:
            while self.state["epoch"] < self.opts.epochs and not self._stop_early():
                self.epoch(emit)
        except KeyboardInterrupt:
            best = self.state["best"]
            if best is None:
                raise FitInterrupted("interrupted before the first epoch ended: nothing written; rerun the same "
                                     "command to start again (from the checkpoint, if one was written)") from None
            self.write(False)
            raise FitInterrupted(f"interrupted: the best tokenizer so far (epoch {best['epoch']}, validation "
                                 f"{best.get('name') or 'metric'} {_fmt(best['metric'])}) is in {self.info.output}; "
                                 "rerun the same command to resume from the last checkpoint") from None

    def _stop_early(self) -> bool:
        # Never in the first half: a plateau before the schedule's peak is common (an interaction
        # to discover), and a small validation split is noisy.
        o, st = self.opts, self.state
        return bool(o.patience and st["bad"] >= o.patience and self.data.val and st["epoch"] >= o.epochs // 2)

    def epoch(self, emit: ProgressFn) -> None:
        st = self.state
        epoch = st["epoch"]
        te = time.monotonic()
        batches = self.plan(epoch)
        losses = []
        for bi, batch in enumerate(batches):
            loss, lr = self.step(batch, epoch, bi)
            losses.append(loss)
            emit({"event": "step", "epoch": epoch, "step": bi + 1, "steps": len(batches), "loss": loss, "lr": lr,
                  "batch": batch})
        m = self.evaluate()
        m.update(epoch=epoch + 1, train_loss=float(np.mean(losses)) if losses else None)
        st["history"].append({k: m.get(k) for k in ("epoch", "train_loss", "loss", "metric")})
        if self._better(m, st["best"]):
            st["best"] = {**self.snapshot(), **{k: m.get(k) for k in ("epoch", "metric", "name", "loss")}}
            st["bad"] = 0
        else:
            st["bad"] += 1
        st["epoch"] = epoch + 1
        self.save_checkpoint()
        emit({"event": "epoch", "epoch": epoch + 1, "epochs": self.opts.epochs, "train_loss": m["train_loss"],
              "val_loss": m.get("loss"), "metric": m.get("metric"), "metric_name": m.get("name"),
              "best_epoch": st["best"]["epoch"], "best_metric": st["best"]["metric"], "seconds": time.monotonic() - te})

    @staticmethod
    def _better(m: dict[str, Any], best: dict[str, Any] | None) -> bool:
        if best is None or m["metric"] is None:  # no validation split: the last epoch is the result
            return True
        if m["metric"] != best["metric"]:
            return m["metric"] > best["metric"]
        return m.get("loss") is not None and best.get("loss") is not None and m["loss"] < best["loss"]

    def snapshot(self) -> dict[str, Any]:
        return {"tokenizer": {k: v.detach().cpu().clone() for k, v in self.tok.state_dict().items()},
                "head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}}

    def use_best(self) -> None:
        best = self.state["best"]
        self.tok.load_state_dict(best["tokenizer"])
        self.head.load_state_dict(best["head"])
        self.tok.eval()
        self.head.eval()

    # -- checkpoint and file ---------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.info.work / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        import torch

        st = self.state
        blob = {"run_sha256": self.info.run_sha, "tokenizer": self.tok.state_dict(), "head": self.head.state_dict(),
                "optimizer": self.optim.state_dict(), **{k: st[k] for k in ("epoch", "step", "history", "bad", "best")}}
        tmp = self.info.work / f"checkpoint.pt.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint_path)

    def resume(self, ckpt: dict[str, Any]) -> None:
        self.tok.load_state_dict(ckpt["tokenizer"])
        self.head.load_state_dict(ckpt["head"])
        self.optim.load_state_dict(ckpt["optimizer"])
        self.state = {k: ckpt[k] for k in self.state}

    def meta(self, complete: bool, report: dict[str, Any] | None) -> dict[str, Any]:
        from .. import __version__
        from .augment import DESCRIPTIONS

        o, d, info, best = self.opts, self.data, self.info, self.state["best"]
        used = [d.decoded.ids[i] for i in d.index]
        return {
            "format_version": 1, "mtx_version": __version__, "complete": complete, "run_sha256": info.run_sha,
            "modality": o.modality, "tokenizer": type(self.tok).__name__, "init": info.start_init,
            "encoder": {"preset": self.model.spec.name, "weights_sha256": info.enc_sha,
                        "weights_source": self.model.weights.source, "geometry": self.model.spec.geometry()},
            "config": info.cfg.to_dict(), "pool": info.pool_mode, "dtype": info.dtype_name, "objective": o.objective,
            "task": o.task if self.supervised else None,
            "head": {"kind": self.head_kind, "out": self.head_out,
                     **({"target": self.target_stats} if self.target_stats else {})},
            "labels": d.classes, "label_source": ("target:" + o.target if o.target else o.labels
                                                  if o.labels in (None, "folders") else Path(o.labels).name),
            "augmentations": None if self.supervised else DESCRIPTIONS.get(o.modality, ""),
            "data": {"count": len(used), "ids_sha256": hashlib.sha256("\n".join(used).encode()).hexdigest(),
                     "n_train": len(d.train), "n_val": len(d.val)},
            "hyperparameters": {k: v for k, v in info.hyper.items() if k not in ("objective", "task")},
            "seed": o.seed, "epochs": len(self.state["history"]),
            "best": {k: best.get(k) for k in ("epoch", "metric", "name", "loss")},
            "history": self.state["history"], "report": report,
        }

    def write(self, complete: bool, report: dict[str, Any] | None = None) -> str:
        """The best tokenizer + head so far as the tokenizer file; returns its sha256."""
        from .bundle import write_bundle

        best, m = self.state["best"], self.opts.modality
        tensors = {f"tokenizers.{m}.{k}": v.float() if v.is_floating_point() else v
                   for k, v in best["tokenizer"].items()}
        tensors.update({f"heads.{m}.{k}": v.float() if v.is_floating_point() else v for k, v in best["head"].items()})
        self.info.output.parent.mkdir(parents=True, exist_ok=True)
        return write_bundle(self.info.output, tensors, self.meta(complete, report))
