"""Cosine top-k over an embeddings file, in chunks (bounded memory for any number of rows).

A query is a file (embedded now with exactly the configuration recorded in the store, or
refused when this install cannot reproduce it), an id already in the store, or a vector.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DeviceError, MtxError, NotReproducible, UsageError, WeightsError

if TYPE_CHECKING:  # numpy loads on first use: `import mtx` stays cheap
    import numpy as np


class StoreEmbedder:
    """Embeds query files with the model, weights, tokenizers, options and pooling a store records.

    Every check that can fail is done before a vector is returned: preset and geometry,
    weights sha256, encoder sha256, per-modality preprocessing config, tokenizer sha256 and pool.
    """

    def __init__(self, reader, *, weights: str | list[str] | None = None, device: str | None = None,
                 tokenizers: list[str] | None = None):
        self.path = reader.path
        self.attrs = reader.attrs
        self.mod_attrs = reader.modality_attrs()
        self.notes: list[str] = []
        a = self.attrs
        try:
            self.run_config = json.loads(a.get("config_json", "{}"))
            self.modality_configs = json.loads(a.get("modality_configs_json", "{}"))
        except ValueError:
            raise self._refuse("its recorded configuration (config_json) is not valid JSON") from None
        self.model = self._load_model(weights, device, tokenizers)
        from .pipeline import Embedder, EmbedOptions

        self.emb = Embedder(self.model, EmbedOptions(model=self.model.spec.name, pool=self.run_config.get("pool"),
                                                     options={}))
        self._checked: dict[str, Any] = {}

    def _refuse(self, why: str) -> NotReproducible:
        return NotReproducible(f"{self.path}: cannot embed queries the way this file was embedded: {why}")

    def _load_model(self, weights, device, tokenizers=None):
        from .encoder import load_model
        from .fit.bundle import parse_refs, recorded_tokenizers
        from .weights import get_preset

        a = self.attrs
        preset = a.get("preset")
        try:
            spec = get_preset(str(preset))
        except MtxError:
            raise self._refuse(f"it was made with preset {preset!r}, which this mtx does not know; "
                               "use the mtx version that wrote it, or query by id") from None
        try:
            geom = json.loads(a.get("geometry_json") or "null")
        except ValueError:
            geom = None
        from .settings import diff_lines, differences

        diff = differences(geom, spec.geometry()) if isinstance(geom, dict) else []
        if diff:
            lines = "".join(f"\n  {line}" for line in diff_lines(diff, prefix="geometry."))
            raise self._refuse(f"preset {preset} has a different geometry in this mtx (recorded -> now):{lines}\n"
                               "use the mtx version that wrote it, or query by id")
        seeded = a.get("weights_source") == "seeded"
        if weights is None and seeded:
            weights = "seeded"
        dtype = str(a.get("compute_dtype") or "float32")
        fitted, self.missing_tokenizers = recorded_tokenizers(self.mod_attrs, parse_refs(tokenizers))
        for mod in sorted(self.mod_attrs):
            if self.mod_attrs[mod].get("init") == "file":
                self.notes.append(f"{mod} queries are embedded with the fitted tokenizer "
                                  f"{self.mod_attrs[mod].get('file_path')} (sha256 "
                                  f"{str(self.mod_attrs[mod].get('file_sha256'))[:16]}), as the store's rows")
        try:
            m = load_model(spec.name, weights, device, dtype, tokenizers=fitted)
        except WeightsError as e:
            raise self._refuse(f"its weights ({a.get('weights_source')}, sha256 "
                               f"{str(a.get('weights_sha256'))[:16]}) cannot be loaded here: {e.message}; "
                               "pass --weights with the files it was made with") from None
        except DeviceError as e:
            raise self._refuse(f"it was computed in {dtype}: {e.message}") from None
        d = m.describe()
        if d["weights_sha256"] != a.get("weights_sha256"):
            hint = ("it was embedded with --weights seeded; drop --weights" if seeded else
                    "pass --weights with the files it was made with (see `mtx info`)")
            raise self._refuse(f"weights differ: recorded {a.get('weights_source')} "
                               f"(sha256 {str(a.get('weights_sha256'))[:16]}), now {d['weights_source']} "
                               f"(sha256 {str(d['weights_sha256'])[:16]}); {hint}")
        if a.get("encoder_sha256") and d["encoder_sha256"] != a.get("encoder_sha256"):
            raise self._refuse(f"the encoder built from the same weights differs (sha256 "
                               f"{d['encoder_sha256'][:16]} vs recorded {str(a['encoder_sha256'])[:16]}); "
                               "this mtx/timm builds the blocks differently")
        return m

    def check(self, modality: str):
        """Resolve and verify ``modality``'s config, tokenizer and pool; returns the config."""
        if modality in self._checked:
            return self._checked[modality]
        from .modalities import get_modality

        mod = get_modality(modality)
        if modality in self.missing_tokenizers:
            raise self._refuse(self.missing_tokenizers[modality])
        ma = self.mod_attrs.get(modality, {})
        rec = self.modality_configs.get(modality)
        if rec is None and ma.get("config_json"):
            rec = json.loads(ma["config_json"])
        if rec is None:
            raise self._refuse(f"it records no {modality} preprocessing config")
        from .settings import config_defaults, diff_lines, differences

        try:
            cfg = mod.config(**rec)
        except (TypeError, ValueError) as e:  # an unknown field; a value this mtx does not allow
            raise self._refuse(f"its {modality} options do not fit this mtx ({e}); a newer or older mtx "
                               "wrote it") from None
        diff = differences(rec, cfg.to_dict(), config_defaults(mod.Config))
        if diff:
            lines = "".join(f"\n  {line}" for line in diff_lines(diff, prefix=f"{modality}."))
            raise self._refuse(f"{modality} preprocessing options differ in this mtx (recorded -> now):{lines}\n"
                               "a newer or older mtx wrote it; use that version, or query by id")
        self.emb.configs[modality] = cfg
        tok = self.emb.tokenizer(modality)
        if "sha256" in ma:
            sha = tok.describe()["sha256"]
            if sha != ma["sha256"]:
                raise self._refuse(f"the {modality} tokenizer differs: {ma.get('tokenizer')} init={ma.get('init')} "
                                   f"sha256 {str(ma['sha256'])[:16]} recorded, this mtx builds "
                                   f"{type(tok).__name__} init={tok.init} sha256 {sha[:16]}")
            if ma.get("pool") and self.emb.pool_mode(modality) != ma["pool"]:
                raise self._refuse(f"{modality} pooling differs ({self.emb.pool_mode(modality)} now, "
                                   f"{ma['pool']} recorded)")
        else:
            self.notes.append(f"{self.path} has no {modality} rows, so the {modality} tokenizer could not be "
                              "checked against a record (its config and seed are the recorded ones)")
        self._checked[modality] = cfg
        return cfg

    def embed_file(self, path: Path) -> list[tuple[str, str, np.ndarray]]:
        """[(label, modality, vector)] for each sample of ``path``."""
        from .errors import DecodeError, short
        from .modalities import get_modality
        from .pipeline import sample_id
        from .sniff import sniff

        rc = self.run_config
        rules = [tuple(r) for r in rc.get("rules") or []]
        dec = sniff(path, modality=rc.get("forced_modality"), rules=rules)
        cfg = self.check(dec.modality)

        def samples():
            try:
                for s in get_modality(dec.modality).load(path, cfg, dec.sniffed):
                    yield sample_id(str(path), s.key), dec.modality, s
            except MtxError:
                raise
            except Exception as e:  # noqa: BLE001
                raise DecodeError(short(e), path=str(path)) from None

        out: list[tuple[str, str, np.ndarray]] = []
        for result in self.emb.embed_stream(samples()):
            if result.errors:
                label, stage, message = result.errors[0]
                raise MtxError(f"{label}: {stage}: {message}")
            out.extend((label, dec.modality, v) for entries, vecs, _, _ in result.rows
                       for (label, _), v in zip(entries, vecs, strict=True))
        if not out:
            raise DecodeError("no samples in file (empty content)", path=str(path))
        return out


