"""Held-out probe accuracy: seeded tokenizer vs fitted (supervised) vs fitted (contrastive, no labels).

    python benchmarks/fit_quality.py [--model meta-b16] [--modalities text,graph] [--per 16 --held 12]

For each modality a labelled set from ``mtx.fit.tasks`` (classes differ in structure, not in
mean or scale) is generated twice with different seeds: one set to fit on, one held out. The
held-out set is embedded with the seeded tokenizer, the supervised fitted one and the
contrastive fitted one (which never saw a label), and probed as ``mtx probe`` does: stratified
5-fold logistic regression and cosine k-NN (k = 5), with the chance level. Seeded encoder
weights (the published ones need a download); the tokenizers differ, the encoder does not.
Prints a table and writes JSON (--json-out).
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

# The point tokenizer's mini-PointNet dominates CPU time; smaller clouds keep the run short.
OPTIONS = {"point_cloud": {"points": 128, "groups": 32, "group_size": 8}}
EPOCHS = {"tabular": 30}


def run(modality: str, model: str, per: int, held: int, epochs: int, contrastive: bool, root: Path) -> dict:
    import mtx
    from mtx.fit.tasks import TASKS
    from mtx.fit.train import FitOptions, fit
    from mtx.probe import probe_arrays

    if modality == "tabular":
        TASKS[modality](root / "train", per * 4, seed=1)
        TASKS[modality](root / "held", held * 4, seed=2)
    else:
        TASKS[modality](root / "train", per, seed=1)
        TASKS[modality](root / "held", held, seed=2)
    opts = dict(OPTIONS.get(modality, {}))

    def labels_of(ids):
        if modality == "tabular":
            rows = list(csv.DictReader(open(root / "held" / "table.csv")))
            return [rows[int(i.split("#row=")[1])]["y"] for i in ids]
        return [i.split("/")[0] for i in ids]

    m = mtx.load_model(model, "seeded", "cpu", "auto")
    dtype = str(m.dtype).removeprefix("torch.")
    embed_opts = {modality: {**opts, **({"drop": ["y"]} if modality == "tabular" else {})}}

    def probe(tokenizer=None):
        mm = mtx.load_model(model, "seeded", "cpu", dtype, tokenizers=[str(tokenizer)] if tokenizer else None)
        ids, x = mtx.embed(str(root / "held"), model=mm, modality=modality, options=embed_opts, batch_size=16)
        r = probe_arrays(x, labels_of(ids))
        return {"linear": r["linear"]["accuracy"], "knn": r["knn"]["accuracy"], "chance": r["chance"], "n": r["n"]}

    out = {"modality": modality, "per_class": per, "held_per_class": held,
           "seeded": probe()}
    labels = {"target": "y"} if modality == "tabular" else {"labels": "folders"}
    ep = EPOCHS.get(modality, epochs)
    t = time.perf_counter()
    s = fit([str(root / "train")], root / "sup.safetensors",
            FitOptions(modality=modality, model=model, weights=["seeded"], device="cpu", dtype=dtype, epochs=ep,
                       batch_size=16, workers=0, options={modality: opts} if opts else {},
                       patience=0 if modality == "tabular" else 8, **labels), model=m)
    out["supervised"] = {**probe(root / "sup.safetensors"), "epochs": s["epochs"], "fit_s": round(time.perf_counter() - t, 1)}
    if contrastive:
        t = time.perf_counter()
        s = fit([str(root / "train")], root / "con.safetensors",
                FitOptions(modality=modality, model=model, weights=["seeded"], device="cpu", dtype=dtype,
                           objective="contrastive", epochs=epochs, batch_size=16, workers=0, temperature=0.2,
                           patience=0, options={modality: opts} if opts else {}), model=m)
        out["contrastive"] = {**probe(root / "con.safetensors"), "epochs": s["epochs"],
                              "fit_s": round(time.perf_counter() - t, 1)}
    out["dtype"] = dtype
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-b16")
    ap.add_argument("--modalities", default="text,tabular,time_series,audio,graph,point_cloud")
    ap.add_argument("--contrastive", default="text,tabular,time_series,audio,graph,point_cloud")
    ap.add_argument("--per", type=int, default=16, help="training samples per class (tabular: rows / 4)")
    # Embedding is cheap next to training: a held-out probe of 10 per class spreads by about
    # +-0.08, of 24 per class by about +-0.05.
    ap.add_argument("--held", type=int, default=24, help="held-out samples per class")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--json-out", default="")
    a = ap.parse_args()
    rows = []
    for mod in a.modalities.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            r = run(mod, a.model, a.per if mod != "graph" else 2 * a.per, a.held, a.epochs,
                    mod in a.contrastive.split(","), Path(tmp))
        rows.append(r)
        c = r.get("contrastive", {})
        print(f"{mod:<12} chance {r['seeded']['chance']:.2f}  linear seeded {r['seeded']['linear']:.3f} -> fitted "
              f"{r['supervised']['linear']:.3f}   k-NN seeded {r['seeded']['knn']:.3f} -> contrastive "
              f"{c.get('knn', float('nan')):.3f} (linear {c.get('linear', float('nan')):.3f})   "
              f"fit {r['supervised']['fit_s']} s + {c.get('fit_s', 0)} s", flush=True)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"model": a.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
