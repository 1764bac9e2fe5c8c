"""``mtx fit``: train one modality's tokenizer (and a head) against the frozen encoder.

A run, with ``OUT`` the tokenizer file::

    discover -> decode once (embed's decoders, worker processes) -> labels + report -> split
    -> epochs of AdamW steps (warm-up + cosine), each ending in a validation pass and a
       checkpoint in OUT.fit/ -> the best epoch's tokenizer + head -> OUT (safetensors)

Everything that decides the result enters a run hash, recorded in the checkpoint and in OUT:
rerunning the same command resumes from the last checkpoint (after a crash, kill -9 or
Ctrl-C), or reports the finished file without training again; other settings are refused
unless ``overwrite``. On CPU the same seed and data give the same file, byte for byte (batch
order, augmentations and head initialisation come from the seed; nothing time- or
machine-dependent is written), also across a resume.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MtxError, OutputLocked, UsageError
from .data import Decoded, Failure, SampleCache, decode_samples
from .labels import LabelReport, check_usable, match_labels, read_label_file, read_target

OBJECTIVES = ("supervised", "contrastive")
TASKS = ("classification", "regression")
POOLS = ("cls", "mean", "max")

ProgressFn = Callable[[dict[str, Any]], None]


class FitInterrupted(MtxError):
    """Ctrl-C / SIGTERM: the checkpoint stays, the best tokenizer so far is written."""

    exit_code = 130


@dataclass
class FitOptions:
    """Everything ``mtx fit`` takes besides the inputs and the output path.

    Attributes mirror the CLI flags; ``options`` are ``-O`` modality config overrides.
    """

    modality: str
    model: str = "meta-b16"
    weights: list[str] | None = None
    device: str | None = None
    dtype: str = "auto"
    objective: str = "supervised"
    task: str = "classification"
    labels: str | None = None  # a labels file, "folders", or None
    val_labels: str | None = None
    target: str | None = None  # tables: a column as the label (left out of the tokens)
    val: float = 0.2
    epochs: int = 30
    lr: float | None = None  # None: 3e-3 for a seeded tokenizer, 3e-4 for one starting from CLIP
    weight_decay: float = 0.05
    batch_size: int = 32
    warmup: float = 0.1  # share of all steps
    patience: int = 8  # epochs without a better validation metric before stopping (0 = never)
    seed: int = 0
    pool: str | None = None
    grad_checkpointing: bool = False
    temperature: float = 0.1
    proj_dim: int = 128
    workers: int | None = None
    timeout: float = 600.0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    overwrite: bool = False

    def check(self) -> None:
        from ..modalities import get_modality

        get_modality(self.modality)
        for name, value, choices in (("--objective", self.objective, OBJECTIVES), ("--task", self.task, TASKS),
                                     ("--pool", self.pool, POOLS)):
            if value is not None and value not in choices:
                raise UsageError(f"{name} {value!r}: choose one of {', '.join(choices)}")
        if self.labels and self.target:
            raise UsageError("--labels and --target are two ways to give labels; pass one")
        if self.target and self.modality != "tabular":
            raise UsageError(f"--target names a table column; it needs --modality tabular, not {self.modality}")
        if self.objective == "supervised" and not (self.labels or self.target):
            raise UsageError("supervised fitting needs labels: --labels FILE, --labels folders or --target COLUMN "
                             "(or --objective contrastive, which needs none)")
        if self.objective == "contrastive" and self.task == "regression":
            raise UsageError("--task regression needs the supervised objective")
        if self.val_labels and not (self.labels or self.target):
            raise UsageError("--val-labels needs --labels for the training samples")
        if not 0.0 <= self.val < 1.0:
            raise UsageError(f"--val {self.val}: a share of the samples in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and self.lr <= 0):
            raise UsageError("--epochs, --batch-size and --lr must be positive")
        if self.objective == "contrastive" and self.batch_size < 2:
            raise UsageError("--objective contrastive needs --batch-size of at least 2 (negatives)")


def _sha(obj: Any) -> str:
    from ..modalities._base import canonical_json

    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def _file_sha(path: str | Path) -> str:
    from ..weights import sha256_file

    return sha256_file(Path(path))


def work_dir_of(output: Path) -> Path:
    return output.with_name(output.name + ".fit")


# ------------------------------------------------------------------------------------------
# Run preparation
# ------------------------------------------------------------------------------------------


@dataclass
class _Data:
    decoded: Decoded
    index: list[int]  # samples used (labelled, or all for contrastive without labels)
    train: list[int]
    val: list[int]
    labels: list[str | None]
    classes: list[str]
    report: LabelReport


def _labels(opts: FitOptions, dec: Decoded, cfg_over: dict[str, Any]) -> tuple[list[str | None], LabelReport]:
    rep = LabelReport(failed=[f"{Path(f.path).name} ({f.message})" for f in dec.failures])
    if opts.target:
        values: dict[str, str | None] = {}
        errors: list[UsageError] = []
        seen: set[Path] = set()
        for sid, p in zip(dec.ids, dec.paths, strict=True):
            if p in seen:
                continue
            seen.add(p)
            inp = sid.partition("#")[0]
            try:
                col = read_target(p, cfg_over, opts.target)
            except UsageError as e:
                errors.append(e)
                rep.failed.append(f"{p.name} (no column {opts.target!r})")
                continue
            values.update({f"{inp}#{k}": v for k, v in col.items() if v is not None})
        if errors and not values:
            raise errors[0]
        return match_labels(dec.ids, dec.paths, values, rep)
    if opts.labels:
        src: Any = opts.labels if opts.labels == "folders" else Path(opts.labels)
        return match_labels(dec.ids, dec.paths, src, rep)
    rep.n_samples = rep.n_labelled = len(dec.ids)
    return [None] * len(dec.ids), rep


def _split(opts: FitOptions, dec: Decoded, labels: list[str | None]) -> tuple[list[int], list[int], list[int]]:
    supervised = opts.objective == "supervised"
    index = [i for i, v in enumerate(labels) if v is not None] if supervised else list(range(len(labels)))
    if opts.val_labels:
        val_ids = {k for kind, k, _ in read_label_file(opts.val_labels) if kind == "id"}
        val_paths = {k for kind, k, _ in read_label_file(opts.val_labels) if kind == "path"}
        vals = {i for i in index if dec.ids[i] in val_ids or os.path.abspath(dec.paths[i]) in val_paths}
        if not vals:
            raise UsageError(f"--val-labels {opts.val_labels}: its ids match no labelled input sample")
        return index, [i for i in index if i not in vals], sorted(vals)
    rng = np.random.default_rng(opts.seed)
    groups: dict[Any, list[int]] = {}
    stratify = opts.task == "classification" and any(v is not None for v in labels)
    for i in index:
        groups.setdefault(labels[i] if stratify and labels[i] is not None else "", []).append(i)
    val: list[int] = []
    for key in sorted(groups, key=str):
        g = groups[key]
        n = int(round(len(g) * opts.val))
        if opts.val > 0 and n == 0 and len(g) >= 3:
            n = 1
        val += [g[j] for j in rng.permutation(len(g))[:n]]
    vs = set(val)
    return index, [i for i in index if i not in vs], sorted(vs)


def _fingerprint(items) -> list[tuple[str, int, int]]:
    out = []
    for it in items:
        try:
            st = it.path.stat()
            out.append((it.id, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((it.id, -1, -1))
    return out


# ------------------------------------------------------------------------------------------
# Batches, schedule, evaluation
# ------------------------------------------------------------------------------------------


def _plan(train: list[int], keys: list[Any], segs: list[int], batch_size: int, seed: int, epoch: int,
          min_size: int) -> list[list[int]]:
    """This epoch's batches, the same for the same seed: samples of one batch key (as embed
    batches them), shuffled, cut at ``batch_size`` encoder rows; what is left of each key (fewer
    than ``min_size`` samples: series of a rare length, say) goes into mixed batches, which the
    step runs as one sub-batch per key. Batch order shuffled."""
    rng = np.random.default_rng([seed, epoch, 1])
    groups: dict[Any, list[int]] = {}
    for i in train:
        groups.setdefault(keys[i], []).append(i)
    batches: list[list[int]] = []
    rest: list[int] = []

    def cut(order: list[int], out: list[list[int]], left: list[int] | None) -> None:
        cur: list[int] = []
        rows = 0
        for i in order:
            if cur and rows + segs[i] > batch_size and len(cur) >= min_size:
                out.append(cur)
                cur, rows = [], 0
            cur.append(i)
            rows += segs[i]
        if not cur:
            return
        if len(cur) >= min_size or left is None:
            if len(cur) < min_size and out:
                out[-1] += cur
            else:
                out.append(cur)
        else:
            left += cur

    for g in groups.values():
        cut([g[j] for j in rng.permutation(len(g))], batches, rest)
    if rest:
        mixed: list[list[int]] = []
        cut(rest, mixed, None)
        if len(mixed[-1]) < min_size and batches:
            batches[-1] += mixed.pop()
        batches += [b for b in mixed if len(b) >= min_size]
    return [batches[j] for j in rng.permutation(len(batches))]


def _lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _param_groups(modules, weight_decay: float) -> list[dict[str, Any]]:
    """Decay the weights of linear and convolution layers; not norms, biases, embedding tables,
    positions or CLS vectors (decaying a table decays every row a batch did not use)."""
    from torch import nn

    decay, keep = [], []
    for mod in modules:
        decayed = set()
        for m in mod.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                decayed.add(id(m.weight))
        for p in mod.parameters():
            if p.requires_grad:
                (decay if id(p) in decayed else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def _adamw(groups: list[dict[str, Any]], lr: float):
    """AdamW, fused where torch has the kernel (7x faster on CPU for a 49k-row token table)."""
    import torch

    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), foreach=True)


class _Eval:
    """Vectors of cached samples through the embed path (:class:`mtx.pipeline.Embedder`), with
    the tokenizer being trained installed in the model: what ``embed --tokenizer`` will give."""

    def __init__(self, model, tok, modality: str, cfg, cfg_over: dict, pool_mode: str, batch_size: int):
        from ..modalities import get_modality
        from ..modalities._base import canonical_json
        from ..pipeline import Embedder, EmbedOptions

        self.key = (modality, canonical_json(cfg.to_dict()))
        self.model, self.before = model, model.tokenizers.get(self.key)
        model.tokenizers[self.key] = tok
        self.emb = Embedder(model, EmbedOptions(pool=pool_mode, options={modality: cfg_over}, batch_size=batch_size))
        self.mod = get_modality(modality)
        self.modality = modality
        self.batch_size = batch_size

    def uninstall(self) -> None:
        """Give the model back its own tokenizer for this modality."""
        if self.before is None:
            self.model.tokenizers.pop(self.key, None)
        else:
            self.model.tokenizers[self.key] = self.before

    def vectors(self, samples) -> np.ndarray:
        groups: dict[Any, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(self.mod.batch_key(s), []).append(i)
        out = np.zeros((len(samples), self.emb.model.spec.dim), np.float32)
        for g in groups.values():
            cur: list[int] = []
            rows = 0
            for i in [*g, None]:
                if i is None or (cur and rows + samples[i].n_segments > self.batch_size):
                    v, _, _ = self.emb.embed(self.modality, [samples[j] for j in cur])
                    out[cur] = v
                    cur, rows = [], 0
                if i is not None:
                    cur.append(i)
                    rows += samples[i].n_segments
        return out


def _retrieval(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 accuracy of finding each sample's other view among all second views: cosine of
    the vectors standardised together (the pooled vectors share a large common component)."""
    both = np.concatenate([a, b])
    mu, sd = both.mean(0), both.std(0) + 1e-6
    a, b = (a - mu) / sd, (b - mu) / sd
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((np.argmax(an @ bn.T, axis=1) == np.arange(len(a))).mean())


