"""The Python API behind ``mtx.embed``, ``mtx.tokenize`` and ``mtx.sniff``."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MtxError, short


def _model(model, weights, device, dtype):
    from .encoder import Model, load_model

    return model if isinstance(model, Model) else load_model(model, weights, device, dtype)


def embed(
    paths: str | Path | Iterable[str | Path],
    *,
    model: Any = "meta-b16",
    weights: str | list[str] | None = None,
    device: str | None = None,
    dtype: str = "float32",
    modality: str | None = None,
    pool: str | None = None,
    batch_size: int = 32,
    options: dict[str, dict[str, Any]] | None = None,
    on_error: str = "raise",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    hidden: bool = False,
    skip_unknown: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Embed files in memory (no HDF5), in-process.

    Args:
        paths: a file, a directory (recursive) or an iterable of them.
        model: a preset name or an already loaded :class:`mtx.encoder.Model`.
        weights: weights path(s), ``"seeded"``, or None for ``MTX_WEIGHTS`` / the HF cache.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        dtype: compute dtype.
        modality: force one modality for every file.
        pool: ``cls``, ``mean`` or ``max`` (default: per modality).
        batch_size: encoder rows per batch; shorter rows are added until a batch holds as many
            tokens as ``batch_size`` images (up to 16 x ``batch_size`` rows).
        options: per-modality config overrides, e.g. ``{"video": {"frames": 32}}``.
        on_error: ``"raise"`` (first bad file raises) or ``"skip"`` (bad files are left out).
        include: keep only files matching one of these globs (matched against the path relative
            to the folder, the name and the absolute path; ``*`` also matches ``/``).
        exclude: leave out files matching one of these globs.
        hidden: also take hidden files and folders inside folders (skipped by default).
        skip_unknown: leave out files no modality claims, even with ``on_error="raise"``.

    Returns:
        ``(ids, vectors)``: sample ids and a float32 array ``[n, D]`` in the same order.

    Raises:
        UsageError: a path that does not exist.
        MtxError: a bad file (with ``on_error="raise"``), missing weights.
        mtx.settings.OptionError: an option of the wrong type or out of its range (a
            ValueError too), raised before any work.

    Example:
        >>> ids, vecs = mtx.embed("examples/", model="tiny", weights="seeded")  # doctest: +SKIP
        >>> vecs.shape[1]
        64
    """
    from .encoder import Model
    from .errors import UsageError
    from .pipeline import Embedder, EmbedOptions, Filters, discover, process_file, sample_id

    if isinstance(paths, (str, Path)):
        paths = [paths]
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
    EmbedOptions(model=model.spec.name if isinstance(model, Model) else model, modality=modality,
                 pool=pool, batch_size=batch_size, options=options or {}).validate()  # before any work
    found = discover([str(p) for p in paths], filters=Filters(tuple(include), tuple(exclude), hidden))
    if found.missing:
        raise UsageError("; ".join(f"{p}: no such file or directory" for p in found.missing))
    items, problems = found
    if problems and on_error == "raise":
        raise MtxError(f"{problems[0][0]}: {problems[0][1]}")
    m = _model(model, weights, device, dtype)
    if m.weights.tokenizer_files:  # fitted tokenizers bring the preprocessing they were trained with
        from .fit.bundle import model_options

        options = model_options(m, options)
    opts = EmbedOptions(model=m.spec.name, modality=modality, pool=pool, batch_size=batch_size,
                        options=options or {}).validate()
    emb = Embedder(m, opts)
    configs = {name: emb.config(name).to_dict() for name in {*(opts.options or {})}}

    def samples():
        """(sample id, modality, sample) of every file that decodes."""
        for inp in items:
            events: list = []
            process_file(inp, modality, [], configs, events.append)
            last = events[-1] if events else None
            if last is not None and last.kind == "unclaimed":
                if on_error == "raise" and not skip_unknown:
                    raise MtxError(f"{inp.path}: sniff: {last.message}")
                continue
            if last is not None and last.kind == "fail":
                if on_error == "raise":
                    raise MtxError(f"{inp.path}: {last.stage}: {last.message}")
                continue
            for ev in events:
                if ev.kind == "sample":
                    yield sample_id(inp.id, ev.sample.key), ev.modality, ev.sample

    ids: list[str] = []
    vecs: list[np.ndarray] = []
    for result in emb.embed_stream(samples()):
        if result.errors and on_error == "raise":
            sid, _, message = result.errors[0]
            raise MtxError(f"{sid}: {message}")
        for entries, v, _, _ in result.rows:
            ids.extend(sid for sid, _ in entries)
            vecs.append(v)
    if not vecs:
        return [], np.zeros((0, m.spec.dim), np.float32)
    return ids, np.concatenate(vecs)


