"""``mtx predict``: label files with a fitted tokenizer's own head (no store, no other model).

The tokenizer file says everything needed: the modality and its preprocessing, the encoder
preset and weights it was trained against (refused when they differ), the pooling, the head
and the label names. Files are decoded by the embed decoders in groups, so memory stays
bounded for any number of inputs.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import UsageError

GROUP_FILES = 256  # files decoded per group (bounds memory)


def load_predictor(tokenizer: str | Path, *, weights: list[str] | None = None, device: str | None = None,
                   dtype: str = "auto"):
    """(model, head, fitted tokenizer, modality options) for a tokenizer file; the model has it installed."""
    from .encoder import load_model
    from .fit.bundle import read_bundle, tokenizer_options
    from .fit.heads import make_head

    ft = read_bundle(tokenizer)
    fit = ft.meta
    if fit.get("objective") != "supervised":
        raise UsageError(f"{ft.path}: fitted with the {fit.get('objective')} objective, so it has no label head; "
                         f"use `mtx embed --tokenizer {ft.modality}={ft.path}` for vectors")
    enc = fit["encoder"]
    if not weights and enc.get("weights_source") == "seeded":
        weights = ["seeded"]
    model = load_model(enc["preset"], weights, device, dtype, tokenizers=[str(ft.path)])
    h = fit["head"]
    head = make_head(h["kind"], model.spec.dim, int(h["out"]))
    try:
        head.load_state_dict(ft.head, strict=True)
    except RuntimeError as e:
        raise UsageError(f"{ft.path}: its head does not fit ({str(e).splitlines()[0]}); fit it again") from None
    head = head.to(model.device).eval()
    return model, head, ft, tokenizer_options([str(ft.path)])


def predict(inputs: list[str], tokenizer: str | Path, stream: IO[str], fmt: str = "csv", *,
            weights: list[str] | None = None, device: str | None = None, dtype: str = "auto",
            batch_size: int = 32, workers: int | None = None) -> dict[str, Any]:
    """Write one row per sample of ``inputs`` to ``stream``: id, path, label, class probabilities
    (CSV or JSONL; regression: id, path, value). Returns counts and the failures."""
    import torch

    from .fit.data import decode_samples
    from .pipeline import Embedder, EmbedOptions, discover

    model, head, ft, options = load_predictor(tokenizer, weights=weights, device=device, dtype=dtype)
    fit = ft.meta
    mod = ft.modality
    classes = fit.get("labels") or []
    regression = fit.get("task") == "regression"
    items, problems = discover(inputs)
    if not items and not problems:
        raise UsageError("no input files found")
    emb = Embedder(model, EmbedOptions(options=options, batch_size=batch_size))
    writer = None
    if fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(["id", "path", "value"] if regression else ["id", "path", "label", *[f"p_{c}" for c in classes]])
    failures = [{"path": p, "stage": "discover", "message": m} for p, m in problems]
    n = 0
    for g in range(0, len(items), GROUP_FILES):
        dec = decode_samples(items[g:g + GROUP_FILES], mod, options.get(mod, {}), workers=workers)
        failures += [{"path": f.path, "stage": f.stage, "message": f.message} for f in dec.failures]
        order: dict[Any, list[int]] = {}
        from .modalities import get_modality

        m = get_modality(mod)
        for i in range(len(dec)):
            order.setdefault(m.batch_key(dec.cache.get(i)), []).append(i)
        vecs = np.zeros((len(dec), model.spec.dim), np.float32)
        for idx in order.values():
            for b in range(0, len(idx), batch_size):
                part = idx[b:b + batch_size]
                v, _, _ = emb.embed(mod, [dec.cache.get(i) for i in part])
                vecs[part] = v
        with torch.inference_mode():
            out = head(torch.from_numpy(vecs).to(model.device)).float()
            if regression:
                t = fit["head"].get("target") or {"mean": 0.0, "std": 1.0}
                values = (out[:, 0] * t["std"] + t["mean"]).cpu().numpy()
            else:
                probs = torch.softmax(out, dim=1).cpu().numpy()
        for i in range(len(dec)):
            sid, path = dec.ids[i], str(dec.paths[i])
            if regression:
                row: dict[str, Any] = {"id": sid, "path": path, "value": float(values[i])}
                if writer:
                    writer.writerow([sid, path, f"{values[i]:.6g}"])
            else:
                p = probs[i]
                label = classes[int(p.argmax())]
                row = {"id": sid, "path": path, "label": label,
                       "probabilities": {c: round(float(x), 6) for c, x in zip(classes, p, strict=True)}}
                if writer:
                    writer.writerow([sid, path, label, *[f"{x:.6f}" for x in p]])
            if writer is None:
                stream.write(json.dumps(row) + "\n")
            n += 1
        dec.cache.close()
    stream.flush()
    return {"n_samples": n, "failures": failures, "tokenizer": str(ft.path), "modality": mod}
