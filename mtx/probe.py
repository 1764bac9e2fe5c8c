"""How much a store's vectors know about a labelling: linear probe and k-NN, with the chance level.

``mtx probe OUT.h5 --labels FILE|folders`` runs a stratified k-fold cross-validation of a
logistic regression (on standardised vectors) and of a cosine k-nearest-neighbour vote, and
reports accuracy and macro-F1 (mean and standard deviation over the folds) beside the chance
level (the share of the most frequent class: what always answering it scores). ``mtx fit``
reports its validation split the same way with :func:`probe_split` (train on the training
split, score the validation split). scikit-learn does the fitting.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError


def _classes(y: list[str]) -> tuple[np.ndarray, list[str]]:
    names = sorted(set(y))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in y], np.int64), names


def _chance(y: np.ndarray) -> float:
    return float(np.bincount(y).max() / len(y)) if len(y) else 0.0


def _models(k: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"linear": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)),
            "knn": KNeighborsClassifier(n_neighbors=k, metric="cosine")}


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(y_true, y_pred)), float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def probe_split(x_train: np.ndarray, y_train: list[str], x_val: np.ndarray, y_val: list[str], *,
                k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Fit on the training split, score the validation split (what ``mtx fit`` reports)."""
    yt, names = _classes(list(y_train) + list(y_val))
    ytr, yva = yt[:len(y_train)], yt[len(y_train):]
    out: dict[str, Any] = {"protocol": "train/validation split", "n_train": len(ytr), "n": len(yva),
                           "classes": names, "chance": _chance(yva), "k": min(k, len(ytr))}
    if len(set(ytr.tolist())) < 2 or not len(yva):
        return out
    for name, model in _models(min(k, len(ytr)), seed).items():
        model.fit(x_train, ytr)
        acc, f1 = _scores(yva, model.predict(x_val))
        out[name] = {"accuracy": acc, "macro_f1": f1}
    return out


def probe_arrays(x: np.ndarray, y: list[str], *, folds: int = 5, k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Stratified ``folds``-fold cross-validation of the linear probe and k-NN on ``x``/``y``."""
    from sklearn.model_selection import StratifiedKFold

    yi, names = _classes(y)
    counts = np.bincount(yi, minlength=len(names))
    keep_cls = counts >= 2
    notes = []
    if not keep_cls.all():
        dropped = [names[i] for i in np.flatnonzero(~keep_cls)]
        notes.append(f"{len(dropped)} class(es) with a single sample left out: {', '.join(dropped[:5])}")
        sel = keep_cls[yi]
        x, yi = x[sel], yi[sel]
        yi, names = _classes([names[i] for i in yi])
        counts = np.bincount(yi, minlength=len(names))
    if len(names) < 2:
        raise UsageError("probe: fewer than two classes with at least two samples each")
    n_splits = int(min(folds, counts.min()))
    if n_splits < folds:
        notes.append(f"{n_splits} folds (the smallest class has {counts.min()} samples)")
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    res: dict[str, list[tuple[float, float]]] = {"linear": [], "knn": []}
    kk = k
    for tr, te in skf.split(x, yi):
        kk = min(k, len(tr))
        for name, model in _models(kk, seed).items():
            model.fit(x[tr], yi[tr])
            res[name].append(_scores(yi[te], model.predict(x[te])))
    out: dict[str, Any] = {"protocol": f"stratified {n_splits}-fold cross-validation", "n": len(yi),
                           "classes": names, "chance": _chance(yi), "k": kk, "folds": n_splits}
    for name, r in res.items():
        a = np.array(r)
        out[name] = {"accuracy": float(a[:, 0].mean()), "accuracy_std": float(a[:, 0].std()),
                     "macro_f1": float(a[:, 1].mean()), "macro_f1_std": float(a[:, 1].std())}
    if notes:
        out["notes"] = notes
    return out


def probe_store(path: str | Path, labels: str | Path, *, folds: int = 5, k: int = 5, seed: int = 0,
                modality: str | None = None) -> dict[str, Any]:
    """Cross-validated linear probe and k-NN of a store's vectors against a labelling.

    Args:
        path: an mtx HDF5 output.
        labels: a labels file (CSV/TSV/JSONL with ``id`` or ``path`` and ``label``) or ``"folders"``.
        folds: cross-validation folds (fewer when the smallest class is smaller).
        k: neighbours of the k-NN vote (cosine).
        seed: fold assignment and solver seed.
        modality: only this modality's rows.

    Returns:
        ``{"store", "labels", "report", "n", "classes", "chance", "linear": {"accuracy",
        "macro_f1", ...}, "knn": {...}}``; ``report`` counts unknown, missing and duplicate ids.

    Raises:
        UsageError: labels match no row, one class only.
    """
    from .export import StoreReader
    from .fit.labels import check_usable, match_labels

    with StoreReader(path) as r:
        ids, paths, vecs = [], [], []
        for c in r.chunks(modality=modality, vectors=True, ids=True, paths=True):
            vecs.append(np.array(c.vectors, np.float32))
            ids += c.ids
            paths += c.paths
    if not ids:
        raise UsageError(f"{path}: no rows" + (f" of {modality}" if modality else ""))
    x = np.concatenate(vecs)
    lab, rep = match_labels(ids, paths, labels if labels == "folders" else Path(labels))
    check_usable(lab, "classification", f"--labels {labels}")
    sel = [i for i, v in enumerate(lab) if v is not None]
    out = probe_arrays(x[sel], [lab[i] for i in sel], folds=folds, k=k, seed=seed)
    return {"store": str(path), "labels": str(labels), "report": rep.to_dict(), **out}
