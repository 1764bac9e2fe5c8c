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
    from .fit.data import decode_samples
    from .fit.evaluate import embed_samples
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
        vecs, bad = embed_samples(emb, mod, [dec.cache.get(i) for i in range(len(dec))])
        failures += _sample_failures(dec, bad)
        rows = _rows(head, vecs, model.device, fit, classes)
        for i in range(len(dec)):
            if i in bad:
                continue
            row = {"id": dec.ids[i], "path": str(dec.paths[i]), **rows[i]}
            if writer is None:
                stream.write(json.dumps(row) + "\n")
            elif regression:
                writer.writerow([row["id"], row["path"], f"{row['value']:.6g}"])
            else:
                writer.writerow([row["id"], row["path"], row["label"],
                                 *[f"{row['probabilities'][c]:.6f}" for c in classes]])
            n += 1
        dec.cache.close()
    stream.flush()
    return {"n_samples": n, "failures": failures, "tokenizer": str(ft.path), "modality": mod}


def _sample_failures(dec, bad: dict[int, str]) -> list[dict[str, str]]:
    """One failure per sample the tokenizer or encoder refused (its file's other samples stay)."""
    out = []
    for i, why in sorted(bad.items()):
        stage, _, message = why.partition(": ")
        out.append({"path": f"{dec.paths[i]} ({dec.ids[i]})", "stage": stage, "message": message})
    return out


def _rows(head, vecs: np.ndarray, device, fit: dict[str, Any], classes: list[str]) -> list[dict[str, Any]]:
    """Per sample: ``value`` (regression) or ``label`` and ``probabilities`` from the head."""
    import torch

    with torch.inference_mode():
        out = head(torch.from_numpy(vecs).to(device)).float()
    if fit.get("task") == "regression":
        t = fit["head"].get("target") or {"mean": 0.0, "std": 1.0}
        return [{"value": float(v)} for v in (out[:, 0] * t["std"] + t["mean"]).cpu().numpy()]
    probs = torch.softmax(out, dim=1).cpu().numpy()
    return [{"label": classes[int(p.argmax())],
             "probabilities": {c: round(float(x), 6) for c, x in zip(classes, p, strict=True)}} for p in probs]
