"""Writing a final file from its sources (the previous final file, parts, shard parts).

Memory is O(files + chunk), not O(rows x Python objects): per row only fixed-size numpy data is
held (a 16-byte blake2b digest of (path, id) and an int32 index of the row's path among the
distinct paths); the winner per (path, id) is found with a numpy sort, whether a row is part of
its file's current version is decided per (path, source), and the per-row datasets are
filled window by window of ``chunk`` source rows.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError
from .store import Failure, FileRecord, _h5, _write_records, read_failures, read_files

__all__ = ["consolidate"]

_NO_SOURCE = -1


@dataclass
class _Scan:
    """What the sources hold: records and failures (later sources win), and per row a key."""

    files: dict[str, FileRecord] = field(default_factory=dict)
    rec_src: dict[str, list[int]] = field(default_factory=dict)  # path -> sources with a record of it, in order
    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)
    old_mod_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    has_tokens: bool = False
    paths: dict[bytes, int] = field(default_factory=dict)  # distinct row paths -> index
    offsets: list[int] = field(default_factory=lambda: [0])  # first global row of each source
    keys: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), np.uint64))  # digest of (path, id), [2, rows]
    pidx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # row -> index into paths


def _raw(ds, a: int, b: int) -> np.ndarray:
    """Rows a:b of a string dataset as an object array of bytes."""
    v = ds[a:b]
    return v if v.dtype == object else v.astype(object)


def _scan_rows(f, scan: _Scan, start: int, chunk: int) -> int:
    """Fill the key and path index of every row of the open source ``f`` (global rows from
    ``start``); returns its rows."""
    n = len(f["id"])
    intern = scan.paths
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        ids, paths = _raw(f["id"], a, b), _raw(f["path"], a, b)
        digest = b"".join(hashlib.blake2b(_b(p) + b"\0" + _b(i), digest_size=16).digest()
                          for p, i in zip(paths, ids, strict=True))
        scan.keys[:, start + a:start + b] = np.frombuffer(digest, np.uint64).reshape(-1, 2).T
        scan.pidx[start + a:start + b] = np.fromiter((intern.setdefault(_b(p), len(intern)) for p in paths),
                                                     np.int32, b - a)
    return n


def _b(v) -> bytes:
    return v if isinstance(v, bytes) else v.encode("utf-8", "surrogateescape")


def _scan_sources(h5py, sources: list[Path], chunk: int) -> _Scan:
    scan = _Scan()
    total = 0
    for src in sources:  # the row count first: the per-row arrays are allocated once
        with h5py.File(src, "r") as f:
            total += len(f["id"])
    scan.keys = np.empty((2, total), np.uint64)  # two contiguous halves: sorted without a copy
    scan.pidx = np.empty(total, np.int32)
    for si, src in enumerate(sources):
        with h5py.File(src, "r") as f:
            for r in read_files(f):
                scan.files[r.path] = r
                scan.rec_src.setdefault(r.path, []).append(si)
            for x in read_failures(f):
                scan.failures[(x.path, x.stage)] = x
            scan.offsets.append(scan.offsets[-1] + _scan_rows(f, scan, scan.offsets[-1], chunk))
            scan.has_tokens |= "tokens" in f
            if "modalities" in f:
                for name, g in f["modalities"].items():
                    scan.old_mod_attrs[name] = dict(g.attrs)
    if scan.offsets[-1] != total:
        raise StoreError(f"a source changed while the final file was written ({scan.offsets[-1]} != {total} rows)")
    return scan


def _window(scan: _Scan) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct path, the sources whose rows of it are current: (after, up to and including).

    A row is current when its file is ``ok`` and the row comes after the path's previous record
    (rows of an earlier version of a changed file, or of a run that later failed it, are dropped)
    and no later than its last record (a file record is committed with or after its rows).
    """
    lo = np.full(len(scan.paths), _NO_SOURCE, np.int64)
    hi = np.full(len(scan.paths), _NO_SOURCE, np.int64)
    for p, i in scan.paths.items():
        path = p.decode("utf-8", "surrogateescape")
        rec = scan.files.get(path)
        if rec is not None and rec.status == "ok":
            s = scan.rec_src[path]
            lo[i], hi[i] = (s[-2] if len(s) > 1 else -1), s[-1]
    return lo, hi


def _plan_rows(scan: _Scan) -> tuple[int, dict[int, tuple[np.ndarray, np.ndarray]], dict[tuple[str, str], Failure]]:
    """(rows out, {source: (source rows ascending, their output rows)}, the failures still current).

    Per (path, id) the last occurrence wins (sources in order), placed where the key first
    occurred; rows that are not part of their file's current version are left out.
    """
    files = scan.files
    failures = {k: v for k, v in scan.failures.items()
                if files.get(v.path) is None or files[v.path].status == "failed"}
    n_all = scan.keys.shape[1]
    if n_all == 0:
        return 0, {}, failures
    first, last = _first_last(scan.keys)
    src = (np.searchsorted(np.asarray(scan.offsets), last, side="right") - 1).astype(np.int32)
    lo, hi = _window(scan)
    p = scan.pidx[last]
    keep = (lo[p] < src) & (src <= hi[p])
    del p
    first, last, src = first[keep], last[keep], src[keep]
    del keep
    by_first = np.argsort(first, kind="stable")
    del first
    last, src = last[by_first], src[by_first]
    del by_first
    by_src: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for si in np.unique(src).tolist():
        outs = np.flatnonzero(src == si)
        rows = last[outs] - scan.offsets[si]
        o = np.argsort(rows, kind="stable")
        by_src[si] = (rows[o], outs[o])
    return len(last), by_src, failures


