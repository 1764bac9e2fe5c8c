"""``mtx bench``: a short synthetic run that measures this machine and suggests settings."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any


def encoder_rate(model, modality: str, samples, batch_size: int, repeats: int = 1) -> float:
    """Samples/s of tokenizer + encoder + pooling on pre-decoded samples (no I/O, no decoding)."""
    from .modalities import get_modality
    from .pipeline import Embedder, EmbedOptions

    emb = Embedder(model, EmbedOptions(batch_size=batch_size))
    mod = get_modality(modality)
    groups: dict[Any, list] = {}
    for s in samples:
        groups.setdefault(mod.batch_key(s), []).append(s)
    batches = [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    emb.embed(modality, batches[0][: min(2, len(batches[0]))])  # warm-up
    n = 0
    t = time.perf_counter()
    for _ in range(repeats):
        for b in batches:
            emb.embed(modality, b)
            n += len(b)
    return n / (time.perf_counter() - t)


def run_bench(modality: str = "image", model: str = "meta-b16", device: str | None = None,
              dtype: str = "float32", n: int = 32, batch_sizes: tuple[int, ...] = (1, 8, 32),
              workers: int | None = None) -> dict[str, Any]:
    from ._synth import GENERATORS
    from .encoder import load_model
    from .modalities import get_modality
    from .pipeline import EmbedOptions, default_workers, discover, run_embed

    m = load_model(model, "seeded", device, dtype)
    res: dict[str, Any] = {"modality": modality, "model": model, "device": str(m.device), "dtype": dtype,
                           "cpus": os.cpu_count(), "encoder": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "in"
        d.mkdir()
        t = time.perf_counter()
        files = GENERATORS[modality](d, n)
        mod = get_modality(modality)
        cfg = mod.config()
        t = time.perf_counter()
        samples = [s for f in files for s in mod.load(f, cfg)]
        res["decode_samples_per_s_one_core"] = len(samples) / (time.perf_counter() - t)
        for bs in batch_sizes:
            res["encoder"][bs] = encoder_rate(m, modality, samples[: max(bs, min(len(samples), 2 * bs))], bs)
        best = max(res["encoder"], key=res["encoder"].get)
        w = workers if workers is not None else default_workers()
        items, _ = discover([str(d)])
        t = time.perf_counter()
        s = run_embed(items, Path(tmp) / "o.h5", EmbedOptions(model=model, batch_size=best, workers=w, dtype=dtype), m)
        res["end_to_end_samples_per_s"] = s["n_samples"] / (time.perf_counter() - t)
    enc = res["encoder"][best]
    res["best_batch_size"] = best
    # Decoder processes needed to keep the encoder fed, with a margin; never more than the cores.
    need = enc / max(res["decode_samples_per_s_one_core"], 1e-9)
    res["suggested_workers"] = max(1, min(os.cpu_count() or 1, int(need * 1.5) + 1))
    res["efficiency"] = res["end_to_end_samples_per_s"] / enc
    return res
