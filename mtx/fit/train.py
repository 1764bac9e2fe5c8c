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
import os
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import MtxError, OutputLocked, UsageError
from .loop import RunInfo, Trainer
from .options import FitInterrupted, FitOptions, ProgressFn, work_dir_of
from .prepare import fingerprint, load_data

__all__ = ["FitInterrupted", "FitOptions", "fit", "summary_for_json", "work_dir_of"]


def _sha(obj: Any) -> str:
    from ..modalities._base import canonical_json

    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def _file_sha(path: str | Path) -> str:
    from ..weights import sha256_file

    return sha256_file(Path(path))


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


def _config(opts: FitOptions, mod) -> tuple[Any, dict[str, Any]]:
    """The modality config (``--target`` left out of the tokens) and the overrides it came from."""
    cfg_over = dict(opts.options.get(opts.modality, {}))
    if opts.target:
        cfg_over["drop"] = sorted({*cfg_over.get("drop", []), opts.target})
    try:
        return mod.config(**cfg_over), cfg_over
    except TypeError as e:
        raise UsageError(f"bad option for {opts.modality}: {e}") from None


def _run_info(opts: FitOptions, model, mod, cfg, cfg_over, items, output: Path, work: Path
              ) -> tuple[FitOptions, RunInfo]:
    """What decides the result, hashed (the run key), and the resolved learning rate."""
    from .. import __version__
    from .bundle import encoder_sha256
    from .loop import head_lr_scale

    enc_sha = encoder_sha256(model)
    start_init = "clip" if (model.weights.front is not None and mod.clip_init) else "seeded"
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
    hyper["head_lr"] = opts.lr * head_lr_scale(model.spec.dim)  # loop.HEAD_LR_WIDTH
    dtype_name = str(model.dtype).removeprefix("torch.")
    run_key = {
        "modality": opts.modality, "config": cfg.to_dict(), "preset": model.spec.name, "encoder_sha256": enc_sha,
        "dtype": dtype_name, "pool": pool_mode, "hyper": hyper,
        "labels": (opts.labels if opts.labels in (None, "folders") else _file_sha(opts.labels)),
        "val_labels": _file_sha(opts.val_labels) if opts.val_labels else None,
        "inputs": fingerprint(items), "mtx": __version__,
    }
    return opts, RunInfo(output, work, _sha(run_key), enc_sha, start_init, pool_mode, dtype_name, cfg, cfg_over, hyper)


def _checkpoint_or_done(opts: FitOptions, info: RunInfo) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the checkpoint to resume, or None; the finished file's summary when this very command
    already wrote it). Anything else in the way is refused unless ``--overwrite``."""
    import torch

    from .bundle import read_meta

    ckpt_path = info.work / "checkpoint.pt"
    if opts.overwrite:
        with contextlib.suppress(FileNotFoundError):
            ckpt_path.unlink()
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("run_sha256") != info.run_sha:
            raise UsageError(f"{info.work}: holds a checkpoint of a fit with other settings or data; rerun that "
                             "command to resume it, or pass --overwrite to start over")
        return ckpt, None
    if info.output.exists() and not opts.overwrite:
        try:
            meta = read_meta(info.output)
        except MtxError:
            meta = {}
        if meta.get("run_sha256") == info.run_sha and meta.get("complete"):
            return None, {"output": str(info.output), "already_done": True, "sha256": _file_sha(info.output),
                          **{k: meta.get(k) for k in ("modality", "objective", "task", "epochs", "best", "report",
                                                      "labels")}}
        raise UsageError(f"{info.output}: exists and was not made by this command (other settings or data); "
                         "pass --overwrite to replace it, or choose another output")
    return None, None


def _run(inputs, output: Path, work: Path, opts: FitOptions, emit: ProgressFn, stack, model=None) -> dict[str, Any]:
    from ..encoder import load_model
    from ..modalities import get_modality
    from ..pipeline import discover

    t0 = time.monotonic()
    mod = get_modality(opts.modality)
    cfg, cfg_over = _config(opts, mod)
    items, problems = discover(inputs)
    if not items:
        raise UsageError("no input files found" + (f" ({problems[0][0]}: {problems[0][1]})" if problems else ""))
    if model is None:
        model = load_model(opts.model, opts.weights, opts.device, opts.dtype)
    opts, info = _run_info(opts, model, mod, cfg, cfg_over, items, output, work)
    ckpt, done = _checkpoint_or_done(opts, info)
    if done is not None:
        emit({"event": "done", "already": True})
        return done
    data = load_data(items, problems, opts, cfg_over, work, emit, stack)
    tr = Trainer(opts, model, mod, data, info, front=model.weights.front if mod.clip_init else None)
    stack.callback(tr.ev.uninstall)
    if tr.total == 0:
        raise UsageError(f"{len(data.train)} training sample(s): a step needs at least two; add inputs or lower --val")
    if ckpt is not None:
        tr.resume(ckpt)
        emit({"event": "resume", "epoch": tr.state["epoch"]})
    emit({"event": "start", "epochs": opts.epochs, "steps_per_epoch": len(tr.plan(0)), "epoch": tr.state["epoch"],
          "n_train": len(data.train), "n_val": len(data.val), "pool": info.pool_mode, "init": info.start_init,
          "device": tr.dev.type, "dtype": info.dtype_name, "metric": _metric_name(tr)})
    work.mkdir(parents=True, exist_ok=True)
    tr.run(emit)
    return _finish(tr, t0)


def _metric_name(tr: Trainer) -> str:
    if tr.supervised:
        return "r2" if tr.regression else "accuracy"
    return "knn_accuracy" if tr.data.has_labels else "view_retrieval"


def _finish(tr: Trainer, t0: float) -> dict[str, Any]:
    """Write the best epoch's tokenizer with its validation report; the run's summary."""
    import numpy as np

    from .evaluate import final_report

    d, o, best = tr.data, tr.opts, tr.state["best"]
    tr.use_best()
    xv = tr.ev.vectors([d.cache.get(i) for i in d.val]) if d.val else np.zeros((0, tr.model.spec.dim), np.float32)
    report = final_report(tr, xv)
    sha = tr.write(True, report)
    shutil.rmtree(tr.info.work, ignore_errors=True)
    return {"output": str(tr.info.output), "sha256": sha, "modality": o.modality, "objective": o.objective,
            "task": o.task if tr.supervised else None, "epochs": len(tr.state["history"]),
            "stopped_early": len(tr.state["history"]) < o.epochs,
            "best": {k: best.get(k) for k in ("epoch", "metric", "name", "loss")}, "report": report,
            "labels": d.report.to_dict(), "classes": d.classes, "n_train": len(d.train), "n_val": len(d.val),
            "pool": tr.info.pool_mode, "init": tr.info.start_init, "device": tr.dev.type, "dtype": tr.info.dtype_name,
            "elapsed_s": round(time.monotonic() - t0, 3), "history": tr.state["history"],
            "val_ids": [d.decoded.ids[i] for i in d.val], "val_vectors": xv}


def summary_for_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without the vectors (for ``--json``)."""
    return {k: v for k, v in summary.items() if k not in ("val_vectors", "val_ids")}