def _loo_knn(x: np.ndarray, y: list[str], k: int = 5) -> float:
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


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


class _Lock:
    def __init__(self, path: Path, output: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise OutputLocked(f"{output}: another mtx fit is writing it; wait for it or choose another output") from None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def fit(inputs: list[str], output: str | Path, opts: FitOptions, progress: ProgressFn | None = None,
        model=None) -> dict[str, Any]:
    """Train ``opts.modality``'s tokenizer + a head on ``inputs``; write the tokenizer file.

    Args:
        inputs: files, directories (recursive) and globs, as for ``mtx embed``.
        output: the tokenizer file to write (safetensors).
        opts: the run's settings (see :class:`FitOptions`).
        progress: called with ``{"event": "decode"|"labels"|"start"|"step"|"epoch"|..., ...}``.
        model: an already loaded :class:`mtx.encoder.Model` to train against (its encoder is
            left as it is); default: load ``opts.model``/``opts.weights``.

    Returns:
        A summary: output, sha256, epochs, best epoch and validation metric, the validation
        report (head, linear probe and k-NN on the validation split, chance level), the label
        report, and ``val_ids``/``val_vectors``: the validation samples' vectors from the best
        tokenizer, as ``mtx embed --tokenizer`` computes them.

    Raises:
        UsageError: bad options, labels that match nothing or hold one class, a missing column.
        FitInterrupted: Ctrl-C or SIGTERM (the best tokenizer so far is written; rerun to resume).
    """
    opts.check()
    emit = progress or (lambda ev: None)
    output = Path(output)
    work = work_dir_of(output)
    lock = _Lock(work / "lock", output)
    old_handler = None
    try:
        with contextlib.ExitStack() as stack:
            if signal.getsignal(signal.SIGTERM) is not None and _main_thread():
                old_handler = signal.signal(signal.SIGTERM, _sigterm)
            return _run(inputs, output, work, opts, emit, stack, model)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        lock.release()
        if work.exists() and not (work / "checkpoint.pt").exists():
            shutil.rmtree(work, ignore_errors=True)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def _run(inputs, output: Path, work: Path, opts: FitOptions, emit: ProgressFn, stack, model=None) -> dict[str, Any]:
    import torch

    from .. import __version__
    from ..encoder import load_model
    from ..modalities import get_modality
    from ..pipeline import discover
    from .bundle import encoder_sha256, read_meta

    t0 = time.monotonic()
    mod = get_modality(opts.modality)
    cfg_over = dict(opts.options.get(opts.modality, {}))
    if opts.target:
        cfg_over["drop"] = sorted({*cfg_over.get("drop", []), opts.target})
    try:
        cfg = mod.config(**cfg_over)
    except TypeError as e:
        raise UsageError(f"bad option for {opts.modality}: {e}") from None
    cfg_dict = cfg.to_dict()
    items, problems = discover(inputs)
    if not items:
        raise UsageError("no input files found" + (f" ({problems[0][0]}: {problems[0][1]})" if problems else ""))
    if model is None:
        model = load_model(opts.model, opts.weights, opts.device, opts.dtype)
    dtype_name = str(model.dtype).removeprefix("torch.")
    enc_sha = encoder_sha256(model)
    front = model.weights.front if mod.clip_init else None
    start_init = "clip" if front is not None else "seeded"
    # Pooling as embed pools a fitted (init=file) tokenizer: CLS, except where the modality pools
    # otherwise for every init (audio: mean over tokens and segments). The CLS token is trained:
    # its embedding sets its queries into the frozen blocks, a learned attention pooling that a
    # mean cannot be (docs/fit.md has the measurements).
    pool_mode = opts.pool or mod.default_pool("file")
    if opts.lr is None:  # a CLIP front end is a good start to keep; a seeded one has everything to learn
        opts = replace(opts, lr=3e-4 if start_init == "clip" else 3e-3)
    hyper = {k: getattr(opts, k) for k in ("objective", "task", "val", "epochs", "lr", "weight_decay", "batch_size",
                                           "warmup", "patience", "seed", "grad_checkpointing", "temperature",
                                           "proj_dim", "target")}
    run_key = {
        "modality": opts.modality, "config": cfg_dict, "preset": model.spec.name, "encoder_sha256": enc_sha,
        "dtype": dtype_name, "pool": pool_mode, "hyper": hyper,
        "labels": (opts.labels if opts.labels in (None, "folders") else _file_sha(opts.labels)),
        "val_labels": _file_sha(opts.val_labels) if opts.val_labels else None,
        "inputs": _fingerprint(items), "mtx": __version__,
    }
    run_sha = _sha(run_key)
    ckpt_path = work / "checkpoint.pt"
    if opts.overwrite:
        with contextlib.suppress(FileNotFoundError):
            ckpt_path.unlink()
    ckpt = None
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("run_sha256") != run_sha:
            raise UsageError(f"{work}: holds a checkpoint of a fit with other settings or data; rerun that "
                             "command to resume it, or pass --overwrite to start over")
    elif output.exists() and not opts.overwrite:
        try:
            meta = read_meta(output)
        except MtxError:
            meta = {}
        if meta.get("run_sha256") == run_sha and meta.get("complete"):
            emit({"event": "done", "already": True})
            return {"output": str(output), "already_done": True, "sha256": _file_sha(output),
                    **{k: meta.get(k) for k in ("modality", "objective", "task", "epochs", "best", "report", "labels")}}
        raise UsageError(f"{output}: exists and was not made by this command (other settings or data); "
                         "pass --overwrite to replace it, or choose another output")

    # -- data ----------------------------------------------------------------------------------
    cache = SampleCache(spill=work / f"cache-{os.getpid()}.bin")
    stack.callback(cache.close)
    dec = decode_samples(items, opts.modality, cfg_over, workers=opts.workers, timeout=opts.timeout, cache=cache,
                         progress=lambda d, n, s: emit({"event": "decode", "done": d, "total": n, "samples": s}))
    dec.failures += [Failure(raw, "discover", msg) for raw, msg in problems]
    if not len(dec):
        first = dec.failures[0] if dec.failures else None
        raise UsageError("no input could be decoded as " + opts.modality
                         + (f" (first failure: {Path(first.path).name}: {first.message})" if first else ""))
    labels, report = _labels(opts, dec, cfg_over)
    if opts.objective == "supervised":
        check_usable(labels, opts.task, f"--target {opts.target}" if opts.target else f"--labels {opts.labels}")
    elif any(v is not None for v in labels) and len({v for v in labels if v is not None}) < 2:
        labels = [None] * len(labels)
    index, train, val = _split(opts, dec, labels)
    if not train:
        raise UsageError(f"no training samples left after the validation split ({len(val)} for validation)")
    emit({"event": "labels", "report": report, "n_train": len(train), "n_val": len(val),
          "spilled": cache.spilled})
    supervised = opts.objective == "supervised"
    regression = supervised and opts.task == "regression"
    has_labels = any(labels[i] is not None for i in index)
    classes = sorted({labels[i] for i in index if labels[i] is not None}) if has_labels and not regression else []
    target_stats = None
    if regression:
        yv = np.array([float(labels[i]) for i in train])
        target_stats = {"mean": float(yv.mean()), "std": float(yv.std() or 1.0)}

    # -- model pieces --------------------------------------------------------------------------
    from ..modalities._base import seeded
    from .heads import info_nce, make_head, pooled

    dev = model.device
    tok = mod.tokenizer(model.spec, front, cfg).to(dev).train().requires_grad_(True)
    head_kind = "linear" if supervised else "projection"
    head_out = (1 if regression else len(classes)) if supervised else opts.proj_dim
    with seeded(opts.seed):
        head = make_head(head_kind, model.spec.dim, head_out).to(dev)
    optim = _adamw(_param_groups([tok, head], opts.weight_decay), opts.lr)
    # float16 (CUDA) gradients through the frozen blocks can underflow: scale the loss. A no-op otherwise.
    scaler = torch.amp.GradScaler(dev.type, enabled=model.dtype == torch.float16)
    cls_index = {c: i for i, c in enumerate(classes)}
    keys = [mod.batch_key(cache.get(i)) for i in range(len(dec))]
    segs = [cache.get(i).n_segments for i in range(len(dec))]
    min_size = 2  # contrastive negatives; the head's BatchNorm
    plans = [len(_plan(train, keys, segs, opts.batch_size, opts.seed, e, min_size)) for e in range(opts.epochs)]
    total = sum(plans)
    if total == 0:
        raise UsageError(f"{len(train)} training sample(s): a step needs at least two; add inputs or lower --val")
    warm = max(1, int(round(opts.warmup * total)))
    ev = _Eval(model, tok, opts.modality, cfg, cfg_over, pool_mode, opts.batch_size)
    stack.callback(ev.uninstall)

    state = {"epoch": 0, "step": 0, "best": None, "history": [], "bad": 0}
    if ckpt is not None:
        tok.load_state_dict(ckpt["tokenizer"])
        head.load_state_dict(ckpt["head"])
        optim.load_state_dict(ckpt["optimizer"])
        state = {k: ckpt[k] for k in state}
        emit({"event": "resume", "epoch": state["epoch"]})

    def targets(batch: list[int]) -> torch.Tensor:
        if regression:
            y = [(float(labels[i]) - target_stats["mean"]) / target_stats["std"] for i in batch]
            return torch.tensor(y, dtype=torch.float32, device=dev)
        return torch.tensor([cls_index[labels[i]] for i in batch], dtype=torch.long, device=dev)

    def forward(samples: list) -> torch.Tensor:
        """Pooled vectors of ``samples`` in order: one tokenizer/encoder pass per batch key."""
        parts: dict[Any, list[int]] = {}
        for j, s in enumerate(samples):
            parts.setdefault(mod.batch_key(s), []).append(j)
        outs, order = [], []
        for idx in parts.values():
            sub = [samples[j] for j in idx]
            inputs = {k: v.to(dev) for k, v in mod.collate(sub).items()}
            outs.append(pooled(model, tok, inputs, [s.n_segments for s in sub], pool_mode, opts.grad_checkpointing))
            order += idx
        v = outs[0] if len(outs) == 1 else torch.cat(outs)
        if order != sorted(order):
            v = v[torch.argsort(torch.tensor(order, device=v.device))]
        return v

    def loss_of(batch: list[int], epoch: int, step: int) -> torch.Tensor:
        samples = [cache.get(i) for i in batch]
        if supervised:
            out = head(forward(samples))
            if regression:
                return torch.nn.functional.mse_loss(out[:, 0], targets(batch))
            return torch.nn.functional.cross_entropy(out, targets(batch))
        from .augment import augment

        v1 = augment(opts.modality, samples, np.random.default_rng([opts.seed, epoch, step, 1]))
        v2 = augment(opts.modality, samples, np.random.default_rng([opts.seed, epoch, step, 2]))
        z = head(forward(v1 + v2))
        return info_nce(z[:len(batch)], z[len(batch):], opts.temperature)

    def evaluate() -> dict[str, Any]:
        """The validation metric (higher is better) and loss of the current tokenizer."""
        tok.eval()
        head.eval()
        try:
            if not val:
                return {"metric": None, "loss": None}
            vs = [cache.get(i) for i in val]
            x = ev.vectors(vs)
            with torch.no_grad():
                if supervised:
                    out = head(torch.from_numpy(x).to(dev)).float()
                    if regression:
                        y = targets(val)
                        pred = out[:, 0]
                        mse = float(torch.nn.functional.mse_loss(pred, y))
                        ss = float(((y - y.mean()) ** 2).sum()) or 1.0
                        r2 = 1 - float(((y - pred) ** 2).sum()) / ss
                        return {"metric": r2, "name": "r2", "loss": mse}
                    y = targets(val)
                    return {"metric": float((out.argmax(1) == y).float().mean()), "name": "accuracy",
                            "loss": float(torch.nn.functional.cross_entropy(out, y))}
                if has_labels and all(labels[i] is not None for i in val):
                    return {"metric": _loo_knn(x, [labels[i] for i in val]), "name": "knn_accuracy", "loss": None}
                from .augment import augment

                a = ev.vectors(augment(opts.modality, vs, np.random.default_rng([opts.seed, 10**6, 1])))
                b = ev.vectors(augment(opts.modality, vs, np.random.default_rng([opts.seed, 10**6, 2])))
                za, zb = head(torch.from_numpy(a).to(dev)), head(torch.from_numpy(b).to(dev))
                return {"metric": _retrieval(a, b), "name": "view_retrieval",
                        "loss": float(info_nce(za, zb, opts.temperature))}
        finally:
            tok.train()
            head.train()

    def snapshot() -> dict[str, Any]:
        return {"tokenizer": {k: v.detach().cpu().clone() for k, v in tok.state_dict().items()},
                "head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}}

    def better(m: dict[str, Any], best: dict[str, Any] | None) -> bool:
        if best is None:
            return True
        if m["metric"] is None:
            return True  # no validation split: the last epoch is the result
        if m["metric"] != best["metric"]:
            return m["metric"] > best["metric"]
        return m.get("loss") is not None and best.get("loss") is not None and m["loss"] < best["loss"]

    def save_ckpt() -> None:
        blob = {"run_sha256": run_sha, "tokenizer": tok.state_dict(), "head": head.state_dict(),
                "optimizer": optim.state_dict(), **{k: state[k] for k in ("epoch", "step", "history", "bad")},
                "best": state["best"]}
        tmp = work / f"checkpoint.pt.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, ckpt_path)

    def meta(complete: bool, best: dict[str, Any], report_val: dict[str, Any] | None) -> dict[str, Any]:
        used = [dec.ids[i] for i in index]
        return {
            "format_version": 1, "mtx_version": __version__, "complete": complete, "run_sha256": run_sha,
            "modality": opts.modality, "tokenizer": type(tok).__name__, "init": start_init,
            "encoder": {"preset": model.spec.name, "weights_sha256": enc_sha, "weights_source": model.weights.source,
                        "geometry": model.spec.geometry()},
            "config": cfg_dict, "pool": pool_mode, "dtype": dtype_name, "objective": opts.objective,
            "task": opts.task if supervised else None,
            "head": {"kind": head_kind, "out": head_out, **({"target": target_stats} if target_stats else {})},
            "labels": classes, "label_source": ("target:" + opts.target if opts.target else
                                                opts.labels if opts.labels in (None, "folders") else Path(opts.labels).name),
            "augmentations": None if supervised else _aug_desc(opts.modality),
            "data": {"count": len(used), "ids_sha256": hashlib.sha256("\n".join(used).encode()).hexdigest(),
                     "n_train": len(train), "n_val": len(val)},
            "hyperparameters": {k: v for k, v in hyper.items() if k not in ("objective", "task")},
            "seed": opts.seed, "epochs": len(state["history"]), "best": {"epoch": best["epoch"], "metric": best["metric"],
                                                                         "name": best.get("name"), "loss": best.get("loss")},
            "history": state["history"], "report": report_val,
        }

    def write(complete: bool, report_val: dict[str, Any] | None = None) -> str:
        from .bundle import write_bundle

        best = state["best"]
        tensors = {f"tokenizers.{opts.modality}.{k}": v.float() if v.is_floating_point() else v
                   for k, v in best["tokenizer"].items()}
        tensors.update({f"heads.{opts.modality}.{k}": v.float() if v.is_floating_point() else v
                        for k, v in best["head"].items()})
        output.parent.mkdir(parents=True, exist_ok=True)
        return write_bundle(output, tensors, meta(complete, best, report_val))

    # -- epochs --------------------------------------------------------------------------------
    emit({"event": "start", "epochs": opts.epochs, "steps_per_epoch": plans[0] if plans else 0, "epoch": state["epoch"],
          "n_train": len(train), "n_val": len(val), "pool": pool_mode, "init": start_init, "device": dev.type,
          "dtype": dtype_name, "metric": "accuracy" if supervised and not regression else
          "r2" if regression else "knn_accuracy" if has_labels else "view_retrieval"})
    work.mkdir(parents=True, exist_ok=True)
    model.encoder.eval()
    try:
        while state["epoch"] < opts.epochs:
            # Early stopping, never in the first half: a plateau before the schedule's peak is common
            # (an interaction to discover), and a small validation split is noisy.
            if opts.patience and state["bad"] >= opts.patience and val and state["epoch"] >= opts.epochs // 2:
                break
            epoch = state["epoch"]
            te = time.monotonic()
            batches = _plan(train, keys, segs, opts.batch_size, opts.seed, epoch, min_size)
            losses = []
            for bi, batch in enumerate(batches):
                lr = _lr(state["step"], total, warm, opts.lr)
                for g in optim.param_groups:
                    g["lr"] = lr
                loss = loss_of(batch, epoch, bi)
                optim.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optim)
                torch.nn.utils.clip_grad_norm_([p for g in optim.param_groups for p in g["params"]], 1.0,
                                               foreach=True)
                scaler.step(optim)
                scaler.update()
                state["step"] += 1
                losses.append(loss.item())
                emit({"event": "step", "epoch": epoch, "step": bi + 1, "steps": len(batches), "loss": losses[-1], "lr": lr,
                      "batch": batch})
            m = evaluate()
            m.update(epoch=epoch + 1, train_loss=float(np.mean(losses)) if losses else None)
            state["history"].append({k: m.get(k) for k in ("epoch", "train_loss", "loss", "metric")})
            if better(m, state["best"]):
                state["best"] = {**snapshot(), **{k: m.get(k) for k in ("epoch", "metric", "name", "loss")}}
                state["bad"] = 0
            else:
                state["bad"] += 1
            state["epoch"] = epoch + 1
            save_ckpt()
            emit({"event": "epoch", "epoch": epoch + 1, "epochs": opts.epochs, "train_loss": m["train_loss"],
                  "val_loss": m.get("loss"), "metric": m.get("metric"), "metric_name": m.get("name"),
                  "best_epoch": state["best"]["epoch"], "best_metric": state["best"]["metric"],
                  "seconds": time.monotonic() - te})
    except KeyboardInterrupt:
        if state["best"] is None:
            raise FitInterrupted(f"interrupted before the first epoch ended: nothing written; rerun the same "
                                 f"command to start again{' (from the checkpoint)' if ckpt is not None else ''}") from None
        write(False)
        raise FitInterrupted(f"interrupted: the best tokenizer so far (epoch {state['best']['epoch']}, validation "
                             f"{state['best'].get('name') or 'metric'} {_fmt(state['best']['metric'])}) is in {output}; "
                             "rerun the same command to resume from the last checkpoint") from None

    # -- the result ----------------------------------------------------------------------------
    best = state["best"]
    tok.load_state_dict(best["tokenizer"])
    head.load_state_dict(best["head"])
    head.eval()
    report_val, val_vectors = _final_report(ev, cache, dec, train, val, labels, has_labels, regression, head,
                                            target_stats, opts, dev, classes, supervised)
    sha = write(True, report_val)
    shutil.rmtree(work, ignore_errors=True)
    return {"output": str(output), "sha256": sha, "modality": opts.modality, "objective": opts.objective,
            "task": opts.task if supervised else None, "epochs": len(state["history"]),
            "stopped_early": len(state["history"]) < opts.epochs,
            "best": {k: best.get(k) for k in ("epoch", "metric", "name", "loss")}, "report": report_val,
            "labels": report.to_dict(), "classes": classes, "n_train": len(train), "n_val": len(val),
            "pool": pool_mode, "init": start_init, "device": dev.type, "dtype": dtype_name,
            "elapsed_s": round(time.monotonic() - t0, 3), "history": state["history"],
            "val_ids": [dec.ids[i] for i in val], "val_vectors": val_vectors}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _aug_desc(modality: str) -> str:
    from .augment import DESCRIPTIONS

    return DESCRIPTIONS.get(modality, "")


def _final_report(ev: _Eval, cache: SampleCache, dec: Decoded, train, val, labels, has_labels, regression, head,
                  target_stats, opts: FitOptions, dev, classes, supervised) -> tuple[dict[str, Any] | None, np.ndarray]:
    """The validation split reported as ``mtx probe`` reports a store: the head (supervised),
    a linear probe and k-NN fitted on the training vectors, with the chance level."""
    import torch

    from ..probe import probe_split

    if not val:
        return None, np.zeros((0, ev.emb.model.spec.dim), np.float32)
    xv = ev.vectors([cache.get(i) for i in val])
    if not has_labels:
        return None, xv
    out: dict[str, Any] = {}
    if regression:
        with torch.no_grad():
            pred = head(torch.from_numpy(xv).to(dev))[:, 0].cpu().numpy() * target_stats["std"] + target_stats["mean"]
        y = np.array([float(labels[i]) for i in val])
        ss = float(((y - y.mean()) ** 2).sum()) or 1.0
        return {"protocol": "train/validation split", "n": len(val), "head": {
            "r2": 1 - float(((y - pred) ** 2).sum()) / ss, "mae": float(np.abs(y - pred).mean())}}, xv
    xt = ev.vectors([cache.get(i) for i in train])
    out = probe_split(xt, [labels[i] for i in train], xv, [labels[i] for i in val], seed=opts.seed)
    if supervised:
        from ..probe import _scores

        with torch.no_grad():
            pred = head(torch.from_numpy(xv).to(dev)).argmax(1).cpu().numpy()
        y = np.array([classes.index(labels[i]) for i in val])
        acc, f1 = _scores(y, pred)
        out = {**out, "head": {"accuracy": acc, "macro_f1": f1}}
    return out, xv


def summary_for_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without the vectors (for ``--json``)."""
    return {k: v for k, v in summary.items() if k not in ("val_vectors", "val_ids")}