def inspect_file(model, path: str | Path, *, modality: str | None = None,
                 rules: list[tuple[str, str]] | None = None,
                 options: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """What the encoder receives for ``path``: a report dict and the first sample's tokens [N, D]."""
    from .errors import DecodeError, UsageError
    from .modalities import get_modality
    from .pipeline import Embedder, EmbedOptions, sample_id
    from .pipeline.options import check_rules
    from .sniff import sniff as _sniff

    path = Path(path)
    rules = check_rules(rules)
    samples = []
    n = 0
    try:
        dec = _sniff(path, modality=modality, rules=rules)
        mod = get_modality(dec.modality)
        emb = Embedder(model, EmbedOptions(model=model.spec.name, options=options or {}).validate())
        cfg = emb.config(dec.modality)
        for s in mod.load(path, cfg, dec.sniffed):
            if len(samples) < 5:
                samples.append(s)
            n += 1
    except MtxError as e:
        if e.path is None and not isinstance(e, UsageError):  # a refusal names the file it is about
            e.path = str(path)
        raise
    except Exception as e:  # noqa: BLE001
        raise DecodeError(short(e), path=str(path)) from None
    if not samples:
        raise DecodeError("no samples in file (empty content)", path=str(path))
    tok = emb.tokenizer(dec.modality)
    reports = []
    first = None
    for s in samples:
        t = emb.tokens(dec.modality, [s])
        pad = 0 if t.pad_mask is None else int(t.pad_mask[0].sum())
        n_tok = t.x.shape[1] - pad
        if first is None:
            x = t.x[0].float().cpu()
            first = (x if t.pad_mask is None else x[~t.pad_mask[0].cpu()]).numpy().astype(np.float32)
        reports.append({"id": sample_id(path.name, s.key), "segments": s.n_segments,
                        "tokens": n_tok, "padding": pad,
                        "arrays": {k: [list(a.shape), str(a.dtype)] for k, a in s.arrays.items()},
                        "meta": s.meta})
    rep = {"path": str(path), "modality": dec.modality, "reason": dec.reason,
           "candidates": [{"modality": c.modality, "strength": c.strength_name, "reason": c.reason}
                          for c in dec.candidates],
           "tokenizer": tok.describe(), "pool": emb.pool_mode(dec.modality), "dim": model.spec.dim,
           "config": cfg.to_dict(), "n_samples": n, "samples": reports,
           "saved_shape": list(first.shape)}
    return rep, first


def tokenize(path: str | Path, *, model: Any = "meta-b16", weights: str | list[str] | None = None,
             modality: str | None = None, options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Describe what the encoder receives for one file.

    Args:
        path: the file.
        model: preset name or loaded model.
        weights: as for :func:`embed`.
        modality: force a modality.
        options: per-modality config overrides.

    Returns:
        A dict with ``modality``, ``reason``, ``tokenizer`` (class, init, seed, sha256),
        ``samples`` (per sample: tokens, padding, arrays, preprocessing facts) and ``tokens``,
        the first sample's encoder-input tokens as a float32 array ``[N, D]``.

    Example:
        >>> r = mtx.tokenize("examples/photo.jpg", model="tiny", weights="seeded")  # doctest: +SKIP
        >>> r["tokens"].shape
        (197, 64)
    """
    from .pipeline import EmbedOptions

    EmbedOptions(modality=modality, options=options or {}).validate()  # before the model loads
    m = _model(model, weights, "cpu", "float32")
    if m.weights.tokenizer_files:
        from .fit.bundle import model_options

        options = model_options(m, options)
    rep, first = inspect_file(m, path, modality=modality, options=options)
    rep["tokens"] = first
    return rep