def topk(reader, queries: np.ndarray, k: int, *, modality: str | None = None,
         chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of each query over the store, reading ``chunk_rows`` rows at a time.

    Returns ``(rows [q, k'], scores [q, k'])`` sorted by descending score (ties: lower row
    first), ``k' = min(k, candidates)``. Memory: one chunk + ``q * (k + chunk)`` scores.
    """
    import numpy as np

    q = np.asarray(queries, np.float32)
    if q.ndim == 1:
        q = q[None]
    if q.shape[1] != reader.dim:
        raise UsageError(f"query vectors have {q.shape[1]} dims, {reader.path} has {reader.dim}")
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    nq = len(qn)
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_r = np.zeros((nq, 0), np.int64)
    for c in reader.chunks(modality=modality, vectors=True, rows=chunk_rows, reuse=True):
        x = c.vectors
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # no [c, D] temporary, unlike linalg.norm
        s = (qn @ x.T) / np.maximum(norms, 1e-12)[None, :]  # [q, c]
        rows = np.broadcast_to(c.rows[None, :], s.shape)
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(s, part, axis=1)
            rows = np.take_along_axis(rows, part, axis=1)
        best_s = np.concatenate([best_s, s.astype(np.float32)], axis=1)
        best_r = np.concatenate([best_r, rows], axis=1)
        if best_s.shape[1] > k:
            part = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(best_s, part, axis=1)
            best_r = np.take_along_axis(best_r, part, axis=1)
    order = np.lexsort((best_r, -best_s), axis=1) if best_s.size else np.zeros_like(best_r)
    return np.take_along_axis(best_r, order, axis=1), np.take_along_axis(best_s, order, axis=1)


def similar(
    store: str | Path,
    queries: str | Path | np.ndarray | list,
    *,
    k: int = 10,
    modality: str | None = None,
    weights: str | list[str] | None = None,
    device: str | None = None,
    chunk_rows: int | None = None,
    tokenizers: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Find the ``k`` rows of ``store`` most cosine-similar to each query.

    Args:
        store: an mtx HDF5 file.
        queries: one or more of: a file path (embedded with the store's recorded configuration;
            a file with several samples gives one query per sample), an id already in the store,
            or a vector / ``[q, D]`` array.
        k: results per query.
        modality: only rank rows of this modality.
        weights: weight files when the store was not made with ``seeded`` weights and they are
            not found through ``MTX_WEIGHTS`` / the Hugging Face cache.
        device: where query files are embedded (``auto``, ``cpu``, ``cuda``...).
        chunk_rows: rows read per step (default: ~64 MiB of vectors).
        tokenizers: fitted tokenizer files (``MODALITY=FILE``) when those the store records
            have moved (each is checked against the recorded sha256).

    Returns:
        One dict per query: ``query``, ``kind`` (``file``/``id``/``vector``), ``modality`` and
        ``results``: ``[{"rank", "id", "modality", "score", "path", "row"}]`` best first.

    Raises:
        NotReproducible: a query file cannot be embedded the way the store was (other weights,
            tokenizers, preset or options); the message says which.
        UsageError: a query is neither a file nor an id in the store; bad ``k`` or modality.

    Example:
        >>> hits = mtx.similar("features.h5", "examples/gradient.png", k=3)  # doctest: +SKIP
        >>> hits[0]["results"][0]["id"], round(hits[0]["results"][0]["score"], 4)
        ('gradient.png', 1.0)
    """
    import numpy as np

    from .export import StoreReader

    if k < 1:
        raise UsageError(f"-k {k}: must be at least 1")
    if isinstance(queries, (str, Path)) or (isinstance(queries, np.ndarray) and queries.ndim == 1):
        queries = [queries]
    elif isinstance(queries, np.ndarray):
        queries = list(queries)
    with StoreReader(store) as r:
        if modality is not None and r.code(modality) is None:
            from .modalities import get_modality

            get_modality(modality)  # unknown names raise; known ones simply have no rows here
        expanded, notes = _query_vectors(r, queries, weights, device, tokenizers)
        if not expanded:
            raise UsageError("no query given")
        q = np.stack([v for _, v in expanded])
        rows, scores = topk(r, q, k, modality=modality, chunk_rows=chunk_rows)
        meta = r.rows(rows.reshape(-1))
    out = []
    for qi, ((name, kind, mod), _) in enumerate(expanded):
        res = []
        for j in range(rows.shape[1]):
            flat = qi * rows.shape[1] + j
            res.append({"rank": j + 1, "id": meta["id"][flat], "modality": meta["modality"][flat],
                        "score": float(scores[qi, j]), "path": meta["path"][flat], "row": int(rows[qi, j])})
        out.append({"query": name, "kind": kind, "modality": mod, "results": res,
                    **({"notes": notes} if notes and kind == "file" else {})})
    return out


Label = tuple[str, str, str | None]  # (query, kind, modality)


def _query_vectors(r, queries: list, weights, device, tokenizers=None) -> tuple[list[tuple[Label, np.ndarray]], list[str]]:
    """Each query as ``((label, kind, modality), vector)`` (a file query: one per sample), and
    the notes of the query embedder."""
    import numpy as np

    labels: list[Label] = []
    vecs: list[np.ndarray | None] = []
    files, ids = [], []
    for i, qy in enumerate(queries):
        if isinstance(qy, np.ndarray):
            labels.append((f"vector[{i}]", "vector", None))
            vecs.append(qy.astype(np.float32).reshape(-1))
            continue
        kind = "file" if Path(qy).is_file() else "id"
        (files if kind == "file" else ids).append((i, Path(qy) if kind == "file" else str(qy)))
        labels.append((str(qy), kind, None))
        vecs.append(None)
    if ids:
        for i, v, mod in _id_vectors(r, ids):
            vecs[i] = v
            labels[i] = (labels[i][0], "id", mod)
    emb = StoreEmbedder(r, weights=weights, device=device, tokenizers=tokenizers) if files else None
    file_vecs = {i: emb.embed_file(p) for i, p in files} if emb else {}
    expanded: list[tuple[Label, np.ndarray]] = []
    for i, lab in enumerate(labels):
        if i in file_vecs:
            expanded.extend(((name, "file", mod), v) for name, mod, v in file_vecs[i])
        else:
            expanded.append((lab, vecs[i]))
    return expanded, emb.notes if emb else []


def _id_vectors(r, ids: list[tuple[int, str]]) -> list[tuple[int, np.ndarray, str]]:
    """``(query index, vector, modality)`` of queries that are ids in the store."""
    found = r.find_ids([q for _, q in ids])
    missing = [q for _, q in ids if q not in found]
    if missing:
        raise UsageError(f"{missing[0]!r}: not a file and not an id in {r.path}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + "; ids are paths relative to the embedded folder (see `mtx export`)")
    rows = [found[q] for _, q in ids]
    v = r.vectors_at(rows)
    meta = r.rows(rows)
    return [(i, v[j], meta["modality"][j]) for j, (i, _) in enumerate(ids)]
