"""`mtx fit` training speed vs a bare tokenizer + encoder forward and backward on the same batches.

    python benchmarks/fit_speed.py [--model meta-b16] [--modalities audio,text] [--steps 8]
    python benchmarks/fit_speed.py --memory [--modality audio] [--batch-sizes 4,8,16,32]

Speed: one `mtx fit` run per modality (supervised, the CLI's defaults except a short run); at
every step its progress callback times the step that just ended (collate, tokenizer, frozen
encoder, pooling, head, loss, backward, gradient clipping, AdamW, schedule) and then runs the
bare work on the very same batch: tokenizer + encoder forward, a mean as the loss, backward to
the tokenizer; nothing else. The two alternate batch by batch, so the (shared, noisy) machine's
load affects both alike. The ratio bare time / fit time is the efficiency (target >= 0.8).

Memory: one process per batch size (and with --grad-checkpointing) runs a few fit steps and
reports its peak RSS. Writes JSON with --json-out.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIONS = {"point_cloud": {"points": 256, "groups": 64, "group_size": 16}}


def _data(modality: str, root: Path, per: int) -> Path:
    from mtx.fit.tasks import TASKS

    if modality == "tabular":
        TASKS[modality](root, per * 4, seed=1)
    else:
        TASKS[modality](root, per, seed=1)
    return root


def speed(modality: str, model: str, steps: int, batch_size: int, root: Path) -> dict:
    import numpy as np

    import mtx
    from mtx.fit.data import decode_samples
    from mtx.fit.train import FitOptions, fit
    from mtx.modalities import get_modality
    from mtx.pipeline import discover

    d = _data(modality, root / "d", max(4, steps * batch_size // 4))
    m = mtx.load_model(model, "seeded", "cpu", "auto")
    mod = get_modality(modality)
    opts = dict(OPTIONS.get(modality, {}))
    cfg_over = {**opts, **({"drop": ["y"]} if modality == "tabular" else {})}
    cfg = mod.config(**cfg_over)
    items, _ = discover([str(d)])
    dec = decode_samples(items, modality, cfg_over, workers=0)
    bare_tok = mod.tokenizer(m.spec, m.weights.front if mod.clip_init else None, cfg).train()
    times = {"fit": [], "bare": []}
    last = [None]

    def bare(batch):
        samples = [dec.cache.get(i) for i in batch]
        t = time.perf_counter()
        inputs = mod.collate(samples)
        with m.autocast():
            tokens = bare_tok(inputs)
        hidden = m.encoder(tokens.x.to(m.dtype), tokens.pad_mask).float()
        hidden.mean().backward()
        for p in bare_tok.parameters():
            p.grad = None
        return time.perf_counter() - t

    def on_event(ev):
        now = time.perf_counter()
        if ev["event"] == "step":
            if last[0] is not None:  # the first step pays one-time costs
                times["fit"].append(now - last[0])
                times["bare"].append(bare(ev["batch"]))
            else:
                bare(ev["batch"])  # warm the bare path too
            last[0] = time.perf_counter()
        elif ev["event"] in ("epoch", "start"):
            last[0] = None

    labels = {"target": "y"} if modality == "tabular" else {"labels": "folders"}
    n = len(dec)
    epochs = max(1, -(-steps * batch_size // max(1, int(n * 0.8))))
    fit([str(d)], root / "t.safetensors",
        FitOptions(modality=modality, model=model, weights=["seeded"], device="cpu", dtype=str(m.dtype).removeprefix("torch."),
                   epochs=epochs, batch_size=batch_size, workers=0, patience=0,
                   options={modality: opts} if opts else {}, **labels),
        progress=on_event, model=m)
    f, b = float(np.sum(times["fit"])), float(np.sum(times["bare"]))
    n_params = sum(p.numel() for p in bare_tok.parameters())
    return {"modality": modality, "steps_timed": len(times["fit"]), "batch_size": batch_size,
            "dtype": str(m.dtype).removeprefix("torch."), "tokenizer_params": n_params,
            "fit_steps_per_s": len(times["fit"]) / f if f else None,
            "bare_steps_per_s": len(times["bare"]) / b if b else None, "efficiency": b / f if f else None}


def memory_one(modality: str, model: str, batch_size: int, ckpt: bool) -> dict:
    import mtx
    from mtx.fit.train import FitOptions, fit

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = _data(modality, root / "d", max(4, batch_size // 2 + 2))
        m = mtx.load_model(model, "seeded", "cpu", "auto")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        labels = {"target": "y"} if modality == "tabular" else {"labels": "folders"}
        opts = OPTIONS.get(modality, {})
        fit([str(d)], root / "t.safetensors",
            FitOptions(modality=modality, model=model, weights=["seeded"], device="cpu",
                       dtype=str(m.dtype).removeprefix("torch."), epochs=1, batch_size=batch_size, val=0.0,
                       workers=0, grad_checkpointing=ckpt, options={modality: opts} if opts else {}, **labels),
            model=m)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"modality": modality, "batch_size": batch_size, "grad_checkpointing": ckpt,
            "peak_rss_mib": round(peak / 1024, 1), "after_model_load_mib": round(base / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-b16")
    ap.add_argument("--modalities", default="time_series,text,tabular,graph,audio,point_cloud")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--modality", default="audio")
    ap.add_argument("--batch-sizes", default="4,8,16,32")
    ap.add_argument("--one-memory", nargs=2, metavar=("BATCH", "CKPT"))
    ap.add_argument("--json-out", default="")
    a = ap.parse_args()
    if a.one_memory:
        print(json.dumps(memory_one(a.modality, a.model, int(a.one_memory[0]), a.one_memory[1] == "1")))
        return
    rows = []
    if a.memory:
        for bs in map(int, a.batch_sizes.split(",")):
            for ckpt in (0, 1):
                r = subprocess.run([sys.executable, __file__, "--model", a.model, "--modality", a.modality,
                                    "--one-memory", str(bs), str(ckpt)], capture_output=True, text=True, check=True)
                row = json.loads(r.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{a.modality} batch {bs:>3} checkpointing {'on ' if ckpt else 'off'}: peak RSS "
                      f"{row['peak_rss_mib']:.0f} MiB (model loaded: {row['after_model_load_mib']:.0f} MiB)", flush=True)
    else:
        for mod in a.modalities.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                r = speed(mod, a.model, a.steps, a.batch_size, Path(tmp))
            rows.append(r)
            print(f"{mod:<12} {r['dtype']}  batch {r['batch_size']}  tokenizer {r['tokenizer_params'] / 1e6:.1f}M params  "
                  f"fit {r['fit_steps_per_s']:.3f} steps/s  bare {r['bare_steps_per_s']:.3f} steps/s  "
                  f"efficiency {r['efficiency']:.2f}  ({r['steps_timed']} steps)", flush=True)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"model": a.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
