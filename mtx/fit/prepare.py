"""The data of a fit: inputs decoded once (the embed decoders), labels matched, a seeded split."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .data import Decoded, Failure, SampleCache, decode_samples
from .labels import LabelReport, check_usable, match_labels, read_label_file, read_target
from .options import FitOptions, ProgressFn


@dataclass
class FitData:
    """Decoded samples, their labels and the split (indices into ``decoded``)."""

    decoded: Decoded
    index: list[int]  # samples used (labelled, or all for contrastive without labels)
    train: list[int]
    val: list[int]
    labels: list[str | None]
    classes: list[str]
    report: LabelReport
    has_labels: bool
    target_stats: dict[str, float] | None = None

    @property
    def cache(self) -> SampleCache:
        return self.decoded.cache


def load_data(items, problems, opts: FitOptions, cfg_over: dict[str, Any], work: Path, emit: ProgressFn,
              stack: contextlib.ExitStack) -> FitData:
    """Decode ``items`` once, match the labels, split; refusals as one-line ``UsageError``s."""
    cache = SampleCache(spill=work / f"cache-{os.getpid()}.bin")
    stack.callback(cache.close)
    dec = decode_samples(items, opts.modality, cfg_over, workers=opts.workers, timeout=opts.timeout, cache=cache,
                         progress=lambda d, n, s: emit({"event": "decode", "done": d, "total": n, "samples": s}))
    dec.failures += [Failure(raw, "discover", msg) for raw, msg in problems]
    if not len(dec):
        first = dec.failures[0] if dec.failures else None
        raise UsageError("no input could be decoded as " + opts.modality
                         + (f" (first failure: {Path(first.path).name}: {first.message})" if first else ""))
    labels, report = labels_of(opts, dec, cfg_over)
    if opts.objective == "supervised":
        check_usable(labels, opts.task, f"--target {opts.target}" if opts.target else f"--labels {opts.labels}")
    elif any(v is not None for v in labels) and len({v for v in labels if v is not None}) < 2:
        labels = [None] * len(labels)
    index, train, val = split(opts, dec, labels)
    if not train:
        raise UsageError(f"no training samples left after the validation split ({len(val)} for validation)")
    regression = opts.objective == "supervised" and opts.task == "regression"
    has_labels = any(labels[i] is not None for i in index)
    classes = sorted({labels[i] for i in index if labels[i] is not None}) if has_labels and not regression else []
    data = FitData(dec, index, train, val, labels, classes, report, has_labels)
    if regression:
        yv = np.array([float(labels[i]) for i in train])
        data.target_stats = {"mean": float(yv.mean()), "std": float(yv.std() or 1.0)}
    emit({"event": "labels", "report": report, "n_train": len(train), "n_val": len(val), "spilled": cache.spilled})
    return data


def labels_of(opts: FitOptions, dec: Decoded, cfg_over: dict[str, Any]) -> tuple[list[str | None], LabelReport]:
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


def split(opts: FitOptions, dec: Decoded, labels: list[str | None]) -> tuple[list[int], list[int], list[int]]:
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


def fingerprint(items) -> list[tuple[str, int, int]]:
    out = []
    for it in items:
        try:
            st = it.path.stat()
            out.append((it.id, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((it.id, -1, -1))
    return out