def _first_last(keys: np.ndarray, block: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key (column of ``keys``): the rows of its first and its last occurrence."""
    order = np.lexsort((keys[1], keys[0]))  # stable: equal keys stay in row order
    n = len(order)
    new = np.ones(n, bool)  # new[i]: order[i] starts a group of equal keys
    for a in range(1, n, block):  # compared a block at a time: no full sorted copy of the keys
        b = min(n, a + block)
        cur, prev = keys[:, order[a:b]], keys[:, order[a - 1:b - 1]]
        new[a:b] = (cur != prev).any(axis=0)
    starts = np.flatnonzero(new)
    del new
    first = order[starts]
    starts[:-1] = starts[1:] - 1
    starts[-1] = n - 1
    return first, order[starts]


def _pair_runs(rows: np.ndarray, outs: np.ndarray):
    """Source rows (ascending) and their output rows -> runs (src start, out start, length)."""
    if len(rows) == 0:
        return
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(outs) != 1)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(rows[s]), int(outs[s]), e - s


def _runs(outs: np.ndarray):
    """Split increasing output indices into contiguous runs: (start, end, offset in block)."""
    if len(outs) == 0:
        return
    breaks = np.flatnonzero(np.diff(outs) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(outs)]])
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(outs[s]), int(outs[e - 1]) + 1, s


def _virtual_embeddings(h5py, out, sources: list[Path], by_src, dest: Path, n: int, dim: int, dt) -> None:
    """``/embeddings`` as an HDF5 virtual dataset over the sources (paths relative to ``dest``)."""
    layout = h5py.VirtualLayout(shape=(n, dim), dtype=dt)
    for si, (rows, outs) in by_src.items():
        with h5py.File(sources[si], "r") as f:
            src_shape = f["embeddings"].shape
            if f["embeddings"].dtype != dt:
                raise StoreError(f"{sources[si]}: stored as {f['embeddings'].dtype}, expected {dt}")
        rel = os.path.relpath(sources[si], dest.parent)
        vs = h5py.VirtualSource(rel, "embeddings", shape=src_shape)
        for r0, o0, ln in _pair_runs(rows, outs):
            layout[o0:o0 + ln] = vs[r0:r0 + ln]
    out.create_virtual_dataset("embeddings", layout, fillvalue=np.nan)


def _windows(rows: np.ndarray, chunk: int):
    """Split ascending source rows into windows spanning at most ``chunk`` source rows:
    (start, end) positions in ``rows``; a window's rows lie in rows[start]..rows[start]+chunk-1."""
    s = 0
    while s < len(rows):
        e = int(np.searchsorted(rows, rows[s] + chunk, side="left"))
        yield s, e
        s = e


def _mod_codes(ds, a: int, b: int, mod_index: dict[str, int]) -> np.ndarray:
    """Rows a:b of a source's /modality as codes of the output enum (enum in final files,
    strings in parts)."""
    if ds.dtype.kind in "iu":
        h5py = _h5()
        to_out = np.zeros(256, np.uint8)
        for name, v in h5py.check_enum_dtype(ds.dtype).items():
            to_out[v] = mod_index[name]
        return to_out[ds[a:b]]
    return np.fromiter((mod_index[_b(m).decode()] for m in _raw(ds, a, b)), np.uint8, b - a)


@dataclass
class _Out:
    """The per-row datasets of the output being filled."""

    emb: Any
    ids: Any
    paths: Any
    mods: np.ndarray
    ntok: np.ndarray
    tok_len: np.ndarray  # tokens per output row (-1: its source saved none)
    dt: Any


def _copy_source(f, rows: np.ndarray, outs: np.ndarray, out: _Out, mod_index: dict[str, int], chunk: int) -> None:
    """Copy one source's kept rows into the output, a window of ``chunk`` source rows at a time."""
    off = f["tokens/offsets"] if "tokens" in f else None
    for s, e in _windows(rows, chunk):
        r, o = rows[s:e], outs[s:e]
        a, b = int(r[0]), int(r[-1]) + 1
        sel = r - a
        ids, paths = _raw(f["id"], a, b)[sel], _raw(f["path"], a, b)[sel]
        data = f["embeddings"][a:b][sel] if out.emb is not None else None
        for o0, o1, d in _runs(o):
            out.ids[o0:o1] = ids[d:d + o1 - o0]
            out.paths[o0:o1] = paths[d:d + o1 - o0]
            if data is not None:
                out.emb[o0:o1] = data[d:d + o1 - o0].astype(out.dt)
        out.mods[o] = _mod_codes(f["modality"], a, b, mod_index)[sel]
        out.ntok[o] = f["n_tokens"][a:b][sel]
        if off is not None:
            out.tok_len[o] = np.diff(off[a:b + 1])[sel]


def _copy_tokens(h5py, sources: list[Path], by_src, out_h5, tok_len: np.ndarray, dim: int) -> None:
    """/tokens of the output: each row's token block from its source, in output order."""
    has = tok_len >= 0
    starts = np.zeros(len(tok_len), np.int64)
    starts[has] = np.cumsum(tok_len[has], dtype=np.int64) - tok_len[has]
    total = int(tok_len[has].sum())
    g = out_h5.create_group("tokens")
    data = g.create_dataset("data", shape=(total, dim), dtype=np.float32) if total else \
        g.create_dataset("data", data=np.zeros((0, dim), np.float32))
    g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(tok_len[has], dtype=np.int64)]).astype(np.int64))
    for si, (rows, outs) in by_src.items():
        with h5py.File(sources[si], "r") as f:
            if "tokens" not in f:
                continue
            off, src_data = f["tokens/offsets"], f["tokens/data"]
            for s, e in _windows(rows, 65536):
                r, o = rows[s:e], outs[s:e]
                o_off = off[int(r[0]):int(r[-1]) + 2]
                for ri, oi in zip((r - r[0]).tolist(), o.tolist(), strict=True):
                    ln = int(tok_len[oi])
                    if ln:
                        data[starts[oi]:starts[oi] + ln] = src_data[o_off[ri]:o_off[ri + 1]]


def _row_datasets(h5py, out_h5, sources, by_src, n: int, dim: int, dt, virtual: bool, dest: Path) -> _Out:
    if virtual:
        _virtual_embeddings(h5py, out_h5, sources, by_src, dest, n, dim, dt)
        emb = None
    else:
        emb = out_h5.create_dataset("embeddings", shape=(n, dim), dtype=dt,
                                    chunks=(max(1, min(n, max(1, (1 << 20) // (dim * 4)))), dim) if n else None)
    text = h5py.string_dtype("utf-8")
    return _Out(emb=emb, ids=out_h5.create_dataset("id", shape=(n,), dtype=text),
                paths=out_h5.create_dataset("path", shape=(n,), dtype=text),
                mods=np.zeros(n, np.uint8), ntok=np.zeros(n, np.int32), tok_len=np.full(n, -1, np.int32), dt=dt)


def consolidate(sources: list[Path], dest: Path, attrs: dict[str, Any],
                modality_attrs: dict[str, dict[str, Any]], store_dtype: str, dim: int,
                chunk: int = 65536, virtual: bool = False) -> dict:
    """Merge sources into one final file (later sources win per id and per file path).

    With ``virtual=True`` ``/embeddings`` is an HDF5 virtual dataset over the sources (paths
    stored relative to ``dest``); the caller must have verified every source first.
    """
    h5py = _h5()
    scan = _scan_sources(h5py, sources, chunk)
    n, by_src, failures = _plan_rows(scan)
    del scan.keys, scan.pidx
    dt = np.float16 if store_dtype == "float16" else np.float32
    from .modalities import MODULES  # names only: importing them needs no torch

    seen = {r.modality for r in scan.files.values() if r.modality} | set(modality_attrs) | set(scan.old_mod_attrs)
    modalities = list(MODULES) + sorted(seen - set(MODULES))  # a stable enum across files
    mod_index = {m: i for i, m in enumerate(modalities)}
    enum = h5py.enum_dtype(mod_index, basetype="u1")
    with h5py.File(dest, "w") as out_h5:
        out = _row_datasets(h5py, out_h5, sources, by_src, n, dim, dt, virtual, dest)
        window = max(1024, min(chunk, (32 << 20) // (dim * 4)))  # source rows read at a time
        for si, (rows, outs) in by_src.items():
            with h5py.File(sources[si], "r") as f:
                _copy_source(f, rows, outs, out, mod_index, window)
        out_h5.create_dataset("modality", data=out.mods, dtype=enum)
        out_h5.create_dataset("n_tokens", data=out.ntok)
        if scan.has_tokens:
            _copy_tokens(h5py, sources, by_src, out_h5, out.tok_len, dim)
        _write_records(out_h5, list(scan.files.values()), list(failures.values()))
        mg = out_h5.create_group("modalities")
        for name in sorted(seen):
            g = mg.create_group(name)
            for k, v in {**scan.old_mod_attrs.get(name, {}), **modality_attrs.get(name, {})}.items():
                g.attrs[k] = v
        for k, v in attrs.items():
            out_h5.attrs[k] = v
        out_h5.attrs["n_rows"] = n
        out_h5.attrs["n_failures"] = len(failures)
        out_h5.flush()
        os.fsync(out_h5.id.get_vfd_handle())
    return {"n_rows": n, "n_failures": len(failures), "n_files": len(scan.files)}
